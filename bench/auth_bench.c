/* Micro benchmark of the auth library: token signing and verification
 * (uncached and cached), revocation checks, policy checks and one password
 * hash with the default parameters.  Prints one line per measurement. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "auth_keys.h"
#include "auth_password.h"
#include "auth_policy.h"
#include "auth_revoke.h"
#include "auth_token.h"

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
report(const char *what, long n, double secs)
{
    printf("%-34s %10.0f /s  %8.2f us each\n", what, (double)n / secs,
           secs * 1e6 / (double)n);
}

int
main(void)
{
    char dir[] = "/tmp/nimbus-auth-bench-XXXXXX", keys[128], path[256];
    struct auth_keyset *ks = NULL;
    struct auth_token_cache *cache = NULL;
    struct auth_revoke *rl = NULL;
    struct auth_password *pw = NULL;
    struct auth_token t, out;
    static char tokens[1024][AUTH_TOKEN_STR_SIZE];
    char hash[AUTH_PASSWORD_HASH_SIZE];
    const long n = 20000;
    int64_t now = (int64_t)time(NULL);
    volatile int sink = 0;
    double t0;

    if (auth_init() || !mkdtemp(dir))
        return 1;
    snprintf(keys, sizeof keys, "%s/keys", dir);
    if (auth_keys_setup(keys) || auth_keys_load(keys, &ks)
        || auth_token_cache_new(4096, &cache) || auth_revoke_new(0, &rl))
        return 1;

    memset(&t, 0, sizeof t);
    strcpy(t.user_id, "5f3c1a0b9e2d4c7fa1b2c3d4e5f60718");
    strcpy(t.user_domain_id, "default");
    strcpy(t.user_name, "alice");
    t.scope = AUTH_SCOPE_PROJECT;
    strcpy(t.project_id, "8f2a6c1e0b9d4e7f8a1b2c3d4e5f6a7b");
    strcpy(t.project_domain_id, "default");
    t.n_roles = 2;
    strcpy(t.roles[0].id, "0a1b2c3d4e5f60718293a4b5c6d7e8f9");
    strcpy(t.roles[0].name, "member");
    strcpy(t.roles[1].id, "1b2c3d4e5f60718293a4b5c6d7e8f90a");
    strcpy(t.roles[1].name, "reader");
    t.methods = AUTH_METHOD_PASSWORD;
    t.issued_at = now;
    t.expires_at = now + 3600;

    t0 = now_s();
    for (long i = 0; i < n; i++) {
        auth_token_audit_id_new(t.audit_id);
        if (auth_token_encode(ks, &t, tokens[i % 1024], AUTH_TOKEN_STR_SIZE))
            return 1;
    }
    report("token sign", n, now_s() - t0);
    printf("token length: %zu characters\n", strlen(tokens[0]));

    t0 = now_s();
    for (long i = 0; i < n; i++)
        sink += auth_token_decode(ks, NULL, tokens[i % 1024],
                                  strlen(tokens[i % 1024]), now, &out);
    report("token verify (no cache)", n, now_s() - t0);

    /* Warm the cache with the 1024 tokens, then measure hits. */
    for (long i = 0; i < 1024; i++)
        sink += auth_token_decode(ks, cache, tokens[i], strlen(tokens[i]),
                                  now, &out);
    t0 = now_s();
    for (long i = 0; i < n * 10; i++)
        sink += auth_token_decode(ks, cache, tokens[i % 1024],
                                  strlen(tokens[i % 1024]), now, &out);
    report("token verify (cache hit)", n * 10, now_s() - t0);

    for (int i = 0; i < 10000; i++) {
        char id[32];
        snprintf(id, sizeof id, "user-%d", i);
        sink += auth_revoke_add(rl, AUTH_REVOKE_USER, id, now);
    }
    t0 = now_s();
    for (long i = 0; i < n * 10; i++)
        sink += auth_revoke_check(rl, &out);
    report("revocation check (10k entries)", n * 10, now_s() - t0);

    t0 = now_s();
    for (long i = 0; i < n * 10; i++)
        sink += auth_policy_check("network:delete_security_group_rule", &out,
                                  out.project_id, NULL);
    report("policy check (last table row)", n * 10, now_s() - t0);

    t0 = now_s();
    if (auth_password_new(NULL, &pw))
        return 1;
    report("password hasher set-up (defaults)", 1, now_s() - t0);
    t0 = now_s();
    for (int i = 0; i < 5; i++)
        sink += auth_password_hash(pw, "correct horse battery", 21, hash);
    report("password hash (defaults)", 5, now_s() - t0);
    t0 = now_s();
    for (int i = 0; i < 5; i++)
        sink += auth_password_verify(hash, "correct horse battery", 21);
    report("password verify (defaults)", 5, now_s() - t0);

    auth_password_free(pw);
    auth_revoke_free(rl);
    auth_token_cache_free(cache);
    auth_keyset_free(ks);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/0.%s", keys, i ? "pub" : "key");
        unlink(path);
    }
    rmdir(keys);
    rmdir(dir);
    return sink == INT_MIN;
}
