/* Unit tests for auth_revoke: Keystone's revocation-event semantics. */
#include "auth_revoke.h"

#include <errno.h>

#include "auth.h"
#include "check.h"
#include "test_auth_util.h"

#define NOW 1767225600LL

int
main(void)
{
    struct auth_revoke *rl = NULL;
    struct auth_token t, child, other;
    char id[32];

    CHECK_INT(auth_init(), 0);
    CHECK_INT(auth_revoke_new(0, &rl), 0);
    test_make_token(&t, AUTH_SCOPE_PROJECT, "projA", "member", NOW);
    /* A token re-scoped from 't'. */
    test_make_token(&child, AUTH_SCOPE_PROJECT, "projB", "member", NOW + 10);
    strcpy(child.parent_audit_id, t.audit_id);
    test_make_token(&other, AUTH_SCOPE_PROJECT, "projB", "member", NOW);
    strcpy(other.user_id, "bob");

    CHECK_INT(auth_revoke_check(rl, &t), 0);

    /* Bad input. */
    CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_AUDIT_ID, "", NOW), -EINVAL);
    CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_AUDIT_ID, NULL, NOW), -EINVAL);
    CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_AUDIT_ID,
                              "aaaaaaaaaaaaaaaaaaaaaaa", NOW), -EINVAL);
    CHECK_INT(auth_revoke_add(rl, (enum auth_revoke_kind)9, "x", NOW), -EINVAL);

    /* Audit id: revokes the token and the one re-scoped from it. */
    CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_AUDIT_ID, t.audit_id, NOW + 5), 0);
    CHECK_INT(auth_revoke_check(rl, &t), -EKEYREVOKED);
    CHECK_INT(auth_revoke_check(rl, &child), -EKEYREVOKED);
    CHECK_INT(auth_revoke_check(rl, &other), 0);
    /* Revoking the child does not revoke the parent. */
    auth_revoke_clear(rl);
    CHECK_INT(auth_revoke_count(rl), 0);
    CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_AUDIT_ID, child.audit_id, NOW + 20), 0);
    CHECK_INT(auth_revoke_check(rl, &child), -EKEYREVOKED);
    CHECK_INT(auth_revoke_check(rl, &t), 0);
    auth_revoke_clear(rl);

    /* User: tokens issued at or before revoked_at are revoked, later ones
     * are not. */
    CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_USER, t.user_id, NOW), 0);
    CHECK_INT(auth_revoke_check(rl, &t), -EKEYREVOKED);        /* issued == */
    CHECK_INT(auth_revoke_check(rl, &child), 0);               /* issued after */
    CHECK_INT(auth_revoke_check(rl, &other), 0);               /* another user */
    /* A later event for the same user moves the time forward, never back. */
    CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_USER, t.user_id, NOW + 10), 0);
    CHECK_INT(auth_revoke_check(rl, &child), -EKEYREVOKED);
    CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_USER, t.user_id, NOW - 100), 0);
    CHECK_INT(auth_revoke_check(rl, &child), -EKEYREVOKED);
    CHECK_INT(auth_revoke_count(rl), 1);
    auth_revoke_clear(rl);

    /* Project. */
    CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_PROJECT, "projB", NOW + 5), 0);
    CHECK_INT(auth_revoke_check(rl, &t), 0);        /* project A */
    CHECK_INT(auth_revoke_check(rl, &other), -EKEYREVOKED);
    CHECK_INT(auth_revoke_check(rl, &child), 0);    /* issued after */
    /* Kinds do not mix: a user id equal to a revoked project id. */
    strcpy(t.user_id, "projB");
    CHECK_INT(auth_revoke_check(rl, &t), 0);

    /* Many entries (growth), then pruning by age. */
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "user-%d", i);
        CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_USER, id, NOW + i), 0);
    }
    CHECK_INT(auth_revoke_count(rl), 5001);
    strcpy(other.user_id, "user-4000");
    other.issued_at = NOW + 3999;
    CHECK_INT(auth_revoke_check(rl, &other), -EKEYREVOKED);
    /* user-0 .. user-2499 and projB (NOW + 5) go. */
    CHECK_INT(auth_revoke_prune(rl, NOW + 2500), 2501);
    CHECK_INT(auth_revoke_count(rl), 2500);
    CHECK_INT(auth_revoke_check(rl, &other), -EKEYREVOKED);
    strcpy(other.user_id, "user-10");
    other.issued_at = NOW;
    CHECK_INT(auth_revoke_check(rl, &other), 0);
    CHECK_INT(auth_revoke_prune(rl, NOW), 0);
    auth_revoke_free(rl);

    /* The size bound. */
    CHECK_INT(auth_revoke_new(2, &rl), 0);
    CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_USER, "a", NOW), 0);
    CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_USER, "b", NOW), 0);
    CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_USER, "c", NOW), -ENOSPC);
    CHECK_INT(auth_revoke_add(rl, AUTH_REVOKE_USER, "a", NOW + 1), 0);
    auth_revoke_free(rl);
    auth_revoke_free(NULL);
    return check_exit();
}
