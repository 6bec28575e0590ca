/* The policy table and its checks (see auth_policy.h). */
#include "auth_policy.h"
#include "auth_token.h"

#include <errno.h>
#include <string.h>

struct policy_entry {
    const char *operation;
    enum auth_policy_rule rule;
};

#define ADMIN AUTH_RULE_ADMIN
#define MEMBER AUTH_RULE_PROJECT_MEMBER
#define READER AUTH_RULE_PROJECT_READER
#define ANYONE AUTH_RULE_AUTHENTICATED
#define OWNER AUTH_RULE_ADMIN_OR_OWNER

/* Grouped by service as in docs/policy.md. */
static const struct policy_entry policy_table[] = {
    /* Identity (Keystone v3). */
    { "identity:validate_token", OWNER },
    { "identity:revoke_token", OWNER },
    { "identity:list_domains", ADMIN },
    { "identity:get_domain", ADMIN },
    { "identity:create_domain", ADMIN },
    { "identity:update_domain", ADMIN },
    { "identity:delete_domain", ADMIN },
    { "identity:list_projects", ADMIN },
    { "identity:get_project", READER },
    { "identity:create_project", ADMIN },
    { "identity:update_project", ADMIN },
    { "identity:delete_project", ADMIN },
    { "identity:list_user_projects", OWNER },
    { "identity:list_users", ADMIN },
    { "identity:get_user", OWNER },
    { "identity:create_user", ADMIN },
    { "identity:update_user", ADMIN },
    { "identity:delete_user", ADMIN },
    { "identity:change_password", OWNER },
    { "identity:create_application_credential", OWNER },
    { "identity:list_application_credentials", OWNER },
    { "identity:get_application_credential", OWNER },
    { "identity:delete_application_credential", OWNER },
    { "identity:list_roles", ADMIN },
    { "identity:get_role", ADMIN },
    { "identity:create_role", ADMIN },
    { "identity:update_role", ADMIN },
    { "identity:delete_role", ADMIN },
    { "identity:add_role_assignment", ADMIN },
    { "identity:remove_role_assignment", ADMIN },
    { "identity:list_role_assignments", ADMIN },
    { "identity:create_grant", ADMIN },
    { "identity:revoke_grant", ADMIN },
    { "identity:check_grant", ADMIN },
    { "identity:list_grants", ADMIN },
    { "identity:list_services", ADMIN },
    { "identity:get_service", ADMIN },
    { "identity:create_service", ADMIN },
    { "identity:update_service", ADMIN },
    { "identity:delete_service", ADMIN },
    { "identity:list_endpoints", ADMIN },
    { "identity:get_endpoint", ADMIN },
    { "identity:create_endpoint", ADMIN },
    { "identity:update_endpoint", ADMIN },
    { "identity:delete_endpoint", ADMIN },
    { "identity:list_regions", ANYONE },
    { "identity:get_region", ANYONE },
    { "identity:create_region", ADMIN },
    { "identity:update_region", ADMIN },
    { "identity:delete_region", ADMIN },
    { "identity:get_auth_catalog", ANYONE },
    { "identity:get_auth_projects", ANYONE },
    { "identity:get_auth_domains", ANYONE },

    /* Compute (Nova). */
    { "compute:servers:create", MEMBER },
    { "compute:servers:list", READER },
    { "compute:servers:list:all_tenants", ADMIN },
    { "compute:servers:show", READER },
    { "compute:servers:update", MEMBER },
    { "compute:servers:delete", MEMBER },
    { "compute:servers:action", MEMBER },
    { "compute:flavors:create", ADMIN },
    { "compute:flavors:delete", ADMIN },
    { "compute:flavors:list", ANYONE },
    { "compute:flavors:show", ANYONE },
    { "compute:os-keypairs", OWNER },
    { "compute:limits", READER },
    { "compute:os-hypervisors", ADMIN },
    { "compute:os-services", ADMIN },
    { "compute:servers:action:admin", ADMIN },
    { "compute:flavors:manage", ADMIN },
    { "compute:os-server-groups", MEMBER },
    { "compute:os-server-groups:list", READER },
    { "compute:os-quota-sets:show", READER },
    { "compute:os-quota-sets:update", ADMIN },
    { "compute:os-availability-zone", ANYONE },
    { "compute:os-availability-zone:detail", ADMIN },
    { "compute:os-instance-actions", READER },

    /* Image (Glance v2). */
    { "image:create", MEMBER },
    { "image:list", READER },
    { "image:get", READER },
    { "image:update", MEMBER },
    { "image:upload", MEMBER },
    { "image:download", READER },
    { "image:delete", MEMBER },
    { "image:publicize", ADMIN },

    /* Network (Neutron). */
    { "network:create_network", MEMBER },
    { "network:create_network:shared", ADMIN },
    { "network:create_network:external", ADMIN },
    { "network:provider_attrs", ADMIN },
    { "network:list_networks", READER },
    { "network:get_network", READER },
    { "network:update_network", MEMBER },
    { "network:delete_network", MEMBER },
    { "network:create_subnet", MEMBER },
    { "network:list_subnets", READER },
    { "network:get_subnet", READER },
    { "network:update_subnet", MEMBER },
    { "network:delete_subnet", MEMBER },
    { "network:create_port", MEMBER },
    { "network:list_ports", READER },
    { "network:get_port", READER },
    { "network:update_port", MEMBER },
    { "network:delete_port", MEMBER },
    { "network:port_binding_attrs", ADMIN },
    { "network:create_security_group", MEMBER },
    { "network:list_security_groups", READER },
    { "network:get_security_group", READER },
    { "network:delete_security_group", MEMBER },
    { "network:create_security_group_rule", MEMBER },
    { "network:delete_security_group_rule", MEMBER },
    { "network:get_quota", READER },
    { "network:update_quota", ADMIN },
    { "network:delete_quota", ADMIN },
    { "network:list_quotas", ADMIN },
    { "network:update_security_group", MEMBER },
    { "network:get_security_group_rule", READER },
    { "network:list_security_group_rules", READER },
};

#undef ADMIN
#undef MEMBER
#undef READER
#undef ANYONE
#undef OWNER

/* The role names and what each implies: holding a role at index i grants
 * every role at index >= i. */
static const char *const policy_roles[] = { "admin", "member", "reader" };

static int
policy_role_rank(const char *name)
{
    for (size_t i = 0; i < sizeof policy_roles / sizeof policy_roles[0]; i++)
        if (!strcmp(name, policy_roles[i]))
            return (int)i;
    return -1;
}

bool
auth_policy_has_role(const struct auth_token *tok, const char *role)
{
    int want = policy_role_rank(role);

    for (unsigned i = 0; i < tok->n_roles && i < AUTH_TOKEN_MAX_ROLES; i++) {
        int have = policy_role_rank(tok->roles[i].name);
        if (want >= 0 ? (have >= 0 && have <= want)
                      : !strcmp(tok->roles[i].name, role))
            return true;
    }
    return false;
}

bool
auth_policy_is_admin(const struct auth_token *tok)
{
    return tok->scope != AUTH_SCOPE_UNSCOPED
           && auth_policy_has_role(tok, "admin");
}

static bool
policy_project_ok(const struct auth_token *tok, const char *target)
{
    return tok->scope == AUTH_SCOPE_PROJECT
           && (!target || !strcmp(target, tok->project_id));
}

int
auth_policy_check(const char *operation, const struct auth_token *tok,
                  const char *target_project_id, const char *target_user_id)
{
    const struct policy_entry *e = NULL;

    for (size_t i = 0; i < sizeof policy_table / sizeof policy_table[0]; i++)
        if (!strcmp(policy_table[i].operation, operation)) {
            e = &policy_table[i];
            break;
        }
    if (!e)
        return -ENOENT;
    if (auth_policy_is_admin(tok))
        return 0;
    switch (e->rule) {
    case AUTH_RULE_ADMIN:
        return -EACCES;
    case AUTH_RULE_PROJECT_MEMBER:
        return policy_project_ok(tok, target_project_id)
               && auth_policy_has_role(tok, "member") ? 0 : -EACCES;
    case AUTH_RULE_PROJECT_READER:
        return policy_project_ok(tok, target_project_id)
               && auth_policy_has_role(tok, "reader") ? 0 : -EACCES;
    case AUTH_RULE_AUTHENTICATED:
        return 0;
    case AUTH_RULE_ADMIN_OR_OWNER:
        return target_user_id && !strcmp(target_user_id, tok->user_id)
               ? 0 : -EACCES;
    }
    return -EACCES;
}

size_t
auth_policy_count(void)
{
    return sizeof policy_table / sizeof policy_table[0];
}

int
auth_policy_entry(size_t i, const char **operation,
                  enum auth_policy_rule *rule)
{
    if (i >= auth_policy_count())
        return -ENOENT;
    *operation = policy_table[i].operation;
    *rule = policy_table[i].rule;
    return 0;
}

const char *
auth_policy_rule_name(enum auth_policy_rule rule)
{
    switch (rule) {
    case AUTH_RULE_ADMIN:
        return "admin";
    case AUTH_RULE_PROJECT_MEMBER:
        return "project_member";
    case AUTH_RULE_PROJECT_READER:
        return "project_reader";
    case AUTH_RULE_AUTHENTICATED:
        return "authenticated";
    case AUTH_RULE_ADMIN_OR_OWNER:
        return "admin_or_owner";
    }
    return "unknown";
}
