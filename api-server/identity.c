/* Identity: tokens (POST/GET/HEAD/DELETE /v3/auth/tokens), the service
 * catalog, /v3/auth/projects and /v3/auth/domains, and the authentication of
 * every other API's requests.
 *
 * Tokens are verified with the public keys alone (no database round trip);
 * revocations live in memory, loaded at start-up and pushed by PostgreSQL
 * NOTIFY to every API process, and reloaded whole after a reconnect.
 * Password checks run on libuv's thread pool: Argon2id takes tens of
 * milliseconds and must never block the event loop. */
#include "identity.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "auth.h"
#include "auth_keys.h"
#include "auth_password.h"
#include "auth_policy.h"
#include "auth_ratelimit.h"
#include "auth_verifier.h"
#include "log.h"
#include "util.h"

/* Entries of the name and scope caches; beyond, a cache starts over. */
#define NAMES_CACHE_MAX 65536

static int64_t
now_s(void)
{
    return (int64_t)time(NULL);
}

struct identity *
identity_of(const struct api_req *ar)
{
    return ar->api->identity;
}

void
identity_time(int64_t t, char out[32])
{
    util_iso8601((time_t)t, 0, out);
}

json_t *
identity_links(http_request *req, const char *collection, const char *id)
{
    const char *base = api_base_url(req, API_IDENTITY);
    char *self = arena_printf(http_req_arena(req), "%s/v3/%s/%s", base, collection, id);
    return json_pack("{s:s}", "self", self);
}

json_t *
identity_list_links(http_request *req, const char *collection)
{
    const char *base = api_base_url(req, API_IDENTITY);
    char *self = arena_printf(http_req_arena(req), "%s/v3/%s", base, collection);
    return json_pack("{s:s,s:n,s:n}", "self", self, "previous", "next");
}

/* ---- The catalog, as the token body carries it. */

static void load_catalog(struct identity *id);

static void
catalog_loaded(int status, db_result *res, const struct db_error *err, void *arg)
{
    struct identity *id = arg;
    id->catalog_loading = false;
    if (status < 0) {
        log_warn("identity", "cannot load the service catalog: %s",
                 err && err->message ? err->message : strerror(-status));
        return;
    }
    const char *text = db_get(res, 0, 0);
    json_error_t jerr;
    json_t *cat = json_loads(text ? text : "[]", 0, &jerr);
    if (!cat || !json_is_array(cat)) {
        json_decref(cat);
        log_error("identity", "the catalog query returned malformed JSON");
        return;
    }
    json_decref(id->catalog);
    id->catalog = cat;
    free(id->catalog_text);
    id->catalog_text = json_dumps(cat, JSON_COMPACT);
    if (id->catalog_stale) {
        id->catalog_stale = false;
        load_catalog(id);
    }
}

static const char catalog_sql[] =
    "SELECT coalesce(json_agg(json_build_object("
    "  'id', s.id, 'type', s.type, 'name', s.name,"
    "  'endpoints', (SELECT coalesce(json_agg(json_build_object("
    "      'id', e.id, 'interface', e.interface, 'region', e.region_id,"
    "      'region_id', e.region_id, 'url', e.url) ORDER BY e.interface), '[]')"
    "    FROM endpoints e WHERE e.service_id = s.id AND e.enabled))"
    "  ORDER BY s.type), '[]') FROM services s WHERE s.enabled";

static void
load_catalog(struct identity *id)
{
    if (id->catalog_loading) {
        id->catalog_stale = true;
        return;
    }
    if (db_query(id->api->db, catalog_sql, 0, NULL, catalog_loaded, id) == 0)
        id->catalog_loading = true;
}

static void
on_catalog_change(const char *channel, const char *payload, void *arg)
{
    load_catalog(arg);
}

static void
on_catalog_reconnect(void *arg)
{
    load_catalog(arg);
}

/* Loads the catalog when start-up could not (the database may come up
 * after us).  Revocations are the verifier's (auth/auth_verifier.h). */
static void
retry_loads(uv_timer_t *t)
{
    struct identity *id = t->data;
    if (!id->catalog && db_pool_available(id->api->db))
        load_catalog(id);
}

/* ---- Authentication of API requests. */

static int
decode_token(struct identity *id, const char *text, struct auth_token *tok)
{
    return auth_verifier_check(id->verifier, text, tok);
}

int
api_authenticate(http_request *req, struct api_req *ar)
{
    struct identity *id = identity_of(ar);
    const char *text = http_req_header(req, "x-auth-token");
    struct auth_token *tok = arena_alloc(http_req_arena(req), sizeof *tok);
    int rc = decode_token(id, text, tok);
    if (rc == -EAGAIN) {
        /* Until the revocation list is loaded no token can be trusted. */
        http_resp_header(req, "Retry-After", "1");
        api_error(req, 503, "The service is starting; try again shortly.");
        return rc;
    }
    if (rc < 0) {
        api_error_unauthorized(req);
        return rc;
    }
    ar->token = tok;
    ar->token_id = text;
    return 0;
}

int
api_authorize(http_request *req, struct api_req *ar, const char *op,
              const char *project_id, const char *user_id)
{
    int rc = auth_policy_check(op, ar->token, project_id, user_id);
    if (rc < 0) {
        api_error(req, 403, "You are not authorized to perform the requested action: %s.", op);
        return -EACCES;
    }
    return 0;
}

bool
api_is_admin(const struct api_req *ar)
{
    return ar->token && auth_policy_is_admin(ar->token);
}

/* ---- Token bodies. */

static json_t *
methods_json(unsigned methods)
{
    json_t *m = json_array();
    if (methods & AUTH_METHOD_PASSWORD)
        json_array_append_new(m, json_string("password"));
    if (methods & AUTH_METHOD_TOKEN)
        json_array_append_new(m, json_string("token"));
    if (methods & AUTH_METHOD_APPLICATION_CREDENTIAL)
        json_array_append_new(m, json_string("application_credential"));
    return m;
}

/* Names that the token does not carry, looked up when it is issued or
 * validated. */
struct token_names {
    const char *user_name, *user_domain_name;
    const char *project_name, *project_domain_name;
    const char *domain_name;
};

static json_t *
token_body(const struct auth_token *t, const struct token_names *n)
{
    char issued[32], expires[32];
    identity_time(t->issued_at, issued);
    identity_time(t->expires_at, expires);
    json_t *audit = json_array();
    json_array_append_new(audit, json_string(t->audit_id));
    if (t->parent_audit_id[0])
        json_array_append_new(audit, json_string(t->parent_audit_id));
    json_t *tok = json_pack("{s:o,s:{s:s,s:s,s:{s:s,s:s},s:n},s:o,s:s,s:s}",
                            "methods", methods_json(t->methods),
                            "user", "id", t->user_id, "name", n->user_name,
                            "domain", "id", t->user_domain_id, "name",
                            n->user_domain_name, "password_expires_at",
                            "audit_ids", audit, "expires_at", expires,
                            "issued_at", issued);
    if (t->scope != AUTH_SCOPE_UNSCOPED) {
        json_t *roles = json_array();
        for (unsigned i = 0; i < t->n_roles; i++)
            json_array_append_new(roles, json_pack("{s:s,s:s}", "id", t->roles[i].id,
                                                   "name", t->roles[i].name));
        json_object_set_new(tok, "roles", roles);
    }
    if (t->scope == AUTH_SCOPE_PROJECT) {
        json_object_set_new(tok, "project",
                            json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", t->project_id,
                                      "name", n->project_name, "domain", "id",
                                      t->project_domain_id, "name",
                                      n->project_domain_name));
        json_object_set_new(tok, "is_domain", json_false());
    } else if (t->scope == AUTH_SCOPE_DOMAIN) {
        json_object_set_new(tok, "domain", json_pack("{s:s,s:s}", "id", t->domain_id,
                                                     "name", n->domain_name));
    }
    return json_pack("{s:o}", "token", tok);
}

/* Answers with a token body.  The catalog is the same for every token, so
 * its serialised text is kept and spliced in rather than rebuilt. */
static void
reply_token(http_request *req, int status, struct identity *id,
            const struct auth_token *t, const struct token_names *n,
            bool with_catalog)
{
    json_t *body = token_body(t, n);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) {
        api_error(req, 500, "Cannot render the token.");
        return;
    }
    size_t len = strlen(text);
    if (with_catalog && t->scope != AUTH_SCOPE_UNSCOPED && len >= 2) {
        static const char key[] = ",\"catalog\":";
        const char *cat = id->catalog_text ? id->catalog_text : "[]";
        size_t cl = strlen(cat), kl = sizeof key - 1, head = len - 2;
        char *out = arena_alloc(http_req_arena(req), head + kl + cl + 2);
        memcpy(out, text, head);
        memcpy(out + head, key, kl);
        memcpy(out + head + kl, cat, cl);
        memcpy(out + head + kl + cl, "}}", 2);
        free(text);
        (void)http_respond(req, status, "application/json", out, head + kl + cl + 2);
        return;
    }
    (void)http_respond(req, status, "application/json", text, len);
    free(text);
}

/* ---- POST /v3/auth/tokens */

struct issue {
    http_request *req;
    struct identity *id;
    unsigned method;               /* AUTH_METHOD_PASSWORD or _TOKEN. */
    const char *password;
    size_t password_len;
    const char *user_key;          /* What the rate limiter counts. */
    const char *cache_key;         /* Scope cache key (token method). */
    int64_t limit_expires;         /* Application credential expiry, or 0. */
    const char *sql;               /* The lookup; issue_sql unless set. */
    struct auth_token parent;      /* For the token method. */
    enum auth_scope scope;
    bool nocatalog;
    /* Filled from the database. */
    const char *stored_hash;
    bool user_ok;
    int verify_rc;
    uv_work_t work;
    struct auth_token tok;
    struct token_names names;
};

static const char *
jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void issue_finish(struct issue *is);

/* Methods that prove a secret (checked with Argon2id and rate-limited). */
static bool
uses_secret(const struct issue *is)
{
    return is->method == AUTH_METHOD_PASSWORD ||
           is->method == AUTH_METHOD_APPLICATION_CREDENTIAL;
}

static void
issue_fail(struct issue *is, const char *why)
{
    struct identity *id = is->id;
    if (uses_secret(is)) {
        id->login_failures++;
        auth_ratelimit_failure(id->login_limit, is->user_key, http_req_peer(is->req), now_s());
    }
    log_info("identity", "authentication failed for %s from %s: %s",
             is->method == AUTH_METHOD_PASSWORD ? "password" :
             is->method == AUTH_METHOD_TOKEN ? "token" : "application credential",
             http_req_peer(is->req), why);
    api_error(is->req, 401, "The request you have made requires authentication.");
}

static void
verify_work(uv_work_t *w)
{
    struct issue *is = w->data;
    if (is->stored_hash && is->user_ok)
        is->verify_rc = auth_password_verify(is->stored_hash, is->password,
                                             is->password_len);
    else
        is->verify_rc = auth_password_verify_dummy(is->id->hasher, is->password,
                                                   is->password_len);
}

static void
verify_done(uv_work_t *w, int status)
{
    struct issue *is = w->data;
    if (status < 0 || is->verify_rc < 0 || !is->user_ok || !is->stored_hash) {
        issue_fail(is, is->user_ok ? "wrong password or unknown user"
                                   : "unknown or disabled user");
        return;
    }
    issue_finish(is);
}

static int
add_roles(struct auth_token *t, const char *roles_json)
{
    json_t *roles = json_loads(roles_json ? roles_json : "[]", 0, NULL);
    if (!json_is_array(roles)) {
        json_decref(roles);
        return -EINVAL;
    }
    size_t i;
    json_t *r;
    t->n_roles = 0;
    json_array_foreach(roles, i, r) {
        if (t->n_roles >= AUTH_TOKEN_MAX_ROLES)
            break;
        const char *rid = json_string_value(json_array_get(r, 0));
        const char *rname = json_string_value(json_array_get(r, 1));
        if (!rid || !rname)
            continue;
        snprintf(t->roles[t->n_roles].id, sizeof t->roles[0].id, "%s", rid);
        snprintf(t->roles[t->n_roles].name, sizeof t->roles[0].name, "%s", rname);
        t->n_roles++;
    }
    json_decref(roles);
    return 0;
}

/* The issue query's row as a JSON object (column name → text or null), so
 * that re-scoping can be answered from the scope cache as well. */
static json_t *
row_json(db_result *res)
{
    json_t *o = json_object();
    for (int c = 0; c < db_cols(res); c++) {
        static const char *const cols[] = {
            "id", "name", "domain_id", "domain_name", "password_hash", "enabled",
            "t_id", "t_name", "t_enabled", "t_domain_id", "t_domain_name", "roles",
            "expires",
        };
        if ((size_t)c >= ARRAY_SIZE(cols))
            break;
        const char *v = db_get(res, 0, c);
        json_object_set_new(o, cols[c], v ? json_string(v) : json_null());
    }
    return o;
}

static const char *
rget(json_t *row, const char *col)
{
    return json_string_value(json_object_get(row, col));
}

static void
issue_process(http_request *req, struct api_req *ar, struct issue *is, json_t *row)
{
    struct arena *mem = http_req_arena(req);
    struct auth_token *t = &is->tok;
    memset(t, 0, sizeof *t);
    if (!row) {
        if (uses_secret(is)) {
            is->user_ok = false;
            is->work.data = is;
            if (uv_queue_work(ar->api->loop, &is->work, verify_work, verify_done) < 0)
                issue_fail(is, "cannot queue the password check");
            return;
        }
        issue_fail(is, "the token's user no longer exists");
        return;
    }
    is->user_ok = !strcmp(rget(row, "enabled"), "t");
    snprintf(t->user_id, sizeof t->user_id, "%s", rget(row, "id"));
    snprintf(t->user_domain_id, sizeof t->user_domain_id, "%s", rget(row, "domain_id"));
    snprintf(t->user_name, sizeof t->user_name, "%s", rget(row, "name"));
    is->names.user_name = arena_strdup(mem, rget(row, "name"));
    is->names.user_domain_name = arena_strdup(mem, rget(row, "domain_name"));
    const char *hash = rget(row, "password_hash");
    is->stored_hash = hash ? arena_strdup(mem, hash) : NULL;

    if (is->scope != AUTH_SCOPE_UNSCOPED) {
        const char *tid = rget(row, "t_id");
        if (!tid) {
            /* An unknown scope target answers like a missing role: 401,
             * revealing nothing about which projects exist. */
            t->scope = AUTH_SCOPE_UNSCOPED;
            is->scope = (enum auth_scope)-1;
        } else {
            bool enabled = !strcmp(rget(row, "t_enabled"), "t");
            if (add_roles(t, rget(row, "roles")) < 0 || !t->n_roles || !enabled)
                is->scope = (enum auth_scope)-1;
            if (is->scope == AUTH_SCOPE_PROJECT) {
                t->scope = AUTH_SCOPE_PROJECT;
                snprintf(t->project_id, sizeof t->project_id, "%s", tid);
                snprintf(t->project_domain_id, sizeof t->project_domain_id, "%s",
                         rget(row, "t_domain_id"));
                is->names.project_name = arena_strdup(mem, rget(row, "t_name"));
                is->names.project_domain_name = arena_strdup(mem, rget(row, "t_domain_name"));
            } else if (is->scope == AUTH_SCOPE_DOMAIN) {
                t->scope = AUTH_SCOPE_DOMAIN;
                snprintf(t->domain_id, sizeof t->domain_id, "%s", tid);
                is->names.domain_name = arena_strdup(mem, rget(row, "t_name"));
            }
        }
    }
    const char *expires = rget(row, "expires");
    is->limit_expires = expires ? strtoll(expires, NULL, 10) : 0;
    if (uses_secret(is)) {
        is->work.data = is;
        if (uv_queue_work(ar->api->loop, &is->work, verify_work, verify_done) < 0)
            issue_fail(is, "cannot queue the password check");
        return;
    }
    if (!is->user_ok) {
        issue_fail(is, "the token's user is disabled");
        return;
    }
    issue_finish(is);
}

static void
issue_row(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    struct issue *is = ctx;
    struct identity *id = identity_of(ar);
    json_t *row = db_rows(res) == 1 ? row_json(res) : NULL;
    /* Only complete, usable scopes of the token method are cached: never a
     * miss, whose answer a later insert could change. */
    if (row && is->cache_key && rget(row, "t_id") && rget(row, "roles") &&
        strcmp(rget(row, "roles"), "[]") && !strcmp(rget(row, "enabled"), "t") &&
        !strcmp(rget(row, "t_enabled"), "t")) {
        if (json_object_size(id->scopes) >= NAMES_CACHE_MAX)
            json_object_clear(id->scopes);
        json_object_set(id->scopes, is->cache_key, row);
    }
    issue_process(req, ar, is, row);
    json_decref(row);
}

static void
issue_finish(struct issue *is)
{
    http_request *req = is->req;
    struct identity *id = is->id;
    struct auth_token *t = &is->tok;
    if ((int)is->scope == -1) {
        /* The credentials were right but the scope is not available. */
        if (uses_secret(is))
            auth_ratelimit_success(id->login_limit, is->user_key);
        log_info("identity", "user %s has no role on the requested scope", t->user_id);
        api_error(req, 401, "The request you have made requires authentication.");
        return;
    }
    t->methods = is->method;
    int64_t now = now_s();
    t->issued_at = now;
    t->expires_at = now + id->token_ttl;
    auth_token_audit_id_new(t->audit_id);
    if (is->method == AUTH_METHOD_TOKEN) {
        /* A re-scoped token keeps the original's expiry and audit chain. */
        t->methods = is->parent.methods | AUTH_METHOD_TOKEN;
        t->expires_at = is->parent.expires_at;
        snprintf(t->parent_audit_id, sizeof t->parent_audit_id, "%s",
                 is->parent.parent_audit_id[0] ? is->parent.parent_audit_id
                                               : is->parent.audit_id);
    } else {
        auth_ratelimit_success(id->login_limit, is->user_key);
    }
    /* Revocation times have one-second resolution and match tokens issued
     * at or before them, so a token issued in the same second as a known
     * revocation of its user or project (a password just changed) says it
     * was issued a second later rather than be born revoked. */
    if (auth_verifier_is_revoked(id->verifier, t)) {
        t->issued_at++;
        t->expires_at++;
    }
    /* A token never outlives the application credential it came from. */
    if (is->limit_expires > 0 && is->limit_expires < t->expires_at)
        t->expires_at = is->limit_expires;
    if (t->expires_at <= t->issued_at) {
        api_error(req, 401, "The request you have made requires authentication.");
        return;
    }
    char *text = arena_alloc(http_req_arena(req), AUTH_TOKEN_STR_SIZE);
    int rc = auth_token_encode(auth_verifier_keys(id->verifier), t, text,
                               AUTH_TOKEN_STR_SIZE);
    if (rc < 0) {
        log_error("identity", "cannot sign a token for user %s: %s", t->user_id,
                  strerror(-rc));
        api_error(req, 500, "The token could not be issued.");
        return;
    }
    id->api->counters.tokens_issued++;
    http_resp_header(req, "X-Subject-Token", text);
    reply_token(req, 201, id, t, &is->names, !is->nocatalog);
}

static const char issue_sql[] =
    "WITH u AS ("
    "  SELECT u.id, u.name, u.domain_id, d.name AS domain_name, u.password_hash,"
    "         (u.enabled AND d.enabled) AS enabled"
    "  FROM users u JOIN domains d ON d.id = u.domain_id"
    "  WHERE CASE WHEN $1::text IS NOT NULL THEN u.id = $1"
    "        ELSE u.name = $2 AND (d.id = $3 OR d.name = $4) END),"
    " t AS ("
    "  SELECT 'project'::text AS kind, p.id, p.name, (p.enabled AND pd.enabled) AS enabled,"
    "         pd.id AS domain_id, pd.name AS domain_name"
    "  FROM projects p JOIN domains pd ON pd.id = p.domain_id"
    "  WHERE $5 = 'project' AND CASE WHEN $6::text IS NOT NULL THEN p.id = $6"
    "        ELSE p.name = $7 AND (pd.id = $8 OR pd.name = $9) END"
    "  UNION ALL"
    "  SELECT 'domain', d.id, d.name, d.enabled, NULL, NULL FROM domains d"
    "  WHERE $5 = 'domain' AND CASE WHEN $6::text IS NOT NULL THEN d.id = $6"
    "        ELSE d.name = $7 END)"
    " SELECT u.id, u.name, u.domain_id, u.domain_name, u.password_hash, u.enabled,"
    "  t.id AS t_id, t.name AS t_name, t.enabled AS t_enabled,"
    "  t.domain_id AS t_domain_id, t.domain_name AS t_domain_name,"
    "  (SELECT coalesce(json_agg(json_build_array(r.id, r.name) ORDER BY r.name), '[]')"
    "   FROM role_assignments ra JOIN roles r ON r.id = ra.role_id"
    "   WHERE ra.user_id = u.id AND ra.target_type = t.kind AND ra.target_id = t.id) AS roles"
    " FROM u LEFT JOIN t ON true";

/* Application credentials: the credential (by id, or by name and its
 * user), its user and project, and the roles it grants that the user still
 * holds on the project.  Columns as issue_sql's, plus its expiry. */
static const char appcred_sql[] =
    "SELECT u.id, u.name, u.domain_id, d.name AS domain_name,"
    "  c.secret_hash AS password_hash, (u.enabled AND d.enabled) AS enabled,"
    "  p.id AS t_id, p.name AS t_name, (p.enabled AND pd.enabled) AS t_enabled,"
    "  pd.id AS t_domain_id, pd.name AS t_domain_name,"
    "  (SELECT coalesce(json_agg(json_build_array(r.id, r.name) ORDER BY r.name), '[]')"
    "   FROM role_assignments ra JOIN roles r ON r.id = ra.role_id"
    "   WHERE ra.user_id = u.id AND ra.target_type = 'project' AND ra.target_id = p.id"
    "   AND (c.unrestricted OR r.id IN (SELECT x->>'id' FROM jsonb_array_elements(c.roles) x)))"
    "   AS roles,"
    "  floor(extract(epoch FROM c.expires_at))::bigint AS expires"
    " FROM application_credentials c JOIN users u ON u.id = c.user_id"
    " JOIN domains d ON d.id = u.domain_id"
    " JOIN projects p ON p.id = c.project_id JOIN domains pd ON pd.id = p.domain_id"
    " WHERE (c.expires_at IS NULL OR c.expires_at > now()) AND CASE"
    "  WHEN $1::text IS NOT NULL THEN c.id = $1"
    "  ELSE c.name = $2 AND CASE WHEN $3::text IS NOT NULL THEN u.id = $3"
    "   ELSE u.name = $4 AND (d.id = $5 OR d.name = $6) END END";

/* Reads {"id"} or {"name", "domain": {"id"|"name"}} into params. */
static int
parse_named(json_t *o, const char **pid, const char **pname,
            const char **pdom_id, const char **pdom_name, bool need_domain)
{
    if (!json_is_object(o))
        return -EINVAL;
    *pid = jstr(o, "id");
    *pname = jstr(o, "name");
    if (*pid)
        return strlen(*pid) <= AUTH_ID_MAX ? 0 : -EINVAL;
    if (!*pname || strlen(*pname) > AUTH_NAME_MAX)
        return -EINVAL;
    if (!need_domain)
        return 0;
    json_t *d = json_object_get(o, "domain");
    if (!json_is_object(d))
        return -EINVAL;
    *pdom_id = jstr(d, "id");
    *pdom_name = jstr(d, "name");
    return (*pdom_id || *pdom_name) ? 0 : -EINVAL;
}

static void
tokens_post(http_request *req, struct api_req *ar)
{
    struct identity *id = identity_of(ar);
    struct arena *mem = http_req_arena(req);
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    struct issue *is = arena_zalloc(mem, sizeof *is);
    is->req = req;
    is->id = id;
    is->nocatalog = http_req_query_param(req, "nocatalog") != NULL;
    const char **p = arena_zalloc(mem, 9 * sizeof *p);
    const char *err = NULL;

    json_t *auth = json_object_get(body, "auth");
    json_t *ident = json_object_get(auth, "identity");
    json_t *methods = json_object_get(ident, "methods");
    if (!json_is_object(auth) || !json_is_object(ident) || !json_is_array(methods) ||
        json_array_size(methods) < 1) {
        err = "Expecting auth.identity.methods.";
        goto bad;
    }
    const char *method = json_string_value(json_array_get(methods, 0));
    if (method && !strcmp(method, "password")) {
        json_t *user = json_object_get(json_object_get(ident, "password"), "user");
        const char *pw = jstr(user, "password");
        if (!pw || parse_named(user, &p[0], &p[1], &p[2], &p[3], true) < 0) {
            err = "Expecting password.user with password, and id or name and domain.";
            goto bad;
        }
        is->method = AUTH_METHOD_PASSWORD;
        is->password = arena_strdup(mem, pw);
        is->password_len = strlen(pw);
        if (is->password_len > AUTH_PASSWORD_MAX) {
            err = "The password is too long.";
            goto bad;
        }
        p[0] = p[0] ? arena_strdup(mem, p[0]) : NULL;
        p[1] = p[1] ? arena_strdup(mem, p[1]) : NULL;
        p[2] = p[2] ? arena_strdup(mem, p[2]) : NULL;
        p[3] = p[3] ? arena_strdup(mem, p[3]) : NULL;
        is->user_key = p[0] ? p[0] : arena_printf(mem, "%s/%s", p[2] ? p[2] : "",
                                                  p[3] ? p[3] : "");
        is->user_key = arena_printf(mem, "%s@%s", p[1] ? p[1] : "", is->user_key);
    } else if (method && !strcmp(method, "token")) {
        const char *tid = jstr(json_object_get(ident, "token"), "id");
        if (!tid) {
            err = "Expecting token.id.";
            goto bad;
        }
        if (decode_token(id, tid, &is->parent) < 0) {
            json_decref(body);
            api_error(req, 401, "The request you have made requires authentication.");
            return;
        }
        is->method = AUTH_METHOD_TOKEN;
        p[0] = arena_strdup(mem, is->parent.user_id);
    } else if (method && !strcmp(method, "application_credential")) {
        json_t *ac = json_object_get(ident, "application_credential");
        const char *secret = jstr(ac, "secret");
        p[0] = jstr(ac, "id");
        p[1] = jstr(ac, "name");
        json_t *user = json_object_get(ac, "user");
        if (!secret || (!p[0] && (!p[1] || !json_is_object(user)))) {
            err = "Expecting application_credential with secret, and id or name and user.";
            goto bad;
        }
        if (!p[0] && parse_named(user, &p[2], &p[3], &p[4], &p[5], !jstr(user, "id")) < 0) {
            err = "Expecting application_credential.user with id, or name and domain.";
            goto bad;
        }
        for (int i = 0; i < 6; i++)
            p[i] = p[i] ? arena_strdup(mem, p[i]) : NULL;
        is->method = AUTH_METHOD_APPLICATION_CREDENTIAL;
        is->password = arena_strdup(mem, secret);
        is->password_len = strlen(secret);
        if (is->password_len > AUTH_PASSWORD_MAX) {
            err = "The secret is too long.";
            goto bad;
        }
        is->user_key = arena_printf(mem, "appcred:%s", p[0] ? p[0] : p[1]);
        is->sql = appcred_sql;
        is->scope = AUTH_SCOPE_PROJECT;
    } else {
        err = "Unsupported authentication method.";
        json_decref(body);
        api_error(req, 401, "%s", err);
        return;
    }

    json_t *scope = json_object_get(auth, "scope");
    if (is->sql) {
        /* An application credential carries its own project scope. */
        if (scope && !json_is_null(scope)) {
            err = "An application credential cannot be re-scoped.";
            goto bad;
        }
        goto lookup;
    }
    is->scope = AUTH_SCOPE_UNSCOPED;
    p[4] = "none";
    if (scope && !json_is_null(scope)) {
        json_t *proj = json_object_get(scope, "project");
        json_t *dom = json_object_get(scope, "domain");
        if (proj) {
            if (parse_named(proj, &p[5], &p[6], &p[7], &p[8], true) < 0) {
                err = "Expecting scope.project with id, or name and domain.";
                goto bad;
            }
            is->scope = AUTH_SCOPE_PROJECT;
            p[4] = "project";
        } else if (dom) {
            if (parse_named(dom, &p[5], &p[6], &p[7], &p[8], false) < 0) {
                err = "Expecting scope.domain with id or name.";
                goto bad;
            }
            is->scope = AUTH_SCOPE_DOMAIN;
            p[4] = "domain";
        } else if (json_object_get(scope, "system")) {
            json_decref(body);
            api_error(req, 401, "System-scoped tokens are not supported.");
            return;
        } else {
            err = "Unknown scope.";
            goto bad;
        }
        for (int i = 5; i < 9; i++)
            p[i] = p[i] ? arena_strdup(mem, p[i]) : NULL;
    }
lookup:
    json_decref(body);

    int64_t retry = 0;
    if (uses_secret(is) &&
        auth_ratelimit_check(id->login_limit, is->user_key, http_req_peer(req), now_s(),
                             &retry) < 0) {
        id->login_throttled++;
        log_warn("identity", "too many failed logins for a user or from %s",
                 http_req_peer(req));
        http_resp_header(req, "Retry-After",
                         arena_printf(mem, "%lld", (long long)(retry > 0 ? retry : 1)));
        api_error(req, 429, "Too many failed authentication attempts; try again later.");
        return;
    }
    if (is->method == AUTH_METHOD_TOKEN) {
        is->cache_key = arena_printf(mem, "%s|%s|%s|%s|%s|%s", p[0], p[4],
                                     p[5] ? p[5] : "", p[6] ? p[6] : "",
                                     p[7] ? p[7] : "", p[8] ? p[8] : "");
        json_t *row = json_object_get(id->scopes, is->cache_key);
        if (row) {
            issue_process(req, ar, is, row);
            return;
        }
    }
    if (is->sql)
        api_query(req, is->sql, 6, p, issue_row, is);
    else
        api_query(req, issue_sql, 9, p, issue_row, is);
    return;
bad:
    json_decref(body);
    api_error(req, 400, "%s", err);
}

/* ---- GET/HEAD/DELETE /v3/auth/tokens */

struct subject {
    http_request *req;
    struct auth_token tok;
    bool head;
};

static const char names_sql[] =
    "SELECT u.name, ud.name, p.name, pd.name, d.name"
    " FROM users u JOIN domains ud ON ud.id = u.domain_id"
    " LEFT JOIN projects p ON p.id = $2"
    " LEFT JOIN domains pd ON pd.id = p.domain_id"
    " LEFT JOIN domains d ON d.id = $3"
    " WHERE u.id = $1 AND u.enabled AND ud.enabled";

/* Names for validation answers, cached per (user, project, domain) so that
 * validating a token needs no database round trip.  Any rename or deletion
 * of a user, project or domain clears the cache (NOTIFY nimbus_names);
 * disabling or deleting also revokes the tokens, which the revocation
 * check catches before the cache is consulted. */

static const char *
names_key(http_request *req, const struct auth_token *t)
{
    return arena_printf(http_req_arena(req), "%s|%s|%s", t->user_id,
                        t->scope == AUTH_SCOPE_PROJECT ? t->project_id : "",
                        t->scope == AUTH_SCOPE_DOMAIN ? t->domain_id : "");
}

static void
names_from_json(json_t *e, struct token_names *n)
{
    n->user_name = json_string_value(json_array_get(e, 0));
    n->user_domain_name = json_string_value(json_array_get(e, 1));
    n->project_name = json_string_value(json_array_get(e, 2));
    n->project_domain_name = json_string_value(json_array_get(e, 3));
    n->domain_name = json_string_value(json_array_get(e, 4));
}

static void
on_names_change(const char *channel, const char *payload, void *arg)
{
    struct identity *id = arg;
    json_object_clear(id->names);
    json_object_clear(id->scopes);
}

static void
on_names_reconnect(void *arg)
{
    on_names_change(NULL, NULL, arg);
}

static void
validate_answer(http_request *req, struct api_req *ar, struct subject *s,
                const struct token_names *n)
{
    ar->api->counters.tokens_validated++;
    http_resp_header(req, "X-Subject-Token", http_req_header(req, "x-subject-token"));
    if (s->head) {
        (void)http_respond(req, 200, NULL, NULL, 0);
        return;
    }
    bool nocatalog = http_req_query_param(req, "nocatalog") != NULL;
    reply_token(req, 200, identity_of(ar), &s->tok, n, !nocatalog);
}

static json_t *
jstr_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static void
validate_row(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    struct subject *s = ctx;
    struct identity *id = identity_of(ar);
    if (db_rows(res) != 1) {
        api_error(req, 404, "Could not find token.");
        return;
    }
    struct token_names n = {
        .user_name = db_get(res, 0, 0), .user_domain_name = db_get(res, 0, 1),
        .project_name = db_get(res, 0, 2), .project_domain_name = db_get(res, 0, 3),
        .domain_name = db_get(res, 0, 4),
    };
    if ((s->tok.scope == AUTH_SCOPE_PROJECT && !n.project_name) ||
        (s->tok.scope == AUTH_SCOPE_DOMAIN && !n.domain_name)) {
        api_error(req, 404, "Could not find token.");
        return;
    }
    if (json_object_size(id->names) >= NAMES_CACHE_MAX)
        json_object_clear(id->names);
    json_object_set_new(id->names, names_key(req, &s->tok),
                        json_pack("[o,o,o,o,o]", jstr_or_null(n.user_name),
                                  jstr_or_null(n.user_domain_name),
                                  jstr_or_null(n.project_name),
                                  jstr_or_null(n.project_domain_name),
                                  jstr_or_null(n.domain_name)));
    validate_answer(req, ar, s, &n);
}


/* Authenticates the caller and decodes X-Subject-Token; answers and returns
 * NULL on failure.  Callers may act on their own tokens; admins on any. */
static struct subject *
load_subject(http_request *req, struct api_req *ar, const char *op)
{
    if (api_authenticate(req, ar) < 0)
        return NULL;
    struct subject *s = arena_zalloc(http_req_arena(req), sizeof *s);
    s->req = req;
    const char *text = http_req_header(req, "x-subject-token");
    if (!text) {
        api_error(req, 400, "X-Subject-Token is missing.");
        return NULL;
    }
    if (decode_token(identity_of(ar), text, &s->tok) < 0) {
        api_error(req, 404, "Could not find token.");
        return NULL;
    }
    if (api_authorize(req, ar, op, NULL, s->tok.user_id) < 0)
        return NULL;
    return s;
}

static void
tokens_validate(http_request *req, struct api_req *ar, bool head)
{
    struct subject *s = load_subject(req, ar, "identity:validate_token");
    if (!s)
        return;
    s->head = head;
    json_t *cached = json_object_get(identity_of(ar)->names, names_key(req, &s->tok));
    if (cached) {
        struct token_names n;
        names_from_json(cached, &n);
        validate_answer(req, ar, s, &n);
        return;
    }
    const char **p = arena_zalloc(http_req_arena(req), 3 * sizeof *p);
    p[0] = s->tok.user_id;
    p[1] = s->tok.scope == AUTH_SCOPE_PROJECT ? s->tok.project_id : NULL;
    p[2] = s->tok.scope == AUTH_SCOPE_DOMAIN ? s->tok.domain_id : NULL;
    api_query(req, names_sql, 3, p, validate_row, s);
}

static void
tokens_get(http_request *req, struct api_req *ar)
{
    tokens_validate(req, ar, false);
}

static void
tokens_head(http_request *req, struct api_req *ar)
{
    tokens_validate(req, ar, true);
}

static void
revoked_done(http_request *req, int status, void *arg)
{
    if (status < 0) {
        api_db_error(req, status, NULL);
        return;
    }
    (void)http_respond(req, 204, NULL, NULL, 0);
}

static void
tokens_delete(http_request *req, struct api_req *ar)
{
    struct subject *s = load_subject(req, ar, "identity:revoke_token");
    if (!s)
        return;
    /* Revoking by audit id takes the token and every token re-scoped from
     * it; the in-memory list learns it at once, other processes by NOTIFY. */
    if (auth_verifier_revoke(identity_of(ar)->verifier, "audit", s->tok.audit_id, now_s()) < 0)
        log_warn("identity", "revocation list full: relying on the stored event");
    identity_revoke(req, "audit", s->tok.audit_id, revoked_done, NULL);
}

struct revoke_op {
    http_request *req;
    void (*cb)(http_request *req, int status, void *arg);
    void *arg;
};

static void
revoke_stored(int status, db_result *res, const struct db_error *err, void *arg)
{
    struct revoke_op *op = arg;
    op->cb(op->req, status, op->arg);
}

void
identity_revoke(http_request *req, const char *kind, const char *value,
                void (*cb)(http_request *req, int status, void *arg), void *arg)
{
    struct api_req *ar = api_req(req);
    struct identity *id = identity_of(ar);
    struct arena *mem = http_req_arena(req);
    struct revoke_op *op = arena_alloc(mem, sizeof *op);
    op->req = req;
    op->cb = cb;
    op->arg = arg;
    const char **p = arena_alloc(mem, 3 * sizeof *p);
    p[0] = kind;
    p[1] = arena_strdup(mem, value);
    p[2] = arena_printf(mem, "%lld", (long long)id->token_ttl);
    int rc = db_query(ar->api->db,
                      "INSERT INTO revocation_events (kind, value, expires_at) "
                      "VALUES ($1, $2, now() + make_interval(secs => $3::bigint))",
                      3, p, revoke_stored, op);
    if (rc < 0)
        cb(req, rc, arg);
}

/* ---- /v3/auth/catalog, /v3/auth/projects, /v3/auth/domains */

static void
auth_catalog(http_request *req, struct api_req *ar)
{
    if (api_authenticate(req, ar) < 0)
        return;
    struct identity *id = identity_of(ar);
    api_reply_json(req, 200, json_pack("{s:O,s:o}", "catalog",
                                       id->catalog ? id->catalog : json_array(),
                                       "links", identity_list_links(req, "auth/catalog")));
}

static void
auth_projects_rows(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    json_t *list = json_array();
    for (int i = 0; i < db_rows(res); i++) {
        const char *pid = db_get(res, i, 0);
        json_array_append_new(list, json_pack("{s:s,s:s,s:s,s:b,s:s,s:o}",
            "id", pid, "name", db_get(res, i, 1), "domain_id", db_get(res, i, 2),
            "enabled", !strcmp(db_get(res, i, 3), "t"),
            "description", db_get(res, i, 4),
            "links", identity_links(req, "projects", pid)));
    }
    api_reply_json(req, 200, json_pack("{s:o,s:o}", "projects", list, "links",
                                       identity_list_links(req, "auth/projects")));
}

static void
auth_projects(http_request *req, struct api_req *ar)
{
    if (api_authenticate(req, ar) < 0)
        return;
    const char **p = arena_alloc(http_req_arena(req), sizeof *p);
    p[0] = ar->token->user_id;
    api_query(req, "SELECT DISTINCT p.id, p.name, p.domain_id, p.enabled, p.description"
                   " FROM projects p JOIN role_assignments ra ON ra.target_type = 'project'"
                   " AND ra.target_id = p.id WHERE ra.user_id = $1 AND p.enabled ORDER BY p.name",
              1, p, auth_projects_rows, NULL);
}

static void
auth_domains_rows(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    json_t *list = json_array();
    for (int i = 0; i < db_rows(res); i++) {
        const char *did = db_get(res, i, 0);
        json_array_append_new(list, json_pack("{s:s,s:s,s:b,s:s,s:o}",
            "id", did, "name", db_get(res, i, 1), "enabled", !strcmp(db_get(res, i, 2), "t"),
            "description", db_get(res, i, 3), "links", identity_links(req, "domains", did)));
    }
    api_reply_json(req, 200, json_pack("{s:o,s:o}", "domains", list, "links",
                                       identity_list_links(req, "auth/domains")));
}

static void
auth_domains(http_request *req, struct api_req *ar)
{
    if (api_authenticate(req, ar) < 0)
        return;
    const char **p = arena_alloc(http_req_arena(req), sizeof *p);
    p[0] = ar->token->user_id;
    api_query(req, "SELECT DISTINCT d.id, d.name, d.enabled, d.description"
                   " FROM domains d JOIN role_assignments ra ON ra.target_type = 'domain'"
                   " AND ra.target_id = d.id WHERE ra.user_id = $1 AND d.enabled ORDER BY d.name",
              1, p, auth_domains_rows, NULL);
}

/* ---- Set-up. */

int
identity_init(struct api *a)
{
    struct identity *id = calloc(1, sizeof *id);
    if (!id)
        return -ENOMEM;
    id->api = a;
    a->identity = id;
    id->token_ttl = conf_int(a->conf, "identity", "token_expiration");
    int rc = auth_init();
    if (rc < 0) {
        log_error("identity", "cannot initialise the crypto library");
        return rc;
    }
    const char *dir = conf_str(a->conf, "identity", "key_dir");
    const char *why = NULL;
    rc = auth_verifier_new(a->loop, a->db, dir, (long)id->token_ttl, &id->verifier, &why);
    if (rc < 0) {
        log_error("identity", "%s (%s): %s%s", why ? why : "token verifier", dir,
                  strerror(-rc), rc == -ENOENT ? " (run 'nimbus-manage keys setup')" : "");
        return rc;
    }
    struct auth_password_params pp = {
        .opslimit = (unsigned long long)conf_int(a->conf, "identity", "password_opslimit"),
        .memlimit = (size_t)conf_int(a->conf, "identity", "password_memlimit_kib") * 1024u,
    };
    if ((rc = auth_password_new(&pp, &id->hasher)) < 0) {
        log_error("identity", "bad password hashing parameters");
        return rc;
    }
    struct auth_ratelimit_config rl = {
        .user_limit = (unsigned)conf_int(a->conf, "identity", "max_failed_logins_per_user"),
        .addr_limit = (unsigned)conf_int(a->conf, "identity", "max_failed_logins_per_address"),
        .window_seconds = (unsigned)conf_int(a->conf, "identity", "failed_login_window"),
    };
    if ((rc = auth_ratelimit_new(&rl, &id->login_limit)) < 0)
        return rc;
    if ((rc = db_listen(a->db, "nimbus_catalog", on_catalog_change,
                        on_catalog_reconnect, id)) < 0)
        return rc;
    id->names = json_object();
    id->scopes = json_object();
    if ((rc = db_listen(a->db, "nimbus_names", on_names_change,
                        on_names_reconnect, id)) < 0)
        return rc;
    uv_timer_init(a->loop, &id->retry_timer);
    id->retry_timer.data = id;
    uv_timer_start(&id->retry_timer, retry_loads, 0, 100);
    uv_unref((uv_handle_t *)&id->retry_timer);
    return 0;
}

int
identity_reload_keys(struct api *a)
{
    return auth_verifier_reload_keys(a->identity->verifier);
}

bool
identity_ready(const struct api *a)
{
    const struct identity *id = a->identity;
    return id && id->catalog && auth_verifier_ready(id->verifier);
}

void
identity_stop(struct api *a)
{
    struct identity *id = a->identity;
    if (!id)
        return;
    auth_verifier_stop(id->verifier);
    if (uv_is_active((uv_handle_t *)&id->retry_timer))
        uv_close((uv_handle_t *)&id->retry_timer, NULL);
}

void
identity_free(struct api *a)
{
    struct identity *id = a->identity;
    if (!id)
        return;
    auth_verifier_free(id->verifier);
    auth_password_free(id->hasher);
    auth_ratelimit_free(id->login_limit);
    json_decref(id->catalog);
    json_decref(id->names);
    json_decref(id->scopes);
    free(id->catalog_text);
    free(id);
    a->identity = NULL;
}

void
identity_register(struct api *a)
{
    api_route(a, API_IDENTITY, "POST", "/v3/auth/tokens", tokens_post);
    api_route(a, API_IDENTITY, "GET", "/v3/auth/tokens", tokens_get);
    api_route(a, API_IDENTITY, "HEAD", "/v3/auth/tokens", tokens_head);
    api_route(a, API_IDENTITY, "DELETE", "/v3/auth/tokens", tokens_delete);
    api_route(a, API_IDENTITY, "GET", "/v3/auth/catalog", auth_catalog);
    api_route(a, API_IDENTITY, "GET", "/v3/auth/projects", auth_projects);
    api_route(a, API_IDENTITY, "GET", "/v3/auth/domains", auth_domains);
    identity_admin_register(a);
}
