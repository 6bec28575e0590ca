/* Unit tests for auth_token: round trips for every scope, tampering,
 * unknown keys, expiry, malformed input, rotation and the verified-token
 * cache. */
#include "auth_token.h"

#include <errno.h>
#include <stdint.h>

#include "auth.h"
#include "auth_internal.h"
#include "auth_keys.h"
#include "check.h"
#include "test_auth_util.h"

#define NOW 1767225600LL /* 2026-01-01T00:00:00Z */

static bool
token_equal(const struct auth_token *a, const struct auth_token *b)
{
    if (strcmp(a->user_id, b->user_id) || strcmp(a->user_domain_id, b->user_domain_id)
        || strcmp(a->user_name, b->user_name) || a->scope != b->scope
        || strcmp(a->project_id, b->project_id)
        || strcmp(a->project_domain_id, b->project_domain_id)
        || strcmp(a->domain_id, b->domain_id) || a->n_roles != b->n_roles
        || a->methods != b->methods || a->issued_at != b->issued_at
        || a->expires_at != b->expires_at || strcmp(a->audit_id, b->audit_id)
        || strcmp(a->parent_audit_id, b->parent_audit_id))
        return false;
    for (unsigned i = 0; i < a->n_roles; i++)
        if (strcmp(a->roles[i].id, b->roles[i].id)
            || strcmp(a->roles[i].name, b->roles[i].name))
            return false;
    return true;
}

static void
check_round_trip(const struct auth_keyset *ks, const struct auth_token *t)
{
    char s[AUTH_TOKEN_STR_SIZE];
    struct auth_token out;

    CHECK_INT(auth_token_encode(ks, t, s, sizeof s), 0);
    CHECK_INT(auth_token_decode(ks, NULL, s, strlen(s), NOW, &out), 0);
    CHECK(token_equal(t, &out));
    fprintf(stderr, "scope %d, %u role(s): %zu characters\n", (int)t->scope,
            t->n_roles, strlen(s));
}

static void
test_round_trips(const struct auth_keyset *ks)
{
    struct auth_token t;

    /* Project scope, hex ids, text domain, a parent audit id, 3 roles. */
    test_make_token(&t, AUTH_SCOPE_PROJECT, "8f2a6c1e0b9d4e7f8a1b2c3d4e5f6a7b",
                    "admin", NOW);
    t.n_roles = 3;
    strcpy(t.roles[1].id, "1b2c3d4e5f60718293a4b5c6d7e8f90a");
    strcpy(t.roles[1].name, "member");
    strcpy(t.roles[2].id, "2c3d4e5f60718293a4b5c6d7e8f90a1b");
    strcpy(t.roles[2].name, "reader");
    t.methods = AUTH_METHOD_PASSWORD | AUTH_METHOD_TOKEN;
    auth_token_audit_id_new(t.parent_audit_id);
    CHECK_INT(strlen(t.audit_id), AUTH_AUDIT_ID_LEN);
    CHECK(strcmp(t.audit_id, t.parent_audit_id) != 0);
    check_round_trip(ks, &t);

    /* Project scope with UUID ids, upper-case hex kept as text, no name. */
    test_make_token(&t, AUTH_SCOPE_PROJECT, "123e4567-e89b-42d3-a456-426614174000",
                    "member", NOW);
    strcpy(t.user_id, "5F3C1A0B9E2D4C7FA1B2C3D4E5F60718");
    t.user_name[0] = '\0';
    strcpy(t.project_domain_id, "9e2d4c7fa1b2c3d4e5f607185f3c1a0b");
    strcpy(t.roles[0].id, "a-role-id-that-is-not-hex");
    check_round_trip(ks, &t);

    /* Domain scope. */
    test_make_token(&t, AUTH_SCOPE_DOMAIN, NULL, "admin", NOW);
    t.methods = AUTH_METHOD_APPLICATION_CREDENTIAL;
    check_round_trip(ks, &t);

    /* Unscoped. */
    test_make_token(&t, AUTH_SCOPE_UNSCOPED, NULL, NULL, NOW);
    check_round_trip(ks, &t);

    /* The largest ids and names, and a user name with UTF-8. */
    test_make_token(&t, AUTH_SCOPE_PROJECT, "p", "r", NOW);
    memset(t.user_id, 'u', AUTH_ID_MAX);
    t.user_id[AUTH_ID_MAX] = '\0';
    strcpy(t.user_name, "J\xc3\xbcrgen M\xc3\xbcller");
    t.n_roles = 4;
    for (unsigned i = 0; i < t.n_roles; i++) {
        snprintf(t.roles[i].id, sizeof t.roles[i].id, "role-%u", i);
        memset(t.roles[i].name, 'n', 200);
        t.roles[i].name[200] = '\0';
    }
    check_round_trip(ks, &t);
}

static void
test_encode_errors(const struct auth_keyset *ks, const struct auth_keyset *pub)
{
    struct auth_token t;
    char s[AUTH_TOKEN_STR_SIZE];

    test_make_token(&t, AUTH_SCOPE_PROJECT, "p1", "member", NOW);
    CHECK_INT(auth_token_encode(pub, &t, s, sizeof s), -ENOKEY);
    CHECK_INT(auth_token_encode(ks, &t, s, 100), -ENOSPC);

    struct auth_token bad = t;
    bad.user_id[0] = '\0';
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -EINVAL);
    bad = t;
    strcpy(bad.user_id, "has space");
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -EINVAL);
    bad = t;
    bad.project_id[0] = '\0';
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -EINVAL);
    bad = t;
    strcpy(bad.domain_id, "default");
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -EINVAL);
    bad = t;
    bad.scope = AUTH_SCOPE_UNSCOPED;
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -EINVAL);
    bad = t;
    bad.scope = (enum auth_scope)7;
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -EINVAL);
    bad = t;
    bad.methods = 0;
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -EINVAL);
    bad.methods = 8;
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -EINVAL);
    bad = t;
    bad.expires_at = bad.issued_at;
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -EINVAL);
    bad = t;
    strcpy(bad.audit_id, "short");
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -EINVAL);
    bad = t;
    strcpy(bad.parent_audit_id, "!!!!!!!!!!!!!!!!!!!!!!");
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -EINVAL);
    bad = t;
    strcpy(bad.roles[0].name, "tab\there");
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -EINVAL);
    bad = t;
    bad.n_roles = AUTH_TOKEN_MAX_ROLES + 1;
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -EINVAL);
    /* Valid but too large for AUTH_TOKEN_STR_MAX. */
    bad = t;
    bad.n_roles = AUTH_TOKEN_MAX_ROLES;
    for (unsigned i = 0; i < bad.n_roles; i++) {
        snprintf(bad.roles[i].id, sizeof bad.roles[i].id, "r%u", i);
        memset(bad.roles[i].name, 'n', AUTH_NAME_MAX);
        bad.roles[i].name[AUTH_NAME_MAX] = '\0';
    }
    CHECK_INT(auth_token_encode(ks, &bad, s, sizeof s), -E2BIG);
}

static void
test_tampering(const struct auth_keyset *ks, const struct auth_keyset *other)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    struct auth_token t, out;
    char s[AUTH_TOKEN_STR_SIZE], m[AUTH_TOKEN_STR_SIZE];
    size_t len;
    int accepted = 0;

    test_make_token(&t, AUTH_SCOPE_PROJECT, "8f2a6c1e0b9d4e7f8a1b2c3d4e5f6a7b",
                    "member", NOW);
    CHECK_INT(auth_token_encode(ks, &t, s, sizeof s), 0);
    len = strlen(s);

    /* Every position, three substitutions each (including ones that only
     * change the last character's unused bits), and an invalid character. */
    for (size_t i = 0; i < len; i++) {
        const char *pos = strchr(alphabet, s[i]);
        size_t k = pos ? (size_t)(pos - alphabet) : 0;
        for (size_t d = 1; d <= 3; d++) {
            memcpy(m, s, len + 1);
            m[i] = alphabet[(k + d) % 64];
            int r = auth_token_decode(ks, NULL, m, len, NOW, &out);
            if (r == 0)
                accepted++;
            CHECK(r == -EINVAL || r == -EKEYREJECTED);
        }
        memcpy(m, s, len + 1);
        m[i] = '=';
        CHECK_INT(auth_token_decode(ks, NULL, m, len, NOW, &out), -EINVAL);
    }
    CHECK_INT(accepted, 0);

    /* Truncated and extended. */
    for (size_t n = 0; n < len; n++)
        CHECK(auth_token_decode(ks, NULL, s, n, NOW, &out) < 0);
    memcpy(m, s, len);
    memcpy(m + len, "AAAA", 5);
    CHECK(auth_token_decode(ks, NULL, m, len + 4, NOW, &out) < 0);

    /* Signed by a key the verifier does not have. */
    CHECK_INT(auth_token_encode(other, &t, m, sizeof m), 0);
    CHECK_INT(auth_token_decode(ks, NULL, m, strlen(m), NOW, &out),
              -EKEYREJECTED);
    CHECK_INT(auth_token_decode(other, NULL, m, strlen(m), NOW, &out), 0);
}

static void
test_expiry_and_garbage(const struct auth_keyset *ks)
{
    struct auth_token t, out;
    char s[AUTH_TOKEN_STR_SIZE];
    static char big[AUTH_TOKEN_STR_MAX + 2];

    test_make_token(&t, AUTH_SCOPE_PROJECT, "p1", "reader", NOW);
    CHECK_INT(auth_token_encode(ks, &t, s, sizeof s), 0);
    CHECK_INT(auth_token_decode(ks, NULL, s, strlen(s), t.expires_at - 1, &out), 0);
    CHECK_INT(auth_token_decode(ks, NULL, s, strlen(s), t.expires_at, &out),
              -EKEYEXPIRED);
    CHECK_INT(auth_token_decode(ks, NULL, s, strlen(s), t.expires_at + 86400, &out),
              -EKEYEXPIRED);

    memset(big, 'A', sizeof big - 1);
    CHECK_INT(auth_token_decode(ks, NULL, big, AUTH_TOKEN_STR_MAX + 1, NOW, &out),
              -EINVAL);
    CHECK_INT(auth_token_decode(ks, NULL, big, AUTH_TOKEN_STR_MAX, NOW, &out),
              -EINVAL);
    CHECK_INT(auth_token_decode(ks, NULL, "", 0, NOW, &out), -EINVAL);
    CHECK_INT(auth_token_decode(ks, NULL, NULL, 0, NOW, &out), -EINVAL);
    CHECK_INT(auth_token_decode(ks, NULL, "gAAAAABk", 8, NOW, &out), -EINVAL);
    CHECK_INT(auth_token_decode(ks, NULL, "a b", 3, NOW, &out), -EINVAL);
    CHECK_INT(auth_token_decode(ks, NULL, "abc\0def", 7, NOW, &out), -EINVAL);
    CHECK_INT(auth_token_decode(ks, NULL, "abcd+/==", 8, NOW, &out), -EINVAL);
    /* Version byte 1 with a key id nobody has: 'AQ' starts with 0x01. */
    memset(big, 'A', 200);
    big[0] = 'A';
    big[1] = 'Q';
    CHECK_INT(auth_token_decode(ks, NULL, big, 200, NOW, &out), -EKEYREJECTED);
    big[1] = 'g';
    CHECK_INT(auth_token_decode(ks, NULL, big, 200, NOW, &out), -EINVAL);
}

/* The payload parser is strict: every truncation and any trailing byte is
 * refused. */
static void
test_strict_parse(void)
{
    struct auth_token t, out;
    uint8_t buf[2048], kid[AUTH_KEY_ID_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    size_t len;

    test_make_token(&t, AUTH_SCOPE_PROJECT, "8f2a6c1e0b9d4e7f8a1b2c3d4e5f6a7b",
                    "member", NOW);
    auth_token_audit_id_new(t.parent_audit_id);
    CHECK_INT(auth_token_payload_encode(&t, kid, buf, sizeof buf, &len), 0);
    CHECK_INT(auth_token_payload_parse(buf, len, &out), 0);
    CHECK(token_equal(&t, &out));
    for (size_t n = 0; n < len; n++)
        CHECK_INT(auth_token_payload_parse(buf, n, &out), -EINVAL);
    buf[len] = 0;
    CHECK_INT(auth_token_payload_parse(buf, len + 1, &out), -EINVAL);
    CHECK_INT(auth_token_payload_encode(&t, kid, buf, 40, &len), -E2BIG);
}

static void
test_rotation_and_cache(const char *dir)
{
    struct auth_keyset *ks0 = NULL, *ks1 = NULL, *ks2 = NULL;
    struct auth_token_cache *cache = NULL;
    struct auth_token_cache_stats st;
    struct auth_token t, out;
    char tok0[AUTH_TOKEN_STR_SIZE], tok1[AUTH_TOKEN_STR_SIZE];
    char tok2[AUTH_TOKEN_STR_SIZE], tok3[AUTH_TOKEN_STR_SIZE];

    CHECK_INT(auth_token_cache_new(0, &cache), -EINVAL);
    CHECK_INT(auth_token_cache_new(2, &cache), 0);

    CHECK_INT(auth_keys_setup(dir), 0);
    CHECK_INT(auth_keys_load(dir, &ks0), 0);
    test_make_token(&t, AUTH_SCOPE_PROJECT, "p1", "member", NOW);
    CHECK_INT(auth_token_encode(ks0, &t, tok0, sizeof tok0), 0);

    /* Cached: the second check is a hit. */
    CHECK_INT(auth_token_decode(ks0, cache, tok0, strlen(tok0), NOW, &out), 0);
    CHECK_INT(auth_token_decode(ks0, cache, tok0, strlen(tok0), NOW, &out), 0);
    CHECK(token_equal(&t, &out));
    auth_token_cache_stats(cache, &st);
    CHECK_INT(st.hits, 1);
    CHECK_INT(st.misses, 1);
    CHECK_INT(st.entries, 1);
    /* A cached token still expires. */
    CHECK_INT(auth_token_decode(ks0, cache, tok0, strlen(tok0), t.expires_at, &out),
              -EKEYEXPIRED);

    /* After one rotation, the old primary's tokens still verify. */
    CHECK_INT(auth_keys_rotate(dir, 2), 0);
    CHECK_INT(auth_keys_load(dir, &ks1), 0);
    CHECK_INT(auth_token_decode(ks1, cache, tok0, strlen(tok0), NOW, &out), 0);
    CHECK_INT(auth_token_encode(ks1, &t, tok1, sizeof tok1), 0);
    CHECK(strcmp(tok0, tok1) != 0);
    CHECK_INT(auth_token_decode(ks1, cache, tok1, strlen(tok1), NOW, &out), 0);
    /* The old key set does not know the new primary. */
    CHECK_INT(auth_token_decode(ks0, NULL, tok1, strlen(tok1), NOW, &out),
              -EKEYREJECTED);

    /* After the next rotation key 0 is pruned: its tokens fail, even
     * though the cache saw them verified with an earlier key set. */
    CHECK_INT(auth_keys_rotate(dir, 2), 0);
    CHECK_INT(auth_keys_load(dir, &ks2), 0);
    CHECK_INT(auth_token_decode(ks2, cache, tok0, strlen(tok0), NOW, &out),
              -EKEYREJECTED);
    CHECK_INT(auth_token_decode(ks2, cache, tok1, strlen(tok1), NOW, &out), 0);
    CHECK_INT(auth_token_decode(ks2, cache, tok1, strlen(tok1), NOW, &out), 0);

    /* Eviction: capacity 2, three tokens. */
    CHECK_INT(auth_token_encode(ks2, &t, tok2, sizeof tok2), 0);
    auth_token_audit_id_new(t.audit_id);
    CHECK_INT(auth_token_encode(ks2, &t, tok3, sizeof tok3), 0);
    CHECK_INT(auth_token_decode(ks2, cache, tok2, strlen(tok2), NOW, &out), 0);
    CHECK_INT(auth_token_decode(ks2, cache, tok3, strlen(tok3), NOW, &out), 0);
    auth_token_cache_stats(cache, &st);
    CHECK_INT(st.entries, 2);
    CHECK(st.evictions >= 1);
    uint64_t hits = st.hits;
    CHECK_INT(auth_token_decode(ks2, cache, tok3, strlen(tok3), NOW, &out), 0);
    CHECK_INT(auth_token_decode(ks2, cache, tok1, strlen(tok1), NOW, &out), 0);
    auth_token_cache_stats(cache, &st);
    CHECK_INT(st.hits, hits + 1);
    /* Tampered tokens are never cache hits. */
    tok3[10] = tok3[10] == 'A' ? 'B' : 'A';
    CHECK(auth_token_decode(ks2, cache, tok3, strlen(tok3), NOW, &out) < 0);

    auth_token_cache_free(cache);
    auth_token_cache_free(NULL);
    auth_keyset_free(ks0);
    auth_keyset_free(ks1);
    auth_keyset_free(ks2);
}

int
main(void)
{
    char base[64], dir_a[128], dir_b[128], dir_r[128];
    char dir_p[128];
    struct auth_keyset *ks = NULL, *other = NULL, *pub = NULL;

    CHECK_INT(auth_init(), 0);
    test_tmpdir(base);
    snprintf(dir_a, sizeof dir_a, "%s/a", base);
    snprintf(dir_b, sizeof dir_b, "%s/b", base);
    snprintf(dir_r, sizeof dir_r, "%s/r", base);
    snprintf(dir_p, sizeof dir_p, "%s/p", base);
    CHECK_INT(auth_keys_setup(dir_a), 0);
    CHECK_INT(auth_keys_setup(dir_b), 0);
    CHECK_INT(auth_keys_load(dir_a, &ks), 0);
    CHECK_INT(auth_keys_load(dir_b, &other), 0);
    CHECK_INT(auth_keys_export_public(ks, dir_p), 0);
    CHECK_INT(auth_keys_load(dir_p, &pub), 0);
    if (!ks || !other || !pub)
        return check_exit();

    test_round_trips(ks);
    test_encode_errors(ks, pub);
    test_tampering(ks, other);
    test_expiry_and_garbage(ks);
    test_strict_parse();
    test_rotation_and_cache(dir_r);

    /* A verify-only key set verifies what the full one signs. */
    {
        struct auth_token t, out;
        char s[AUTH_TOKEN_STR_SIZE];
        test_make_token(&t, AUTH_SCOPE_DOMAIN, NULL, "reader", NOW);
        CHECK_INT(auth_token_encode(ks, &t, s, sizeof s), 0);
        CHECK_INT(auth_token_decode(pub, NULL, s, strlen(s), NOW, &out), 0);
        CHECK(token_equal(&t, &out));
    }

    auth_keyset_free(ks);
    auth_keyset_free(other);
    auth_keyset_free(pub);
    test_rmdir(dir_a);
    test_rmdir(dir_b);
    test_rmdir(dir_r);
    test_rmdir(dir_p);
    test_rmdir(base);
    return check_exit();
}
