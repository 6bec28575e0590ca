/* Unit tests for auth_password: hashing, verifying, limits, re-hashing. */
#include "auth_password.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "check.h"

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int
main(void)
{
    /* Small parameters keep the test fast; the defaults are tested once. */
    struct auth_password_params low = { .opslimit = 1, .memlimit = 8u << 20 };
    struct auth_password_params high = { .opslimit = 2, .memlimit = 16u << 20 };
    struct auth_password_params bad = { .opslimit = 1, .memlimit = 1 };
    struct auth_password *pw = NULL, *pw_high = NULL, *pw_def = NULL, *x;
    char hash[AUTH_PASSWORD_HASH_SIZE], hash2[AUTH_PASSWORD_HASH_SIZE];
    static char big[AUTH_PASSWORD_MAX + 2];

    CHECK_INT(auth_init(), 0);
    CHECK_INT(auth_password_new(&bad, &x), -EINVAL);
    CHECK(x == NULL);
    CHECK_INT(auth_password_new(&low, &pw), 0);
    CHECK_INT(auth_password_new(&high, &pw_high), 0);

    CHECK_INT(auth_password_hash(pw, "s3cret", 6, hash), 0);
    CHECK(!strncmp(hash, "$argon2id$v=19$m=8192,t=1,p=1$", 30));
    CHECK_INT(auth_password_verify(hash, "s3cret", 6), 0);
    CHECK_INT(auth_password_verify(hash, "s3creT", 6), -EACCES);
    CHECK_INT(auth_password_verify(hash, "s3cret", 5), -EACCES);
    CHECK_INT(auth_password_verify(hash, "s3cret!", 7), -EACCES);
    /* Two hashes of one password differ (random salt). */
    CHECK_INT(auth_password_hash(pw, "s3cret", 6, hash2), 0);
    CHECK(strcmp(hash, hash2) != 0);
    CHECK_INT(auth_password_verify(hash2, "s3cret", 6), 0);
    /* Binary bytes and an embedded NUL are part of the password. */
    CHECK_INT(auth_password_hash(pw, "a\0b", 3, hash2), 0);
    CHECK_INT(auth_password_verify(hash2, "a\0b", 3), 0);
    CHECK_INT(auth_password_verify(hash2, "a", 1), -EACCES);

    /* Limits. */
    CHECK_INT(auth_password_hash(pw, "", 0, hash2), -EINVAL);
    memset(big, 'x', sizeof big);
    CHECK_INT(auth_password_hash(pw, big, AUTH_PASSWORD_MAX, hash2), 0);
    CHECK_INT(auth_password_verify(hash2, big, AUTH_PASSWORD_MAX), 0);
    CHECK_INT(auth_password_hash(pw, big, AUTH_PASSWORD_MAX + 1, hash2),
              -EINVAL);
    CHECK_INT(auth_password_verify(hash, big, AUTH_PASSWORD_MAX + 1), -EINVAL);
    CHECK_INT(auth_password_verify(hash, "", 0), -EINVAL);
    CHECK_INT(auth_password_verify("$2b$12$notargon", "x", 1), -EINVAL);
    CHECK_INT(auth_password_verify("", "x", 1), -EINVAL);
    CHECK_INT(auth_password_verify(NULL, "x", 1), -EINVAL);
    CHECK_INT(auth_password_verify("$argon2id$v=19$garbage", "x", 1), -EACCES);

    /* The dummy always refuses, and checks lengths like verify does. */
    CHECK_INT(auth_password_verify_dummy(pw, "s3cret", 6), -EACCES);
    CHECK_INT(auth_password_verify_dummy(pw, "", 0), -EINVAL);

    /* Re-hash when the parameters rise, not when they match. */
    CHECK_INT(auth_password_needs_rehash(pw, hash), 0);
    CHECK_INT(auth_password_needs_rehash(pw_high, hash), 1);
    CHECK_INT(auth_password_needs_rehash(pw, "nonsense"), -EINVAL);
    /* An old hash still verifies after the parameters changed. */
    CHECK_INT(auth_password_hash(pw_high, "s3cret", 6, hash2), 0);
    CHECK_INT(auth_password_needs_rehash(pw_high, hash2), 0);
    CHECK_INT(auth_password_needs_rehash(pw, hash2), 1);
    CHECK_INT(auth_password_verify(hash2, "s3cret", 6), 0);

    /* Defaults (INTERACTIVE), timed: a missing user costs about what a
     * wrong password does. */
    double t0 = now_ms();
    CHECK_INT(auth_password_new(NULL, &pw_def), 0);
    double t1 = now_ms();
    CHECK_INT(auth_password_hash(pw_def, "correct horse", 13, hash), 0);
    double t2 = now_ms();
    CHECK(!strncmp(hash, "$argon2id$v=19$m=65536,t=2,p=1$", 31));
    CHECK_INT(auth_password_verify(hash, "wrong horse", 11), -EACCES);
    double t3 = now_ms();
    CHECK_INT(auth_password_verify_dummy(pw_def, "wrong horse", 11), -EACCES);
    double t4 = now_ms();
    fprintf(stderr, "default params: new %.1f ms, hash %.1f ms, wrong-password "
            "verify %.1f ms, dummy verify %.1f ms\n",
            t1 - t0, t2 - t1, t3 - t2, t4 - t3);
    CHECK(t4 - t3 > (t3 - t2) / 3);

    auth_password_free(pw);
    auth_password_free(pw_high);
    auth_password_free(pw_def);
    auth_password_free(NULL);
    return check_exit();
}
