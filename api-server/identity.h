/* Identity (Keystone v3 compatible) inside nimbus-api: the process-wide
 * state and the helpers shared by identity.c (tokens, catalog) and
 * identity_admin.c (projects, users, roles, domains, assignments, services,
 * endpoints). */
#ifndef NIMBUS_IDENTITY_H
#define NIMBUS_IDENTITY_H

#include <jansson.h>
#include <stdint.h>

#include "api.h"
#include "auth_token.h"

struct auth_password;
struct auth_ratelimit;
struct auth_verifier;

struct identity {
    struct api *api;
    struct auth_verifier *verifier; /* Keys, verified-token cache, revocations. */
    struct auth_password *hasher;
    struct auth_ratelimit *login_limit;
    json_t *catalog;               /* Token-body catalog; NULL until loaded. */
    char *catalog_text;            /* Its serialised form. */
    json_t *names;                 /* Validation name cache (see identity.c). */
    json_t *scopes;                /* Re-scope cache: user + scope → issue row. */
    int64_t token_ttl;
    bool catalog_loading;
    bool catalog_stale;
    uint64_t login_failures;
    uint64_t login_throttled;
    uv_timer_t retry_timer;        /* Start-up loads and pruning. */
    unsigned ticks;
};

/* The identity state of the process. */
struct identity *identity_of(const struct api_req *ar);

/* Keystone resource JSON ("links": {"self": ...}) helpers. */
json_t *identity_links(http_request *req, const char *collection, const char *id);
json_t *identity_list_links(http_request *req, const char *collection);

/* Writes "2026-11-25T17:19:22.000000Z" for unix seconds 't'. */
void identity_time(int64_t t, char out[32]);

/* Inserts a revocation event (kind "audit", "user" or "project") that
 * expires with the longest token lifetime; 'cb' runs when it is stored, with
 * the status (0 or negative errno). Errors are the caller's to answer. */
void identity_revoke(http_request *req, const char *kind, const char *value,
                     void (*cb)(http_request *req, int status, void *arg),
                     void *arg);

void identity_admin_register(struct api *a);

#endif
