/* Compute API registration and the helpers shared by its handlers. */
#include "compute.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "util.h"
#include "auth_token.h"
#include "compute_version.h"

int
compute_begin(http_request *req, struct api_req *ar, const char *op)
{
    if (compute_version_check(req) < 0)
        return -EINVAL;
    if (api_authenticate(req, ar) < 0)
        return -EACCES;
    return api_authorize(req, ar, op, NULL, NULL);
}

const char **
compute_params(http_request *req, struct api_req *ar, int n)
{
    const char **p = arena_zalloc(http_req_arena(req), (size_t)n * sizeof *p);
    p[0] = arena_printf(http_req_arena(req), "%s", api_base_url(req, API_COMPUTE));
    if (n > 1)
        p[1] = ar->token->project_id;
    if (n > 2)
        p[2] = api_is_admin(ar) ? "true" : "false";
    return p;
}

static void
reply_coded(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    const char *missing = ctx;
    (void)ar;
    if (db_rows(res) < 1) {
        api_error(req, 404, "%s", missing ? missing : "The resource could not be found.");
        return;
    }
    const char *c = db_getn(res, 0, "code");
    int code = c ? atoi(c) : 200;
    const char *body = db_getn(res, 0, "body");
    if (code >= 400) {
        const char *msg = db_getn(res, 0, "message");
        api_error(req, code, "%s", msg ? msg : http_status_text(code));
        return;
    }
    if (code == 204 || !body) {
        (void)http_respond(req, code, NULL, NULL, 0);
        return;
    }
    (void)http_respond(req, code, "application/json", body, strlen(body));
}

/* Every parameter gets type text, even the ones a statement does not use
 * (PostgreSQL cannot otherwise infer their types): an unused CTE names
 * them all.  The statements cast where they need another type. */
static const char *
typed_sql(http_request *req, const char *sql, int nparams)
{
    struct arena *a = http_req_arena(req);
    char *head = arena_strdup(a, "WITH _params AS (SELECT ");
    for (int i = 1; i <= nparams; i++)
        head = arena_printf(a, "%s%s$%d::text", head, i > 1 ? ", " : "", i);
    if (!strncmp(sql, "WITH ", 5))
        return arena_printf(a, "%s), %s", head, sql + 5);
    return arena_printf(a, "%s) %s", head, sql);
}

void
compute_query(http_request *req, const char *sql, int nparams, const char **params,
              api_query_cb cb, void *ctx)
{
    api_query(req, typed_sql(req, sql, nparams), nparams, params, cb, ctx);
}

void
compute_run(http_request *req, const char *sql, int nparams,
            const char **params, const char *missing)
{
    compute_query(req, sql, nparams, params, reply_coded, (void *)missing);
}

const char *
compute_json_text(http_request *req, const json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s)
        abort();
    const char *out = arena_strdup(http_req_arena(req), s);
    free(s);
    return out;
}

const char *
compute_dup(http_request *req, const char *s)
{
    return s ? arena_strdup(http_req_arena(req), s) : NULL;
}

const char *
compute_qp(http_request *req, const char *name)
{
    const char *v = http_req_query_param(req, name);
    return v && strlen(v) <= COMPUTE_NAME_MAX ? v : NULL;
}

void
compute_register(struct api *a)
{
    compute_flavors_register(a);
    compute_keypairs_register(a);
    compute_servers_register(a);
    compute_admin_register(a);
    compute_interfaces_register(a);
    compute_agent_register(a);
    compute_console_register(a);
}

void
compute_stop(struct api *a)
{
    compute_agent_stop(a);
}

void
compute_free(struct api *a)
{
    compute_agent_free(a);
}

const char *
compute_server_missing(http_request *req, const char *id)
{
    return arena_printf(http_req_arena(req), "Instance %s could not be found.", id ? id : "");
}

const char *
compute_server_id(http_request *req)
{
    const char *id = http_req_param(req, "id");
    if (!id || !util_is_uuid(id)) {
        api_error(req, 404, "%s", compute_server_missing(req, id));
        return NULL;
    }
    return id;
}

const char **
compute_server_begin(http_request *req, struct api_req *ar, const char *op, int n)
{
    if (op ? compute_begin(req, ar, op) < 0
           : compute_version_check(req) < 0 || api_authenticate(req, ar) < 0)
        return NULL;
    const char **p = compute_params(req, ar, n < 4 ? 4 : n);
    const char *id = compute_server_id(req);
    if (!id)
        return NULL;        /* Answered: 'p' went with the arena. */
    p[3] = id;
    return p;
}
