/* Identity administration (Keystone v3): domains, projects, users, roles,
 * role assignments, regions, services and endpoints.
 *
 * PostgreSQL builds each resource's JSON (json_build_object), with the
 * links made from the base URL passed as $1, so a handler is one
 * parameterised statement and a wrapper.  Changes that must end existing
 * tokens (deleting or disabling a user or project, removing a role
 * assignment, changing a password) write their revocation event in the same
 * statement. */
#include "identity.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "auth_password.h"
#include "log.h"
#include "util.h"

/* Longest name or description accepted, in bytes (Keystone's columns). */
#define NAME_MAX_LEN 255
#define DESC_MAX_LEN 65535

/* ---- Answer helpers. */

struct wrap {
    const char *key;               /* "project", "projects"... */
    const char *collection;        /* URL collection for list links. */
    int status;
    const char *missing;           /* 404 message. */
};

static void
reply_one(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    const struct wrap *w = ctx;
    if (db_rows(res) < 1 || !db_get(res, 0, 0)) {
        api_error(req, 404, "%s", w->missing);
        return;
    }
    if (w->status == 204) {
        (void)http_respond(req, 204, NULL, NULL, 0);
        return;
    }
    char *out = arena_printf(http_req_arena(req), "{\"%s\":%s}", w->key, db_get(res, 0, 0));
    (void)http_respond(req, w->status, "application/json", out, strlen(out));
}

static void
reply_list(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    const struct wrap *w = ctx;
    const char *base = api_base_url(req, API_IDENTITY);
    char *out = arena_printf(http_req_arena(req),
                             "{\"%s\":%s,\"links\":{\"self\":\"%s/v3/%s\",\"previous\":null,\"next\":null}}",
                             w->key, db_get(res, 0, 0), base, w->collection);
    (void)http_respond(req, 200, "application/json", out, strlen(out));
}

static const char **
params(http_request *req, int n)
{
    const char **p = arena_zalloc(http_req_arena(req), (size_t)n * sizeof *p);
    p[0] = api_base_url(req, API_IDENTITY);
    return p;
}

static const char *
dup_or_null(http_request *req, const char *s)
{
    return s ? arena_strdup(http_req_arena(req), s) : NULL;
}

/* Reads an optional string member; answers 400 and returns -EINVAL when it
 * is present but not a string or too long. */
static int
opt_str(http_request *req, json_t *o, const char *key, size_t max, const char **out)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || strlen(json_string_value(v)) > max) {
        api_error(req, 400, "Invalid input for field '%s': expected a string of at "
                  "most %zu characters.", key, max);
        return -EINVAL;
    }
    *out = dup_or_null(req, json_string_value(v));
    return 0;
}

static int
opt_bool(http_request *req, json_t *o, const char *key, const char **out)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v)) {
        api_error(req, 400, "Invalid input for field '%s': expected a boolean.", key);
        return -EINVAL;
    }
    *out = json_is_true(v) ? "true" : "false";
    return 0;
}

/* The resource object of a body {"<key>": {...}}; answers 400 if absent. */
static json_t *
body_object(http_request *req, json_t *body, const char *key)
{
    json_t *o = json_object_get(body, key);
    if (!json_is_object(o)) {
        api_error(req, 400, "Expecting to find %s in the request body.", key);
        return NULL;
    }
    return o;
}

static int
auth_and_check(http_request *req, struct api_req *ar, const char *op,
               const char *project_id, const char *user_id)
{
    if (api_authenticate(req, ar) < 0)
        return -EACCES;
    return api_authorize(req, ar, op, project_id, user_id);
}

/* GET or DELETE of one resource by its {id}: the policy check, then 'sql'
 * with $1 the base URL and $2 the id, answered through 'w'. */
static void
by_id(http_request *req, struct api_req *ar, const char *op, const char *sql,
      const struct wrap *w)
{
    if (auth_and_check(req, ar, op, NULL, NULL) < 0)
        return;
    const char **p = params(req, 2);
    p[1] = http_req_param(req, "id");
    api_query(req, sql, 2, p, reply_one, (void *)w);
}

/* A filter value from the query string, or NULL. */
static const char *
qp(http_request *req, const char *name)
{
    const char *v = http_req_query_param(req, name);
    return v && strlen(v) <= NAME_MAX_LEN ? v : NULL;
}

static const char *
qbool(http_request *req, const char *name)
{
    const char *v = http_req_query_param(req, name);
    if (!v)
        return NULL;
    return (!strcasecmp(v, "false") || !strcmp(v, "0")) ? "false" : "true";
}

static const char *
new_id(http_request *req)
{
    char *id = arena_alloc(http_req_arena(req), 33);
    util_uuid4_hex(id);
    return id;
}

static const char *
ttl_param(http_request *req, struct api_req *ar)
{
    return arena_printf(http_req_arena(req), "%lld", (long long)identity_of(ar)->token_ttl);
}

/* ---- Domains. */

#define DOMAIN_JSON \
    "json_build_object('id', d.id, 'name', d.name, 'description', d.description," \
    " 'enabled', d.enabled, 'tags', '[]'::json, 'options', '{}'::json," \
    " 'links', json_build_object('self', $1 || '/v3/domains/' || d.id))"

static const struct wrap w_domain = { "domain", "domains", 200, "Could not find domain." };
static const struct wrap w_domain_new = { "domain", "domains", 201, "Could not find domain." };
static const struct wrap w_domains = { "domains", "domains", 200, NULL };

static void
domains_list(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:list_domains", NULL, NULL) < 0)
        return;
    const char **p = params(req, 3);
    p[1] = qp(req, "name");
    p[2] = qbool(req, "enabled");
    api_query(req, "SELECT coalesce(json_agg(" DOMAIN_JSON " ORDER BY d.name), '[]')"
                   " FROM domains d WHERE ($2::text IS NULL OR d.name = $2)"
                   " AND ($3::boolean IS NULL OR d.enabled = $3)", 3, p, reply_list,
              (void *)&w_domains);
}

static void
domains_get(http_request *req, struct api_req *ar)
{
    by_id(req, ar, "identity:get_domain",
          "SELECT " DOMAIN_JSON " FROM domains d WHERE d.id = $2",
          &w_domain);
}

static void
domains_create(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:create_domain", NULL, NULL) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *o = body_object(req, body, "domain");
    if (!o)
        goto out;
    const char **p = params(req, 5);
    p[1] = new_id(req);
    if (opt_str(req, o, "name", NAME_MAX_LEN, &p[2]) < 0 ||
        opt_str(req, o, "description", DESC_MAX_LEN, &p[3]) < 0 ||
        opt_bool(req, o, "enabled", &p[4]) < 0)
        goto out;
    if (!p[2] || !*p[2]) {
        api_error(req, 400, "A domain needs a name.");
        goto out;
    }
    api_query(req, "WITH d AS (INSERT INTO domains (id, name, description, enabled)"
                   " VALUES ($2, $3, coalesce($4, ''), coalesce($5::boolean, true)) RETURNING *)"
                   " SELECT " DOMAIN_JSON " FROM d", 5, p, reply_one, (void *)&w_domain_new);
out:
    json_decref(body);
}

static void
domains_update(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:update_domain", NULL, NULL) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *o = body_object(req, body, "domain");
    if (!o)
        goto out;
    const char **p = params(req, 5);
    p[1] = http_req_param(req, "id");
    if (opt_str(req, o, "name", NAME_MAX_LEN, &p[2]) < 0 ||
        opt_str(req, o, "description", DESC_MAX_LEN, &p[3]) < 0 ||
        opt_bool(req, o, "enabled", &p[4]) < 0)
        goto out;
    api_query(req, "WITH d AS (UPDATE domains SET name = coalesce($3, name),"
                   " description = coalesce($4, description), enabled = coalesce($5::boolean, enabled)"
                   " WHERE id = $2 RETURNING *) SELECT " DOMAIN_JSON " FROM d", 5, p,
              reply_one, (void *)&w_domain);
out:
    json_decref(body);
}

static void
domain_delete_row(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    if (db_rows(res) < 1) {
        api_error(req, 404, "Could not find domain.");
        return;
    }
    const char *state = db_get(res, 0, 0);
    if (!strcmp(state, "enabled")) {
        api_error(req, 403, "Cannot delete a domain that is enabled; disable it first.");
        return;
    }
    if (!strcmp(state, "in_use")) {
        api_error(req, 409, "The domain still owns projects or users.");
        return;
    }
    (void)http_respond(req, 204, NULL, NULL, 0);
}

static void
domains_delete(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:delete_domain", NULL, NULL) < 0)
        return;
    const char **p = params(req, 2);
    p[1] = http_req_param(req, "id");
    if (!strcmp(p[1], "default")) {
        api_error(req, 403, "The default domain cannot be deleted.");
        return;
    }
    api_query(req, "WITH d AS (SELECT id, enabled,"
                   "  EXISTS (SELECT 1 FROM projects WHERE domain_id = $2) OR"
                   "  EXISTS (SELECT 1 FROM users WHERE domain_id = $2) AS in_use"
                   "  FROM domains WHERE id = $2 AND $1::text IS NOT NULL),"
                   " del AS (DELETE FROM domains WHERE id IN"
                   "  (SELECT id FROM d WHERE NOT enabled AND NOT in_use) RETURNING id),"
                   " ra AS (DELETE FROM role_assignments WHERE target_type = 'domain'"
                   "  AND target_id IN (SELECT id FROM del))"
                   " SELECT CASE WHEN enabled THEN 'enabled' WHEN in_use THEN 'in_use'"
                   " ELSE 'deleted' END FROM d", 2, p, domain_delete_row, NULL);
}

/* ---- Projects. */

#define PROJECT_JSON \
    "json_build_object('id', p.id, 'name', p.name, 'domain_id', p.domain_id," \
    " 'description', p.description, 'enabled', p.enabled," \
    " 'parent_id', coalesce(p.parent_id, p.domain_id), 'is_domain', false," \
    " 'tags', to_json(p.tags), 'options', '{}'::json," \
    " 'links', json_build_object('self', $1 || '/v3/projects/' || p.id))"

static const struct wrap w_project = { "project", "projects", 200, "Could not find project." };
static const struct wrap w_project_new = { "project", "projects", 201, "Could not find project." };
static const struct wrap w_projects = { "projects", "projects", 200, NULL };
static const struct wrap w_project_gone = { "project", "projects", 204, "Could not find project." };

static void
projects_list(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:list_projects", NULL, NULL) < 0)
        return;
    const char **p = params(req, 5);
    p[1] = qp(req, "name");
    p[2] = qp(req, "domain_id");
    p[3] = qbool(req, "enabled");
    p[4] = qp(req, "parent_id");
    api_query(req, "SELECT coalesce(json_agg(" PROJECT_JSON " ORDER BY p.name), '[]')"
                   " FROM projects p WHERE ($2::text IS NULL OR p.name = $2)"
                   " AND ($3::text IS NULL OR p.domain_id = $3)"
                   " AND ($4::boolean IS NULL OR p.enabled = $4)"
                   " AND ($5::text IS NULL OR coalesce(p.parent_id, p.domain_id) = $5)",
              5, p, reply_list, (void *)&w_projects);
}

static void
projects_get(http_request *req, struct api_req *ar)
{
    const char *pid = http_req_param(req, "id");
    if (auth_and_check(req, ar, "identity:get_project", pid, NULL) < 0)
        return;
    const char **p = params(req, 2);
    p[1] = pid;
    api_query(req, "SELECT " PROJECT_JSON " FROM projects p WHERE p.id = $2", 2, p,
              reply_one, (void *)&w_project);
}

/* Tags come as a JSON array of strings; passed to SQL as JSON text. */
static int
opt_tags(http_request *req, json_t *o, const char **out)
{
    json_t *v = json_object_get(o, "tags");
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    size_t i;
    json_t *t;
    bool ok = json_is_array(v) && json_array_size(v) <= 80;
    json_array_foreach(v, i, t) {
        if (!json_is_string(t) || json_string_length(t) > 60 || !json_string_length(t))
            ok = false;
    }
    if (!ok) {
        api_error(req, 400, "Invalid input for field 'tags': expected at most 80 "
                  "strings of 1 to 60 characters.");
        return -EINVAL;
    }
    char *text = json_dumps(v, JSON_COMPACT);
    *out = arena_strdup(http_req_arena(req), text);
    free(text);
    return 0;
}

static void
projects_create(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:create_project", NULL, NULL) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *o = body_object(req, body, "project");
    if (!o)
        goto out;
    const char **p = params(req, 8);
    p[1] = new_id(req);
    if (opt_str(req, o, "name", 64, &p[2]) < 0 ||
        opt_str(req, o, "domain_id", 64, &p[3]) < 0 ||
        opt_str(req, o, "description", DESC_MAX_LEN, &p[4]) < 0 ||
        opt_bool(req, o, "enabled", &p[5]) < 0 || opt_tags(req, o, &p[6]) < 0 ||
        opt_str(req, o, "parent_id", 64, &p[7]) < 0)
        goto out;
    if (!p[2] || !*p[2]) {
        api_error(req, 400, "A project needs a name.");
        goto out;
    }
    if (json_is_true(json_object_get(o, "is_domain"))) {
        api_error(req, 400, "Projects acting as domains are not supported.");
        goto out;
    }
    /* A parent given as the domain itself means a top-level project. */
    api_query(req, "WITH p AS (INSERT INTO projects (id, name, domain_id, description, enabled, tags, parent_id)"
                   " VALUES ($2, $3, coalesce($4, 'default'), coalesce($5, ''),"
                   " coalesce($6::boolean, true),"
                   " coalesce(ARRAY(SELECT json_array_elements_text($7::json)), '{}'),"
                   " (SELECT id FROM projects WHERE id = $8)) RETURNING *)"
                   " SELECT " PROJECT_JSON " FROM p", 8, p, reply_one, (void *)&w_project_new);
out:
    json_decref(body);
}

static void
projects_update(http_request *req, struct api_req *ar)
{
    const char *pid = http_req_param(req, "id");
    if (auth_and_check(req, ar, "identity:update_project", NULL, NULL) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *o = body_object(req, body, "project");
    if (!o)
        goto out;
    const char **p = params(req, 7);
    p[1] = pid;
    p[6] = ttl_param(req, ar);
    if (opt_str(req, o, "name", 64, &p[2]) < 0 ||
        opt_str(req, o, "description", DESC_MAX_LEN, &p[3]) < 0 ||
        opt_bool(req, o, "enabled", &p[4]) < 0 || opt_tags(req, o, &p[5]) < 0)
        goto out;
    api_query(req, "WITH p AS (UPDATE projects SET name = coalesce($3, name),"
                   " description = coalesce($4, description),"
                   " enabled = coalesce($5::boolean, enabled),"
                   " tags = CASE WHEN $6::text IS NULL THEN tags"
                   "   ELSE ARRAY(SELECT json_array_elements_text($6::json)) END"
                   " WHERE id = $2 RETURNING *),"
                   " rv AS (INSERT INTO revocation_events (kind, value, expires_at)"
                   "  SELECT 'project', id, now() + make_interval(secs => $7::bigint)"
                   "  FROM p WHERE NOT enabled)"
                   " SELECT " PROJECT_JSON " FROM p", 7, p, reply_one, (void *)&w_project);
out:
    json_decref(body);
}

static void
projects_delete(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:delete_project", NULL, NULL) < 0)
        return;
    const char **p = params(req, 3);
    p[1] = http_req_param(req, "id");
    p[2] = ttl_param(req, ar);
    api_query(req, "WITH d AS (DELETE FROM projects WHERE id = $2 AND $1::text IS NOT NULL RETURNING id),"
                   " ra AS (DELETE FROM role_assignments WHERE target_type = 'project'"
                   "  AND target_id IN (SELECT id FROM d)),"
                   " rv AS (INSERT INTO revocation_events (kind, value, expires_at)"
                   "  SELECT 'project', id, now() + make_interval(secs => $3::bigint) FROM d)"
                   " SELECT id FROM d", 3, p, reply_one, (void *)&w_project_gone);
}

/* ---- Users.  Passwords are hashed on the thread pool before the write. */

#define USER_JSON \
    "(jsonb_build_object('id', u.id, 'name', u.name, 'domain_id', u.domain_id," \
    " 'enabled', u.enabled, 'password_expires_at', u.password_expires_at," \
    " 'options', '{}'::jsonb," \
    " 'links', jsonb_build_object('self', $1 || '/v3/users/' || u.id))" \
    " || jsonb_strip_nulls(jsonb_build_object('email', u.email," \
    " 'description', u.description, 'default_project_id', u.default_project_id)))"

static const struct wrap w_user = { "user", "users", 200, "Could not find user." };
static const struct wrap w_user_new = { "user", "users", 201, "Could not find user." };
static const struct wrap w_users = { "users", "users", 200, NULL };
static const struct wrap w_user_gone = { "user", "users", 204, "Could not find user." };

static void
users_list(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:list_users", NULL, NULL) < 0)
        return;
    const char **p = params(req, 4);
    p[1] = qp(req, "name");
    p[2] = qp(req, "domain_id");
    p[3] = qbool(req, "enabled");
    api_query(req, "SELECT coalesce(json_agg(" USER_JSON " ORDER BY u.name), '[]')"
                   " FROM users u WHERE ($2::text IS NULL OR u.name = $2)"
                   " AND ($3::text IS NULL OR u.domain_id = $3)"
                   " AND ($4::boolean IS NULL OR u.enabled = $4)", 4, p, reply_list,
              (void *)&w_users);
}

static void
users_get(http_request *req, struct api_req *ar)
{
    const char *uid = http_req_param(req, "id");
    if (auth_and_check(req, ar, "identity:get_user", NULL, uid) < 0)
        return;
    const char **p = params(req, 2);
    p[1] = uid;
    api_query(req, "SELECT " USER_JSON " FROM users u WHERE u.id = $2", 2, p,
              reply_one, (void *)&w_user);
}

/* A write that first hashes a password off the loop. */
struct user_write {
    http_request *req;
    const char *sql;
    const char **p;
    int np;
    int hash_index;                /* Parameter receiving the hash. */
    const char *password;
    int rc;
    const struct wrap *wrap;
    struct auth_password *hasher;
    uv_work_t work;
};

static void
hash_work(uv_work_t *w)
{
    struct user_write *uw = w->data;
    char *out = arena_alloc(http_req_arena(uw->req), AUTH_PASSWORD_HASH_SIZE);
    uw->rc = auth_password_hash(uw->hasher, uw->password, strlen(uw->password), out);
    uw->p[uw->hash_index] = out;
}

static void
hash_done(uv_work_t *w, int status)
{
    struct user_write *uw = w->data;
    if (status < 0 || uw->rc < 0) {
        api_error(uw->req, 400, "The password cannot be used (empty or longer than %d bytes).",
                  AUTH_PASSWORD_MAX);
        return;
    }
    api_query(uw->req, uw->sql, uw->np, uw->p, reply_one, (void *)uw->wrap);
}

static void
user_write(http_request *req, struct api_req *ar, const char *sql, const char **p,
           int np, int hash_index, const char *password, const struct wrap *wrap)
{
    if (!password) {
        api_query(req, sql, np, p, reply_one, (void *)wrap);
        return;
    }
    if (!*password || strlen(password) > AUTH_PASSWORD_MAX) {
        api_error(req, 400, "The password cannot be used (empty or longer than %d bytes).",
                  AUTH_PASSWORD_MAX);
        return;
    }
    struct user_write *uw = arena_zalloc(http_req_arena(req), sizeof *uw);
    uw->req = req;
    uw->sql = sql;
    uw->p = p;
    uw->np = np;
    uw->hash_index = hash_index;
    uw->password = password;
    uw->wrap = wrap;
    uw->hasher = identity_of(ar)->hasher;
    uw->work.data = uw;
    if (uv_queue_work(ar->api->loop, &uw->work, hash_work, hash_done) < 0)
        api_error(req, 500, "Cannot hash the password.");
}

static void
users_create(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:create_user", NULL, NULL) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *o = body_object(req, body, "user");
    if (!o)
        goto out;
    const char **p = params(req, 9);
    const char *password = NULL;
    p[1] = new_id(req);
    if (opt_str(req, o, "name", NAME_MAX_LEN, &p[2]) < 0 ||
        opt_str(req, o, "domain_id", 64, &p[3]) < 0 ||
        opt_bool(req, o, "enabled", &p[5]) < 0 ||
        opt_str(req, o, "email", NAME_MAX_LEN, &p[6]) < 0 ||
        opt_str(req, o, "description", DESC_MAX_LEN, &p[7]) < 0 ||
        opt_str(req, o, "default_project_id", 64, &p[8]) < 0 ||
        opt_str(req, o, "password", AUTH_PASSWORD_MAX, &password) < 0)
        goto out;
    if (!p[2] || !*p[2]) {
        api_error(req, 400, "A user needs a name.");
        goto out;
    }
    user_write(req, ar,
               "WITH u AS (INSERT INTO users (id, name, domain_id, password_hash, enabled,"
               " email, description, default_project_id) VALUES ($2, $3, coalesce($4, 'default'),"
               " $5::text, coalesce($6::boolean, true), $7, $8, $9) RETURNING *)"
               " SELECT " USER_JSON " FROM u",
               p, 9, 4, password, &w_user_new);
out:
    json_decref(body);
}

static void
users_update(http_request *req, struct api_req *ar)
{
    const char *uid = http_req_param(req, "id");
    if (auth_and_check(req, ar, "identity:update_user", NULL, NULL) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *o = body_object(req, body, "user");
    if (!o)
        goto out;
    const char **p = params(req, 10);
    const char *password = NULL;
    p[1] = uid;
    p[8] = "";
    p[9] = ttl_param(req, ar);
    if (opt_str(req, o, "name", NAME_MAX_LEN, &p[2]) < 0 ||
        opt_bool(req, o, "enabled", &p[4]) < 0 ||
        opt_str(req, o, "email", NAME_MAX_LEN, &p[5]) < 0 ||
        opt_str(req, o, "description", DESC_MAX_LEN, &p[6]) < 0 ||
        opt_str(req, o, "default_project_id", 64, &p[7]) < 0 ||
        opt_str(req, o, "password", AUTH_PASSWORD_MAX, &password) < 0)
        goto out;
    /* A new password or disabling the user ends the user's tokens. */
    user_write(req, ar,
               "WITH u AS (UPDATE users SET name = coalesce($3, name),"
               " password_hash = coalesce($4, password_hash),"
               " enabled = coalesce($5::boolean, enabled), email = coalesce($6, email),"
               " description = coalesce($7, description),"
               " default_project_id = coalesce($8, default_project_id)"
               " WHERE id = $2 AND $9::text IS NOT NULL RETURNING *),"
               " rv AS (INSERT INTO revocation_events (kind, value, expires_at)"
               "  SELECT 'user', id, now() + make_interval(secs => $10::bigint)"
               "  FROM u WHERE NOT enabled OR $4::text IS NOT NULL)"
               " SELECT " USER_JSON " FROM u",
               p, 10, 3, password, &w_user);
out:
    json_decref(body);
}

static void
users_delete(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:delete_user", NULL, NULL) < 0)
        return;
    const char **p = params(req, 3);
    p[1] = http_req_param(req, "id");
    p[2] = ttl_param(req, ar);
    api_query(req, "WITH d AS (DELETE FROM users WHERE id = $2 AND $1::text IS NOT NULL RETURNING id),"
                   " rv AS (INSERT INTO revocation_events (kind, value, expires_at)"
                   "  SELECT 'user', id, now() + make_interval(secs => $3::bigint) FROM d)"
                   " SELECT id FROM d", 3, p, reply_one, (void *)&w_user_gone);
}

/* POST /v3/users/{id}/password: a user changes their own password, giving
 * the old one. */
struct pw_change {
    http_request *req;
    const char *user_id, *original, *password;
    const char *stored;
    int rc;
    uv_work_t work;
};

static const struct wrap w_pw_done = { "user", "users", 204, "Could not find user." };

static void
pw_verify_work(uv_work_t *w)
{
    struct pw_change *pc = w->data;
    pc->rc = pc->stored ? auth_password_verify(pc->stored, pc->original, strlen(pc->original))
                        : -EACCES;
}

static void
pw_verify_done(uv_work_t *w, int status)
{
    struct pw_change *pc = w->data;
    http_request *req = pc->req;
    struct api_req *ar = api_req(req);
    if (status < 0 || pc->rc < 0) {
        api_error(req, 401, "The original password is not correct.");
        return;
    }
    const char **p = params(req, 4);
    p[1] = pc->user_id;
    p[3] = ttl_param(req, ar);
    user_write(req, ar,
               "WITH u AS (UPDATE users SET password_hash = $3 WHERE id = $2 AND $1::text IS NOT NULL"
               " RETURNING id),"
               " rv AS (INSERT INTO revocation_events (kind, value, expires_at)"
               "  SELECT 'user', id, now() + make_interval(secs => $4::bigint) FROM u)"
               " SELECT id FROM u", p, 4, 2, pc->password, &w_pw_done);
}

static void
pw_row(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    struct pw_change *pc = ctx;
    pc->stored = db_rows(res) == 1 ? dup_or_null(req, db_get(res, 0, 0)) : NULL;
    pc->work.data = pc;
    if (uv_queue_work(ar->api->loop, &pc->work, pw_verify_work, pw_verify_done) < 0)
        api_error(req, 500, "Cannot check the password.");
}

static void
users_password(http_request *req, struct api_req *ar)
{
    const char *uid = http_req_param(req, "id");
    if (auth_and_check(req, ar, "identity:change_password", NULL, uid) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *o = body_object(req, body, "user");
    if (!o)
        goto out;
    struct pw_change *pc = arena_zalloc(http_req_arena(req), sizeof *pc);
    pc->req = req;
    pc->user_id = uid;
    if (opt_str(req, o, "password", AUTH_PASSWORD_MAX, &pc->password) < 0 ||
        opt_str(req, o, "original_password", AUTH_PASSWORD_MAX, &pc->original) < 0)
        goto out;
    if (!pc->password || !pc->original) {
        api_error(req, 400, "Expecting user.password and user.original_password.");
        goto out;
    }
    const char **p = arena_zalloc(http_req_arena(req), sizeof *p);
    p[0] = uid;
    api_query(req, "SELECT password_hash FROM users WHERE id = $1", 1, p, pw_row, pc);
out:
    json_decref(body);
}

/* ---- Roles. */

#define ROLE_JSON \
    "(jsonb_build_object('id', r.id, 'name', r.name, 'domain_id', NULL, 'options', '{}'::jsonb," \
    " 'links', jsonb_build_object('self', $1 || '/v3/roles/' || r.id))" \
    " || jsonb_strip_nulls(jsonb_build_object('description', r.description)))"

static const struct wrap w_role = { "role", "roles", 200, "Could not find role." };
static const struct wrap w_role_new = { "role", "roles", 201, "Could not find role." };
static const struct wrap w_roles = { "roles", "roles", 200, NULL };
static const struct wrap w_role_gone = { "role", "roles", 204, "Could not find role." };

static void
roles_list(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:list_roles", NULL, NULL) < 0)
        return;
    const char **p = params(req, 2);
    p[1] = qp(req, "name");
    api_query(req, "SELECT coalesce(json_agg(" ROLE_JSON " ORDER BY r.name), '[]')"
                   " FROM roles r WHERE ($2::text IS NULL OR r.name = $2)", 2, p,
              reply_list, (void *)&w_roles);
}

static void
roles_get(http_request *req, struct api_req *ar)
{
    by_id(req, ar, "identity:get_role",
          "SELECT " ROLE_JSON " FROM roles r WHERE r.id = $2",
          &w_role);
}

static void
roles_create(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:create_role", NULL, NULL) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *o = body_object(req, body, "role");
    if (!o)
        goto out;
    const char **p = params(req, 4);
    p[1] = new_id(req);
    if (opt_str(req, o, "name", NAME_MAX_LEN, &p[2]) < 0 ||
        opt_str(req, o, "description", DESC_MAX_LEN, &p[3]) < 0)
        goto out;
    if (!p[2] || !*p[2]) {
        api_error(req, 400, "A role needs a name.");
        goto out;
    }
    api_query(req, "WITH r AS (INSERT INTO roles (id, name, description) VALUES ($2, $3, $4)"
                   " RETURNING *) SELECT " ROLE_JSON " FROM r", 4, p, reply_one,
              (void *)&w_role_new);
out:
    json_decref(body);
}

static void
roles_delete(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:delete_role", NULL, NULL) < 0)
        return;
    const char **p = params(req, 3);
    p[1] = http_req_param(req, "id");
    p[2] = ttl_param(req, ar);
    /* Everyone who held the role loses the tokens that carry it. */
    api_query(req, "WITH holders AS (SELECT DISTINCT user_id FROM role_assignments WHERE role_id = $2),"
                   " d AS (DELETE FROM roles WHERE id = $2 AND $1::text IS NOT NULL RETURNING id),"
                   " rv AS (INSERT INTO revocation_events (kind, value, expires_at)"
                   "  SELECT 'user', user_id, now() + make_interval(secs => $3::bigint)"
                   "  FROM holders WHERE EXISTS (SELECT 1 FROM d))"
                   " SELECT id FROM d", 3, p, reply_one, (void *)&w_role_gone);
}

/* ---- Role assignments. */

static const char *
target_type(http_request *req)
{
    return strncmp(http_req_path(req), "/v3/domains/", 12) ? "project" : "domain";
}

static void
grant_row(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    const char *what = db_get(res, 0, 0);
    if (strcmp(what, "ok")) {
        api_error(req, 404, "Could not find %s.", what);
        return;
    }
    (void)http_respond(req, 204, NULL, NULL, 0);
}

static void
grant_put(http_request *req, struct api_req *ar)
{
    const char *type = target_type(req);
    if (auth_and_check(req, ar, "identity:add_role_assignment", NULL, NULL) < 0)
        return;
    const char **p = arena_zalloc(http_req_arena(req), 4 * sizeof *p);
    p[0] = http_req_param(req, "user");
    p[1] = type;
    p[2] = http_req_param(req, "target");
    p[3] = http_req_param(req, "role");
    api_query(req, "WITH chk AS (SELECT CASE"
                   "  WHEN NOT EXISTS (SELECT 1 FROM users WHERE id = $1) THEN 'user'"
                   "  WHEN $2 = 'project' AND NOT EXISTS (SELECT 1 FROM projects WHERE id = $3) THEN 'project'"
                   "  WHEN $2 = 'domain' AND NOT EXISTS (SELECT 1 FROM domains WHERE id = $3) THEN 'domain'"
                   "  WHEN NOT EXISTS (SELECT 1 FROM roles WHERE id = $4) THEN 'role'"
                   "  ELSE 'ok' END AS what),"
                   " ins AS (INSERT INTO role_assignments (user_id, target_type, target_id, role_id)"
                   "  SELECT $1, $2, $3, $4 FROM chk WHERE what = 'ok' ON CONFLICT DO NOTHING)"
                   " SELECT what FROM chk", 4, p, grant_row, NULL);
}

static void
grant_check_row(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    if (db_rows(res) < 1) {
        api_error(req, 404, "Could not find role assignment.");
        return;
    }
    (void)http_respond(req, 204, NULL, NULL, 0);
}

static void
grant_get(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:check_grant", NULL, NULL) < 0)
        return;
    const char **p = arena_zalloc(http_req_arena(req), 4 * sizeof *p);
    p[0] = http_req_param(req, "user");
    p[1] = target_type(req);
    p[2] = http_req_param(req, "target");
    p[3] = http_req_param(req, "role");
    api_query(req, "SELECT 1 FROM role_assignments WHERE user_id = $1 AND target_type = $2"
                   " AND target_id = $3 AND role_id = $4", 4, p, grant_check_row, NULL);
}

static void
grant_delete(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:remove_role_assignment", NULL, NULL) < 0)
        return;
    const char **p = arena_zalloc(http_req_arena(req), 5 * sizeof *p);
    p[0] = http_req_param(req, "user");
    p[1] = target_type(req);
    p[2] = http_req_param(req, "target");
    p[3] = http_req_param(req, "role");
    p[4] = ttl_param(req, ar);
    api_query(req, "WITH d AS (DELETE FROM role_assignments WHERE user_id = $1 AND target_type = $2"
                   " AND target_id = $3 AND role_id = $4 RETURNING user_id),"
                   " rv AS (INSERT INTO revocation_events (kind, value, expires_at)"
                   "  SELECT 'user', user_id, now() + make_interval(secs => $5::bigint) FROM d)"
                   " SELECT 1 FROM d", 5, p, grant_check_row, NULL);
}

static void
grant_list(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:list_grants", NULL, NULL) < 0)
        return;
    const char **p = params(req, 4);
    p[1] = http_req_param(req, "user");
    p[2] = target_type(req);
    p[3] = http_req_param(req, "target");
    api_query(req, "SELECT coalesce(json_agg(" ROLE_JSON " ORDER BY r.name), '[]')"
                   " FROM roles r JOIN role_assignments ra ON ra.role_id = r.id"
                   " WHERE ra.user_id = $2 AND ra.target_type = $3 AND ra.target_id = $4",
              4, p, reply_list, (void *)&w_roles);
}

static const struct wrap w_assignments = { "role_assignments", "role_assignments", 200, NULL };

static void
assignments_list(http_request *req, struct api_req *ar)
{
    if (api_authenticate(req, ar) < 0)
        return;
    const char *user = qp(req, "user.id");
    /* Anyone may list their own assignments; everything else is admin's. */
    if (!user || strcmp(user, ar->token->user_id)) {
        if (api_authorize(req, ar, "identity:list_role_assignments", NULL, NULL) < 0)
            return;
    }
    const char **p = params(req, 6);
    p[1] = user;
    p[2] = qp(req, "scope.project.id");
    p[3] = qp(req, "scope.domain.id");
    p[4] = qp(req, "role.id");
    p[5] = http_req_query_param(req, "include_names") ? "true" : "false";
    api_query(req, "SELECT coalesce(json_agg(json_build_object("
                   "  'role', CASE WHEN $6::boolean THEN json_build_object('id', r.id, 'name', r.name)"
                   "          ELSE json_build_object('id', r.id) END,"
                   "  'user', CASE WHEN $6::boolean THEN json_build_object('id', u.id, 'name', u.name,"
                   "          'domain', json_build_object('id', ud.id, 'name', ud.name))"
                   "          ELSE json_build_object('id', u.id) END,"
                   "  'scope', json_build_object(ra.target_type, CASE"
                   "          WHEN NOT $6::boolean THEN json_build_object('id', ra.target_id)"
                   "          WHEN ra.target_type = 'project' THEN json_build_object('id', p.id,"
                   "            'name', p.name, 'domain', json_build_object('id', pd.id, 'name', pd.name))"
                   "          ELSE json_build_object('id', d.id, 'name', d.name) END),"
                   "  'links', json_build_object('assignment', $1 || '/v3/' || ra.target_type || 's/'"
                   "          || ra.target_id || '/users/' || u.id || '/roles/' || r.id))"
                   "  ORDER BY u.name, r.name), '[]')"
                   " FROM role_assignments ra JOIN roles r ON r.id = ra.role_id"
                   " JOIN users u ON u.id = ra.user_id JOIN domains ud ON ud.id = u.domain_id"
                   " LEFT JOIN projects p ON ra.target_type = 'project' AND p.id = ra.target_id"
                   " LEFT JOIN domains pd ON pd.id = p.domain_id"
                   " LEFT JOIN domains d ON ra.target_type = 'domain' AND d.id = ra.target_id"
                   " WHERE ($2::text IS NULL OR ra.user_id = $2)"
                   " AND ($3::text IS NULL OR (ra.target_type = 'project' AND ra.target_id = $3))"
                   " AND ($4::text IS NULL OR (ra.target_type = 'domain' AND ra.target_id = $4))"
                   " AND ($5::text IS NULL OR ra.role_id = $5)",
              6, p, reply_list, (void *)&w_assignments);
}

/* ---- Regions, services, endpoints. */

#define REGION_JSON \
    "json_build_object('id', g.id, 'description', g.description," \
    " 'parent_region_id', g.parent_region_id," \
    " 'links', json_build_object('self', $1 || '/v3/regions/' || g.id))"
#define SERVICE_JSON \
    "json_build_object('id', s.id, 'type', s.type, 'name', s.name," \
    " 'description', s.description, 'enabled', s.enabled," \
    " 'links', json_build_object('self', $1 || '/v3/services/' || s.id))"
#define ENDPOINT_JSON \
    "json_build_object('id', e.id, 'interface', e.interface, 'region', e.region_id," \
    " 'region_id', e.region_id, 'service_id', e.service_id, 'url', e.url," \
    " 'enabled', e.enabled," \
    " 'links', json_build_object('self', $1 || '/v3/endpoints/' || e.id))"

static const struct wrap w_region = { "region", "regions", 200, "Could not find region." };
static const struct wrap w_region_new = { "region", "regions", 201, "Could not find region." };
static const struct wrap w_regions = { "regions", "regions", 200, NULL };
static const struct wrap w_service = { "service", "services", 200, "Could not find service." };
static const struct wrap w_service_new = { "service", "services", 201, "Could not find service." };
static const struct wrap w_services = { "services", "services", 200, NULL };
static const struct wrap w_service_gone = { "service", "services", 204, "Could not find service." };
static const struct wrap w_endpoint = { "endpoint", "endpoints", 200, "Could not find endpoint." };
static const struct wrap w_endpoint_new = { "endpoint", "endpoints", 201, "Could not find endpoint." };
static const struct wrap w_endpoints = { "endpoints", "endpoints", 200, NULL };
static const struct wrap w_endpoint_gone = { "endpoint", "endpoints", 204, "Could not find endpoint." };

static void
regions_list(http_request *req, struct api_req *ar)
{
    if (api_authenticate(req, ar) < 0)
        return;
    const char **p = params(req, 1);
    api_query(req, "SELECT coalesce(json_agg(" REGION_JSON " ORDER BY g.id), '[]') FROM regions g",
              1, p, reply_list, (void *)&w_regions);
}

static void
regions_get(http_request *req, struct api_req *ar)
{
    if (api_authenticate(req, ar) < 0)
        return;
    const char **p = params(req, 2);
    p[1] = http_req_param(req, "id");
    api_query(req, "SELECT " REGION_JSON " FROM regions g WHERE g.id = $2", 2, p,
              reply_one, (void *)&w_region);
}

static void
regions_create(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:create_region", NULL, NULL) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *o = body_object(req, body, "region");
    if (!o)
        goto out;
    const char **p = params(req, 4);
    if (opt_str(req, o, "id", 64, &p[1]) < 0 ||
        opt_str(req, o, "description", DESC_MAX_LEN, &p[2]) < 0 ||
        opt_str(req, o, "parent_region_id", 64, &p[3]) < 0)
        goto out;
    if (!p[1])
        p[1] = new_id(req);
    api_query(req, "WITH g AS (INSERT INTO regions (id, description, parent_region_id)"
                   " VALUES ($2, coalesce($3, ''), $4) RETURNING *) SELECT " REGION_JSON " FROM g",
              4, p, reply_one, (void *)&w_region_new);
out:
    json_decref(body);
}

static void
services_list(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:list_services", NULL, NULL) < 0)
        return;
    const char **p = params(req, 3);
    p[1] = qp(req, "type");
    p[2] = qp(req, "name");
    api_query(req, "SELECT coalesce(json_agg(" SERVICE_JSON " ORDER BY s.type), '[]') FROM services s"
                   " WHERE ($2::text IS NULL OR s.type = $2) AND ($3::text IS NULL OR s.name = $3)",
              3, p, reply_list, (void *)&w_services);
}

static void
services_get(http_request *req, struct api_req *ar)
{
    by_id(req, ar, "identity:get_service",
          "SELECT " SERVICE_JSON " FROM services s WHERE s.id = $2",
          &w_service);
}

static void
services_create(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:create_service", NULL, NULL) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *o = body_object(req, body, "service");
    if (!o)
        goto out;
    const char **p = params(req, 6);
    p[1] = new_id(req);
    if (opt_str(req, o, "type", NAME_MAX_LEN, &p[2]) < 0 ||
        opt_str(req, o, "name", NAME_MAX_LEN, &p[3]) < 0 ||
        opt_str(req, o, "description", DESC_MAX_LEN, &p[4]) < 0 ||
        opt_bool(req, o, "enabled", &p[5]) < 0)
        goto out;
    if (!p[2]) {
        api_error(req, 400, "A service needs a type.");
        goto out;
    }
    api_query(req, "WITH s AS (INSERT INTO services (id, type, name, description, enabled)"
                   " VALUES ($2, $3, coalesce($4, ''), coalesce($5, ''), coalesce($6::boolean, true))"
                   " RETURNING *) SELECT " SERVICE_JSON " FROM s", 6, p, reply_one,
              (void *)&w_service_new);
out:
    json_decref(body);
}

static void
services_delete(http_request *req, struct api_req *ar)
{
    by_id(req, ar, "identity:delete_service",
          "DELETE FROM services WHERE id = $2 AND $1::text IS NOT NULL RETURNING id",
          &w_service_gone);
}

static void
endpoints_list(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:list_endpoints", NULL, NULL) < 0)
        return;
    const char **p = params(req, 4);
    p[1] = qp(req, "interface");
    p[2] = qp(req, "service_id");
    p[3] = qp(req, "region_id");
    api_query(req, "SELECT coalesce(json_agg(" ENDPOINT_JSON " ORDER BY e.service_id, e.interface), '[]')"
                   " FROM endpoints e WHERE ($2::text IS NULL OR e.interface = $2)"
                   " AND ($3::text IS NULL OR e.service_id = $3)"
                   " AND ($4::text IS NULL OR e.region_id = $4)", 4, p, reply_list,
              (void *)&w_endpoints);
}

static void
endpoints_get(http_request *req, struct api_req *ar)
{
    by_id(req, ar, "identity:get_endpoint",
          "SELECT " ENDPOINT_JSON " FROM endpoints e WHERE e.id = $2",
          &w_endpoint);
}

static void
endpoints_create(http_request *req, struct api_req *ar)
{
    if (auth_and_check(req, ar, "identity:create_endpoint", NULL, NULL) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *o = body_object(req, body, "endpoint");
    if (!o)
        goto out;
    const char **p = params(req, 7);
    const char *region = NULL;
    p[1] = new_id(req);
    if (opt_str(req, o, "service_id", 64, &p[2]) < 0 ||
        opt_str(req, o, "interface", 16, &p[3]) < 0 ||
        opt_str(req, o, "region_id", 64, &p[4]) < 0 ||
        opt_str(req, o, "region", 64, &region) < 0 ||
        opt_str(req, o, "url", 1024, &p[5]) < 0 || opt_bool(req, o, "enabled", &p[6]) < 0)
        goto out;
    if (!p[4])
        p[4] = region;
    if (!p[2] || !p[3] || !p[5]) {
        api_error(req, 400, "An endpoint needs service_id, interface and url.");
        goto out;
    }
    api_query(req, "WITH e AS (INSERT INTO endpoints (id, service_id, interface, region_id, url, enabled)"
                   " VALUES ($2, $3, $4, $5, $6, coalesce($7::boolean, true)) RETURNING *)"
                   " SELECT " ENDPOINT_JSON " FROM e", 7, p, reply_one, (void *)&w_endpoint_new);
out:
    json_decref(body);
}

static void
endpoints_delete(http_request *req, struct api_req *ar)
{
    by_id(req, ar, "identity:delete_endpoint",
          "DELETE FROM endpoints WHERE id = $2 AND $1::text IS NOT NULL RETURNING id",
          &w_endpoint_gone);
}

/* ---- Application credentials (the user's own, created with a
 * project-scoped token; the secret is shown once). */

#define APPCRED_JSON \
    "(jsonb_build_object('id', c.id, 'name', c.name, 'user_id', c.user_id," \
    " 'project_id', c.project_id, 'description', c.description," \
    " 'unrestricted', c.unrestricted, 'expires_at', c.expires_at," \
    " 'roles', (SELECT coalesce(jsonb_agg(x || jsonb_build_object('domain_id', NULL)), '[]')" \
    "   FROM jsonb_array_elements(c.roles) x)," \
    " 'links', jsonb_build_object('self', $1 || '/v3/users/' || c.user_id ||" \
    " '/application_credentials/' || c.id)))"

static const struct wrap w_appcred = { "application_credential", "application_credentials", 200,
                                       "Could not find application credential." };
static const struct wrap w_appcreds = { "application_credentials", "application_credentials", 200, NULL };
static const struct wrap w_appcred_gone = { "application_credential", "application_credentials", 204,
                                            "Could not find application credential." };

struct appcred_new {
    http_request *req;
    const char *secret;
};

static void
appcred_created(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    struct appcred_new *an = ctx;
    if (db_rows(res) < 1) {
        api_error(req, 404, "Could not find user.");
        return;
    }
    json_t *o = json_loads(db_get(res, 0, 0), 0, NULL);
    if (!o) {
        api_error(req, 500, "Cannot render the application credential.");
        return;
    }
    json_object_set_new(o, "secret", json_string(an->secret));
    api_reply_json(req, 201, json_pack("{s:o}", "application_credential", o));
}

struct appcred_hash {
    http_request *req;
    const char **p;
    struct appcred_new *an;
    struct auth_password *hasher;
    char *hash;
    int rc;
    uv_work_t work;
};

static void
appcred_hash_work(uv_work_t *w)
{
    struct appcred_hash *h = w->data;
    h->rc = auth_password_hash(h->hasher, h->an->secret, strlen(h->an->secret), h->hash);
}

static void
appcred_hash_done(uv_work_t *w, int status)
{
    struct appcred_hash *h = w->data;
    if (status < 0 || h->rc < 0) {
        api_error(h->req, 400, "The secret cannot be used.");
        return;
    }
    h->p[5] = h->hash;
    api_query(h->req,
              "WITH c AS (INSERT INTO application_credentials (id, name, user_id, project_id,"
              " secret_hash, description, roles, unrestricted, expires_at)"
              " VALUES ($2, $3, $4, $5, $6, $7, $8::jsonb, coalesce($9::boolean, false), $10::timestamptz)"
              " RETURNING *) SELECT " APPCRED_JSON " FROM c",
              10, h->p, appcred_created, h->an);
}

static void
appcred_create(http_request *req, struct api_req *ar)
{
    const char *uid = http_req_param(req, "id");
    if (auth_and_check(req, ar, "identity:create_application_credential", NULL, uid) < 0)
        return;
    if (ar->token->scope != AUTH_SCOPE_PROJECT || strcmp(ar->token->user_id, uid)) {
        api_error(req, 403, "Application credentials are created by their user with a "
                  "project-scoped token.");
        return;
    }
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    struct arena *mem = http_req_arena(req);
    json_t *o = body_object(req, body, "application_credential");
    if (!o)
        goto out;
    const char **p = params(req, 10);
    struct appcred_new *an = arena_zalloc(mem, sizeof *an);
    an->req = req;
    /* $2 id, $3 name, $4 user, $5 project, $6 secret hash (after hashing),
     * $7 description, $8 roles, $9 unrestricted, $10 expires_at. */
    p[1] = new_id(req);
    p[3] = uid;
    p[4] = arena_strdup(mem, ar->token->project_id);
    if (opt_str(req, o, "name", NAME_MAX_LEN, &p[2]) < 0 ||
        opt_str(req, o, "description", DESC_MAX_LEN, &p[6]) < 0 ||
        opt_str(req, o, "secret", AUTH_PASSWORD_MAX, &an->secret) < 0 ||
        opt_bool(req, o, "unrestricted", &p[8]) < 0 ||
        opt_str(req, o, "expires_at", 64, &p[9]) < 0)
        goto out;
    if (!p[2] || !*p[2]) {
        api_error(req, 400, "An application credential needs a name.");
        goto out;
    }
    /* Roles: a subset of the caller's roles on the project, by id or name;
     * none given means all of them. */
    json_t *want = json_object_get(o, "roles");
    json_t *roles = json_array();
    for (unsigned i = 0; i < ar->token->n_roles; i++) {
        const struct auth_role *r = &ar->token->roles[i];
        bool take = !json_is_array(want) || json_array_size(want) == 0;
        size_t k;
        json_t *w;
        json_array_foreach(want, k, w) {
            const char *wid = json_string_value(json_object_get(w, "id"));
            const char *wname = json_string_value(json_object_get(w, "name"));
            if ((wid && !strcmp(wid, r->id)) || (wname && !strcmp(wname, r->name)))
                take = true;
        }
        if (take)
            json_array_append_new(roles, json_pack("{s:s,s:s}", "id", r->id, "name", r->name));
    }
    size_t nwant = json_is_array(want) ? json_array_size(want) : 0;
    if (nwant && json_array_size(roles) != nwant) {
        json_decref(roles);
        api_error(req, 403, "An application credential can only carry roles its "
                  "creator holds on the project.");
        goto out;
    }
    char *rtext = json_dumps(roles, JSON_COMPACT);
    json_decref(roles);
    p[7] = arena_strdup(mem, rtext ? rtext : "[]");
    free(rtext);
    if (!an->secret) {
        unsigned char raw[32];
        char *hex = arena_alloc(mem, 65);
        util_random(raw, sizeof raw);
        for (size_t i = 0; i < sizeof raw; i++)
            snprintf(hex + 2 * i, 3, "%02x", raw[i]);
        an->secret = hex;
    } else if (!*an->secret) {
        api_error(req, 400, "The secret must not be empty.");
        goto out;
    }
    struct appcred_hash *h = arena_zalloc(mem, sizeof *h);
    h->req = req;
    h->p = p;
    h->an = an;
    h->hasher = identity_of(ar)->hasher;
    h->hash = arena_alloc(mem, AUTH_PASSWORD_HASH_SIZE);
    h->work.data = h;
    json_decref(body);
    body = NULL;
    if (uv_queue_work(ar->api->loop, &h->work, appcred_hash_work, appcred_hash_done) < 0)
        api_error(req, 500, "Cannot hash the secret.");
    return;
out:
    json_decref(body);
}

static void
appcred_list(http_request *req, struct api_req *ar)
{
    const char *uid = http_req_param(req, "id");
    if (auth_and_check(req, ar, "identity:list_application_credentials", NULL, uid) < 0)
        return;
    const char **p = params(req, 3);
    p[1] = uid;
    p[2] = qp(req, "name");
    api_query(req, "SELECT coalesce(json_agg(" APPCRED_JSON " ORDER BY c.name), '[]')"
                   " FROM application_credentials c WHERE c.user_id = $2"
                   " AND ($3::text IS NULL OR c.name = $3)", 3, p, reply_list,
              (void *)&w_appcreds);
}

static void
appcred_get(http_request *req, struct api_req *ar)
{
    const char *uid = http_req_param(req, "id");
    if (auth_and_check(req, ar, "identity:get_application_credential", NULL, uid) < 0)
        return;
    const char **p = params(req, 3);
    p[1] = uid;
    p[2] = http_req_param(req, "cred");
    api_query(req, "SELECT " APPCRED_JSON " FROM application_credentials c"
                   " WHERE c.user_id = $2 AND c.id = $3", 3, p, reply_one, (void *)&w_appcred);
}

static void
appcred_delete(http_request *req, struct api_req *ar)
{
    const char *uid = http_req_param(req, "id");
    if (auth_and_check(req, ar, "identity:delete_application_credential", NULL, uid) < 0)
        return;
    const char **p = params(req, 4);
    p[1] = uid;
    p[2] = http_req_param(req, "cred");
    p[3] = ttl_param(req, ar);
    /* Tokens do not record which credential made them, so deleting one
     * revokes every earlier token of the user (the safe side). */
    api_query(req, "WITH d AS (DELETE FROM application_credentials WHERE user_id = $2 AND id = $3"
                   " AND $1::text IS NOT NULL RETURNING user_id),"
                   " rv AS (INSERT INTO revocation_events (kind, value, expires_at)"
                   "  SELECT 'user', user_id, now() + make_interval(secs => $4::bigint) FROM d)"
                   " SELECT 1 FROM d", 4, p, reply_one, (void *)&w_appcred_gone);
}

void
identity_admin_register(struct api *a)
{
    static const struct {
        const char *method, *pattern;
        api_handler_fn fn;
    } routes[] = {
        { "GET", "/v3/domains", domains_list },
        { "POST", "/v3/domains", domains_create },
        { "GET", "/v3/domains/{id}", domains_get },
        { "PATCH", "/v3/domains/{id}", domains_update },
        { "DELETE", "/v3/domains/{id}", domains_delete },
        { "GET", "/v3/projects", projects_list },
        { "POST", "/v3/projects", projects_create },
        { "GET", "/v3/projects/{id}", projects_get },
        { "PATCH", "/v3/projects/{id}", projects_update },
        { "DELETE", "/v3/projects/{id}", projects_delete },
        { "GET", "/v3/users", users_list },
        { "POST", "/v3/users", users_create },
        { "GET", "/v3/users/{id}", users_get },
        { "PATCH", "/v3/users/{id}", users_update },
        { "DELETE", "/v3/users/{id}", users_delete },
        { "POST", "/v3/users/{id}/password", users_password },
        { "GET", "/v3/roles", roles_list },
        { "POST", "/v3/roles", roles_create },
        { "GET", "/v3/roles/{id}", roles_get },
        { "DELETE", "/v3/roles/{id}", roles_delete },
        { "GET", "/v3/projects/{target}/users/{user}/roles", grant_list },
        { "PUT", "/v3/projects/{target}/users/{user}/roles/{role}", grant_put },
        { "GET", "/v3/projects/{target}/users/{user}/roles/{role}", grant_get },
        { "DELETE", "/v3/projects/{target}/users/{user}/roles/{role}", grant_delete },
        { "GET", "/v3/domains/{target}/users/{user}/roles", grant_list },
        { "PUT", "/v3/domains/{target}/users/{user}/roles/{role}", grant_put },
        { "GET", "/v3/domains/{target}/users/{user}/roles/{role}", grant_get },
        { "DELETE", "/v3/domains/{target}/users/{user}/roles/{role}", grant_delete },
        { "GET", "/v3/role_assignments", assignments_list },
        { "GET", "/v3/regions", regions_list },
        { "POST", "/v3/regions", regions_create },
        { "GET", "/v3/regions/{id}", regions_get },
        { "GET", "/v3/services", services_list },
        { "POST", "/v3/services", services_create },
        { "GET", "/v3/services/{id}", services_get },
        { "DELETE", "/v3/services/{id}", services_delete },
        { "GET", "/v3/endpoints", endpoints_list },
        { "POST", "/v3/endpoints", endpoints_create },
        { "GET", "/v3/endpoints/{id}", endpoints_get },
        { "DELETE", "/v3/endpoints/{id}", endpoints_delete },
        { "POST", "/v3/users/{id}/application_credentials", appcred_create },
        { "GET", "/v3/users/{id}/application_credentials", appcred_list },
        { "GET", "/v3/users/{id}/application_credentials/{cred}", appcred_get },
        { "DELETE", "/v3/users/{id}/application_credentials/{cred}", appcred_delete },
    };
    for (size_t i = 0; i < ARRAY_SIZE(routes); i++)
        api_route(a, API_IDENTITY, routes[i].method, routes[i].pattern, routes[i].fn);
}
