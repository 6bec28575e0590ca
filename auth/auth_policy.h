/* Authorisation: which token may perform which API operation.
 *
 * Three roles, each implying the next: admin > member > reader.  As in
 * OpenStack's legacy policies, the admin role is cloud-wide: a token scoped
 * to ANY project or domain on which the user holds "admin" is a cloud
 * administrator and passes every rule.  (Keystone's newer system scope is
 * not modelled.)  Role names are matched exactly, lower case.
 *
 * Every operation has one rule; docs/policy.md lists the whole table and a
 * unit test keeps it in step with auth_policy.c.
 *
 * The target project: the API passes the project that owns the resource
 * acted on.  It passes NULL when no other project is involved: listing or
 * creating in the token's own project, or a resource visible to every
 * project (a public image, a shared network), whose visibility the API
 * checks itself.  With NULL, project rules need only the role on the token's
 * own project.
 *
 * All functions are thread-safe (the table is constant). */
#ifndef NIMBUS_AUTH_POLICY_H
#define NIMBUS_AUTH_POLICY_H

#include <stdbool.h>
#include <stddef.h>

struct auth_token;

enum auth_policy_rule {
    /* The admin role. */
    AUTH_RULE_ADMIN,
    /* Admin, or member on a project-scoped token for the target project. */
    AUTH_RULE_PROJECT_MEMBER,
    /* Admin, or reader (or member) on a project-scoped token for the target
     * project. */
    AUTH_RULE_PROJECT_READER,
    /* Any valid token, whatever its scope. */
    AUTH_RULE_AUTHENTICATED,
    /* Admin, or the token's user is the target user (a user reading or
     * changing themselves). */
    AUTH_RULE_ADMIN_OR_OWNER,
};

/* Decides whether 'tok' may perform 'operation' (for example
 * "compute:servers:create") on a resource owned by 'target_project_id' and
 * concerning 'target_user_id' (either may be NULL; see above).  Returns 0
 * when allowed, -EACCES when forbidden (403), -ENOENT for an operation not
 * in the table (a programming error: deny). */
int auth_policy_check(const char *operation, const struct auth_token *tok,
                      const char *target_project_id,
                      const char *target_user_id)
    __attribute__((warn_unused_result));

/* True when 'tok' carries the admin role on its scope, that is, is a cloud
 * administrator (for admin-only fields such as OS-EXT-SRV-ATTR:host or
 * provider:network_type). */
bool auth_policy_is_admin(const struct auth_token *tok);

/* True when 'tok' holds 'role' or a role implying it on its scope. */
bool auth_policy_has_role(const struct auth_token *tok, const char *role);

/* The rule table, for documentation and tests: the number of operations,
 * and the i-th one's name and rule (0 <= i < count; names are static). */
size_t auth_policy_count(void);
int auth_policy_entry(size_t i, const char **operation,
                      enum auth_policy_rule *rule)
    __attribute__((warn_unused_result));

/* The rule's name as written in docs/policy.md ("admin",
 * "project_member", ...); static string. */
const char *auth_policy_rule_name(enum auth_policy_rule rule);

#endif
