/* Unit tests for auth_policy: the role matrix, owners, scopes, and that
 * docs/policy.md (argv[1]) lists exactly the rule table.  With --markdown,
 * prints the table rows for docs/policy.md instead. */
#include "auth_policy.h"

#include <errno.h>
#include <stdlib.h>

#include "auth.h"
#include "auth_token.h"
#include "check.h"
#include "test_auth_util.h"

#define NOW 1767225600LL
#define PROJ_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define PROJ_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static void
print_markdown(void)
{
    for (size_t i = 0; i < auth_policy_count(); i++) {
        const char *op;
        enum auth_policy_rule rule;
        if (auth_policy_entry(i, &op, &rule) == 0)
            printf("| `%s` | %s |\n", op, auth_policy_rule_name(rule));
    }
}

static void
test_matrix(void)
{
    struct auth_token member_a, reader_a, admin_b, dom_member, dom_admin;
    struct auth_token unscoped, plain_a;

    test_make_token(&member_a, AUTH_SCOPE_PROJECT, PROJ_A, "member", NOW);
    test_make_token(&reader_a, AUTH_SCOPE_PROJECT, PROJ_A, "reader", NOW);
    test_make_token(&admin_b, AUTH_SCOPE_PROJECT, PROJ_B, "admin", NOW);
    test_make_token(&dom_member, AUTH_SCOPE_DOMAIN, NULL, "member", NOW);
    test_make_token(&dom_admin, AUTH_SCOPE_DOMAIN, NULL, "admin", NOW);
    test_make_token(&unscoped, AUTH_SCOPE_UNSCOPED, NULL, NULL, NOW);
    /* A project token with a role the policy does not know. */
    test_make_token(&plain_a, AUTH_SCOPE_PROJECT, PROJ_A, "observer", NOW);

    /* Member of A: allowed on A's resources, refused on B's. */
    CHECK_INT(auth_policy_check("compute:servers:create", &member_a, PROJ_A, NULL), 0);
    CHECK_INT(auth_policy_check("compute:servers:create", &member_a, NULL, NULL), 0);
    CHECK_INT(auth_policy_check("compute:servers:delete", &member_a, PROJ_A, NULL), 0);
    CHECK_INT(auth_policy_check("compute:servers:delete", &member_a, PROJ_B, NULL), -EACCES);
    CHECK_INT(auth_policy_check("compute:servers:show", &member_a, PROJ_B, NULL), -EACCES);
    CHECK_INT(auth_policy_check("compute:servers:show", &member_a, PROJ_A, NULL), 0);
    CHECK_INT(auth_policy_check("network:create_network", &member_a, PROJ_A, NULL), 0);
    CHECK_INT(auth_policy_check("image:delete", &member_a, PROJ_B, NULL), -EACCES);

    /* Reader: reads, does not write. */
    CHECK_INT(auth_policy_check("compute:servers:show", &reader_a, PROJ_A, NULL), 0);
    CHECK_INT(auth_policy_check("compute:servers:list", &reader_a, NULL, NULL), 0);
    CHECK_INT(auth_policy_check("network:get_network", &reader_a, PROJ_A, NULL), 0);
    CHECK_INT(auth_policy_check("compute:servers:create", &reader_a, PROJ_A, NULL), -EACCES);
    CHECK_INT(auth_policy_check("compute:servers:delete", &reader_a, PROJ_A, NULL), -EACCES);
    CHECK_INT(auth_policy_check("image:create", &reader_a, NULL, NULL), -EACCES);
    CHECK_INT(auth_policy_check("compute:servers:show", &reader_a, PROJ_B, NULL), -EACCES);

    /* An unknown role grants nothing project-wise. */
    CHECK_INT(auth_policy_check("compute:servers:show", &plain_a, PROJ_A, NULL), -EACCES);
    CHECK_INT(auth_policy_check("compute:flavors:list", &plain_a, NULL, NULL), 0);
    CHECK(auth_policy_has_role(&plain_a, "observer"));
    CHECK(!auth_policy_has_role(&plain_a, "reader"));

    /* Admin-only operations are refused to members. */
    CHECK_INT(auth_policy_check("compute:flavors:create", &member_a, NULL, NULL), -EACCES);
    CHECK_INT(auth_policy_check("identity:create_project", &member_a, NULL, NULL), -EACCES);
    CHECK_INT(auth_policy_check("network:create_network:shared", &member_a, PROJ_A, NULL),
              -EACCES);
    CHECK_INT(auth_policy_check("compute:os-hypervisors", &member_a, NULL, NULL), -EACCES);
    CHECK_INT(auth_policy_check("image:publicize", &member_a, PROJ_A, NULL), -EACCES);

    /* Admin (on any project, or a domain) passes everywhere. */
    for (size_t i = 0; i < auth_policy_count(); i++) {
        const char *op;
        enum auth_policy_rule rule;
        CHECK_INT(auth_policy_entry(i, &op, &rule), 0);
        CHECK_INT(auth_policy_check(op, &admin_b, PROJ_A, "someone-else"), 0);
        CHECK_INT(auth_policy_check(op, &admin_b, NULL, NULL), 0);
        CHECK_INT(auth_policy_check(op, &dom_admin, PROJ_A, NULL), 0);
        /* The unscoped token carries no roles: only "authenticated" rules. */
        CHECK_INT(auth_policy_check(op, &unscoped, PROJ_A, NULL),
                  rule == AUTH_RULE_AUTHENTICATED ? 0 : -EACCES);
    }
    CHECK(auth_policy_is_admin(&admin_b));
    CHECK(auth_policy_is_admin(&dom_admin));
    CHECK(!auth_policy_is_admin(&member_a));
    CHECK(!auth_policy_is_admin(&unscoped));

    /* Role implication: admin > member > reader. */
    CHECK(auth_policy_has_role(&admin_b, "member"));
    CHECK(auth_policy_has_role(&admin_b, "reader"));
    CHECK(auth_policy_has_role(&member_a, "reader"));
    CHECK(!auth_policy_has_role(&member_a, "admin"));
    CHECK(!auth_policy_has_role(&reader_a, "member"));

    /* Domain-scoped member: no project access. */
    CHECK_INT(auth_policy_check("compute:servers:list", &dom_member, NULL, NULL), -EACCES);
    CHECK_INT(auth_policy_check("compute:servers:show", &dom_member, PROJ_A, NULL), -EACCES);

    /* Owner rules: a user may read themselves, not others. */
    CHECK_INT(auth_policy_check("identity:get_user", &member_a, NULL, member_a.user_id), 0);
    CHECK_INT(auth_policy_check("identity:change_password", &reader_a, NULL,
                                reader_a.user_id), 0);
    CHECK_INT(auth_policy_check("identity:get_user", &member_a, NULL, "other"), -EACCES);
    CHECK_INT(auth_policy_check("identity:get_user", &member_a, NULL, NULL), -EACCES);
    CHECK_INT(auth_policy_check("identity:list_users", &member_a, NULL, NULL), -EACCES);
    CHECK_INT(auth_policy_check("identity:update_user", &member_a, NULL,
                                member_a.user_id), -EACCES);

    /* Unknown operation: denied for everyone, as a programming error. */
    CHECK_INT(auth_policy_check("compute:servers:levitate", &admin_b, NULL, NULL), -ENOENT);
    CHECK_INT(auth_policy_check("", &member_a, NULL, NULL), -ENOENT);
}

static void
test_table(void)
{
    size_t n = auth_policy_count();
    const char *op, *op2;
    enum auth_policy_rule rule;

    CHECK(n > 50);
    CHECK_INT(auth_policy_entry(n, &op, &rule), -ENOENT);
    for (size_t i = 0; i < n; i++) {
        CHECK_INT(auth_policy_entry(i, &op, &rule), 0);
        CHECK(strcmp(auth_policy_rule_name(rule), "unknown") != 0);
        for (size_t j = i + 1; j < n; j++) {
            CHECK_INT(auth_policy_entry(j, &op2, &rule), 0);
            if (!strcmp(op, op2))
                fprintf(stderr, "duplicate operation %s\n", op);
            CHECK(strcmp(op, op2) != 0);
        }
    }
}

/* Every table row appears in the document with its rule, and every
 * operation row of the document is in the table. */
static void
test_doc(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    size_t n = auth_policy_count(), rows = 0;
    bool *seen = calloc(n, sizeof *seen);

    CHECK(f != NULL);
    CHECK(seen != NULL);
    if (!f || !seen) {
        free(seen);
        if (f)
            fclose(f);
        return;
    }
    while (fgets(line, sizeof line, f)) {
        char op[128], rule_name[64];
        bool found = false;
        if (sscanf(line, "| `%127[^`]` | %63[a-z_] |", op, rule_name) != 2)
            continue;
        rows++;
        for (size_t i = 0; i < n; i++) {
            const char *top;
            enum auth_policy_rule rule;
            if (auth_policy_entry(i, &top, &rule) || strcmp(top, op))
                continue;
            found = true;
            if (strcmp(auth_policy_rule_name(rule), rule_name))
                fprintf(stderr, "%s: %s documented as %s, table says %s\n",
                        path, op, rule_name, auth_policy_rule_name(rule));
            CHECK_STR(rule_name, auth_policy_rule_name(rule));
            CHECK(!seen[i]);
            seen[i] = true;
        }
        if (!found)
            fprintf(stderr, "%s: %s is not in the table\n", path, op);
        CHECK(found);
    }
    for (size_t i = 0; i < n; i++) {
        const char *op;
        enum auth_policy_rule rule;
        if (!seen[i] && auth_policy_entry(i, &op, &rule) == 0)
            fprintf(stderr, "%s: %s is missing\n", path, op);
        CHECK(seen[i]);
    }
    CHECK_INT(rows, n);
    free(seen);
    fclose(f);
}

int
main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--markdown")) {
        print_markdown();
        return 0;
    }
    CHECK_INT(auth_init(), 0);
    test_matrix();
    test_table();
    CHECK(argc > 1);
    if (argc > 1)
        test_doc(argv[1]);
    return check_exit();
}
