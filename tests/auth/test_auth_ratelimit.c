/* Unit tests for auth_ratelimit: windows per user and per address,
 * success, eviction under pressure. */
#include "auth_ratelimit.h"

#include <errno.h>
#include <stdio.h>

#include "auth.h"
#include "check.h"

int
main(void)
{
    struct auth_ratelimit *rl = NULL;
    struct auth_ratelimit_config cfg = { .slots = 1u << 25 };
    int64_t t = 1000, wait = -1;
    char name[32];

    CHECK_INT(auth_init(), 0);
    CHECK_INT(auth_ratelimit_new(&cfg, &rl), -EINVAL);
    CHECK_INT(auth_ratelimit_new(NULL, &rl), 0);

    /* Per user: 5 failures within 60 s, then refused until the window
     * (opened by the first failure) closes. */
    for (int i = 0; i < 5; i++) {
        CHECK_INT(auth_ratelimit_check(rl, "default/alice", "10.0.0.1", t + i, &wait), 0);
        CHECK_INT(wait, 0);
        auth_ratelimit_failure(rl, "default/alice", "10.0.0.1", t + i);
    }
    CHECK_INT(auth_ratelimit_check(rl, "default/alice", "10.0.0.2", t + 5, &wait),
              -EAGAIN);
    CHECK_INT(wait, 55);
    CHECK_INT(auth_ratelimit_check(rl, "default/alice", NULL, t + 59, NULL), -EAGAIN);
    CHECK_INT(auth_ratelimit_check(rl, "default/alice", NULL, t + 60, &wait), 0);
    /* Another user from the same address is fine (5 < 20). */
    CHECK_INT(auth_ratelimit_check(rl, "default/bob", "10.0.0.1", t + 5, NULL), 0);
    /* After the window, the count starts again. */
    auth_ratelimit_failure(rl, "default/alice", NULL, t + 60);
    CHECK_INT(auth_ratelimit_check(rl, "default/alice", NULL, t + 61, NULL), 0);

    /* Success forgets the user's failures. */
    for (int i = 0; i < 5; i++)
        auth_ratelimit_failure(rl, "default/carol", NULL, t);
    CHECK_INT(auth_ratelimit_check(rl, "default/carol", NULL, t + 1, NULL), -EAGAIN);
    auth_ratelimit_success(rl, "default/carol");
    CHECK_INT(auth_ratelimit_check(rl, "default/carol", NULL, t + 1, NULL), 0);
    auth_ratelimit_success(rl, NULL);

    /* Per address: 20 failures over many user names, then the address is
     * refused whatever the user, and the user counts stay low. */
    t = 5000;
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "default/u%d", i);
        CHECK_INT(auth_ratelimit_check(rl, name, "192.0.2.7", t, NULL), 0);
        auth_ratelimit_failure(rl, name, "192.0.2.7", t);
    }
    CHECK_INT(auth_ratelimit_check(rl, "default/new", "192.0.2.7", t + 1, &wait),
              -EAGAIN);
    CHECK_INT(wait, 59);
    CHECK_INT(auth_ratelimit_check(rl, "default/new", "192.0.2.8", t + 1, NULL), 0);
    /* A user key and an address key with the same text are distinct. */
    CHECK_INT(auth_ratelimit_check(rl, "192.0.2.7", NULL, t + 1, NULL), 0);
    CHECK_INT(auth_ratelimit_check(rl, NULL, "192.0.2.7", t + 60, NULL), 0);
    auth_ratelimit_free(rl);

    /* Configured limits and a tiny table: memory stays bounded, and a flood
     * of other keys evicts rather than fails. */
    cfg = (struct auth_ratelimit_config){ .user_limit = 2, .addr_limit = 3,
                                          .window_seconds = 10, .slots = 16 };
    CHECK_INT(auth_ratelimit_new(&cfg, &rl), 0);
    auth_ratelimit_failure(rl, "u", NULL, 0);
    CHECK_INT(auth_ratelimit_check(rl, "u", NULL, 1, NULL), 0);
    auth_ratelimit_failure(rl, "u", NULL, 1);
    CHECK_INT(auth_ratelimit_check(rl, "u", NULL, 2, &wait), -EAGAIN);
    CHECK_INT(wait, 8);
    CHECK_INT(auth_ratelimit_check(rl, "u", NULL, 10, NULL), 0);
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "flood%d", i);
        auth_ratelimit_failure(rl, name, name, 20);
    }
    auth_ratelimit_failure(rl, NULL, "a", 30);
    auth_ratelimit_failure(rl, NULL, "a", 30);
    auth_ratelimit_failure(rl, NULL, "a", 30);
    CHECK_INT(auth_ratelimit_check(rl, NULL, "a", 31, NULL), -EAGAIN);
    auth_ratelimit_free(rl);
    auth_ratelimit_free(NULL);
    return check_exit();
}
