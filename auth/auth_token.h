/* Signed bearer tokens (the X-Auth-Token / X-Subject-Token value).
 *
 * A token is base64url (no padding) of a compact binary payload followed by
 * its Ed25519 signature.  The payload carries the user, the scope, the roles,
 * the authentication methods, the times and the audit ids; the byte layout
 * is described at the top of auth_token.c.  Hex ids (Keystone's 32-digit ids)
 * and canonical UUIDs are stored as 16 raw bytes, other ids (such as the
 * "default" domain) as text.
 *
 * Roles: a token carries each role's id AND name.  Policy rules match role
 * names ("admin", "member", "reader", as Keystone's do), so with names inside
 * the token a policy check needs the token alone, and the API returns the
 * names in the token body without a table lookup.  A role name costs a few
 * bytes per role; a token with three roles is about 330 characters.  Role
 * changes (and role renames) are not seen by tokens issued before them:
 * removing an assignment must add a revocation entry for the user (see
 * auth_revoke.h), as Keystone does.
 *
 * Verification is stateless apart from an optional cache of tokens already
 * verified (keyed by BLAKE2b of the token string), which turns a repeated
 * validation into a hash lookup.  The cache never answers about revocation:
 * callers check auth_revoke on every request. */
#ifndef NIMBUS_AUTH_TOKEN_H
#define NIMBUS_AUTH_TOKEN_H

#include <stddef.h>
#include <stdint.h>

struct auth_keyset;

/* Longest id (user, domain, project, role), in bytes without the NUL;
 * Keystone's columns are 64 wide. */
#define AUTH_ID_MAX 64
/* Longest user or role name, in bytes without the NUL. */
#define AUTH_NAME_MAX 255
/* Most roles one token carries. */
#define AUTH_TOKEN_MAX_ROLES 16
/* Longest token string accepted or produced, in characters. */
#define AUTH_TOKEN_STR_MAX 2048
/* Size of a buffer that receives a token string, NUL included. */
#define AUTH_TOKEN_STR_SIZE (AUTH_TOKEN_STR_MAX + 1)
/* An audit id: base64url of 16 random bytes, 22 characters, as Keystone's. */
#define AUTH_AUDIT_ID_LEN 22

enum auth_scope {
    AUTH_SCOPE_UNSCOPED = 0,
    AUTH_SCOPE_PROJECT = 1,
    AUTH_SCOPE_DOMAIN = 2,
};

/* Authentication methods, as a bit mask in auth_token.methods. */
#define AUTH_METHOD_PASSWORD (1u << 0)
#define AUTH_METHOD_TOKEN (1u << 1)
#define AUTH_METHOD_APPLICATION_CREDENTIAL (1u << 2)
#define AUTH_METHOD_ALL (AUTH_METHOD_PASSWORD | AUTH_METHOD_TOKEN \
                         | AUTH_METHOD_APPLICATION_CREDENTIAL)

struct auth_role {
    char id[AUTH_ID_MAX + 1];
    char name[AUTH_NAME_MAX + 1];
};

/* A token's contents.  A plain value: fixed-size strings, no pointers, so it
 * lives on the stack or in an arena and needs no freeing.  Empty strings
 * mean "absent". */
struct auth_token {
    char user_id[AUTH_ID_MAX + 1];
    char user_domain_id[AUTH_ID_MAX + 1];
    /* Optional: empty keeps the token shorter. */
    char user_name[AUTH_NAME_MAX + 1];

    enum auth_scope scope;
    /* Set for AUTH_SCOPE_PROJECT, empty otherwise. */
    char project_id[AUTH_ID_MAX + 1];
    char project_domain_id[AUTH_ID_MAX + 1];
    /* Set for AUTH_SCOPE_DOMAIN, empty otherwise. */
    char domain_id[AUTH_ID_MAX + 1];

    /* Roles held on the scope; none for an unscoped token. */
    unsigned n_roles;
    struct auth_role roles[AUTH_TOKEN_MAX_ROLES];

    /* AUTH_METHOD_* bits, at least one. */
    unsigned methods;
    /* Unix seconds; expires_at > issued_at. */
    int64_t issued_at;
    int64_t expires_at;

    /* This token's audit id, and for a token obtained from another token
     * (re-scoping) the first token's, so that revoking either revokes both:
     * Keystone's "audit_ids": [audit_id, parent_audit_id]. */
    char audit_id[AUTH_AUDIT_ID_LEN + 1];
    char parent_audit_id[AUTH_AUDIT_ID_LEN + 1];
};

/* A cache of verified tokens: a bounded LRU.  Opaque; not thread-safe (one
 * per thread or event loop). */
struct auth_token_cache;

/* Fills 'out' with a fresh random audit id. */
void auth_token_audit_id_new(char out[AUTH_AUDIT_ID_LEN + 1]);

/* Signs 'tok' with the primary key of 'ks' and writes the token string,
 * NUL-terminated, into 'out' ('out_size' bytes, AUTH_TOKEN_STR_SIZE is
 * always enough).  The caller fills every field, audit_id included (see
 * auth_token_audit_id_new()).  Returns 0, -EINVAL for an inconsistent token
 * (missing user, scope fields that do not match 'scope', bad ids or names,
 * unknown methods, times out of order, malformed audit ids), -E2BIG when
 * the token would exceed AUTH_TOKEN_STR_MAX, -ENOKEY when 'ks' cannot
 * sign, -ENOSPC when 'out' is too small. */
int auth_token_encode(const struct auth_keyset *ks,
                      const struct auth_token *tok, char *out, size_t out_size)
    __attribute__((warn_unused_result));

/* Verifies the token string 's' ('len' bytes, need not be NUL-terminated)
 * with the keys of 'ks' and, if valid at time 'now' (unix seconds), fills
 * '*out'.  'cache' may be NULL; with a cache, a token verified before with
 * the same key set skips the signature check.  Revocation is NOT checked
 * here.  Returns 0, or:
 *   -EINVAL        malformed (empty, too long, not base64url, bad layout);
 *   -EKEYREJECTED  unknown key id or bad signature;
 *   -EKEYEXPIRED   valid but expired (now >= expires_at).
 * All of them mean 401 to the client; the codes are for logs and metrics.
 * '*out' is unspecified on failure. */
int auth_token_decode(const struct auth_keyset *ks,
                      struct auth_token_cache *cache, const char *s,
                      size_t len, int64_t now, struct auth_token *out)
    __attribute__((warn_unused_result));

/* Creates a cache of up to 'capacity' verified tokens (1 to 1048576; 4096
 * is a good size, about 300 KiB).  The caller owns '*out' and frees it with
 * auth_token_cache_free().  Returns 0, -EINVAL or -ENOMEM. */
int auth_token_cache_new(size_t capacity, struct auth_token_cache **out)
    __attribute__((warn_unused_result));

/* Frees a cache.  Accepts NULL. */
void auth_token_cache_free(struct auth_token_cache *c);

/* Counters for /metrics. */
struct auth_token_cache_stats {
    uint64_t hits;
    uint64_t misses;
    uint64_t evictions;
    size_t entries;
};
void auth_token_cache_stats(const struct auth_token_cache *c,
                            struct auth_token_cache_stats *out);

#endif
