/* nimbus-api: the process context shared by every API module, and the
 * helpers they use to answer (JSON bodies, each service's error shape,
 * database-unavailable answers). */
#ifndef NIMBUS_API_H
#define NIMBUS_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conf.h"
#include "db.h"
#include "http.h"

/* The services nimbus-api serves, one listener each. */
enum api_service {
    API_IDENTITY,
    API_COMPUTE,
    API_NETWORK,
    API_N_SERVICES
};

struct api_counters {
    uint64_t db_unavailable;       /* Requests answered 503 for lack of a database. */
    uint64_t auth_failures;        /* 401 answers. */
    uint64_t tokens_issued;
    uint64_t tokens_validated;
};

struct identity;

struct api {
    uv_loop_t *loop;
    const struct conf *conf;
    db_pool *db;
    http_server *servers[API_N_SERVICES];
    int ports[API_N_SERVICES];
    struct identity *identity;     /* Keystone state: keys, revocations, catalog. */
    struct api_counters counters;
    uint64_t started_ns;
    struct api_route_data *routes; /* Owned route table entries. */
};

/* Builds the listeners and routes and starts listening.  'a' is filled by
 * the caller with loop, conf and db.  Returns 0 or a negative errno (and
 * logs what failed). */
int api_start(struct api *a) __attribute__((warn_unused_result));
/* Graceful stop of every listener; 'done' runs when all are idle. */
void api_shutdown(struct api *a, void (*done)(void *arg), void *arg);
void api_free(struct api *a);

struct auth_token;

/* Per-request state of the API layer, in the request's arena.  Handlers
 * registered with api_route() find it with api_req(). */
struct api_req {
    struct api *api;
    enum api_service svc;
    struct auth_token *token;      /* Set by authentication; NULL before. */
    const char *token_id;          /* The X-Auth-Token text. */
};

typedef void (*api_handler_fn)(http_request *req, struct api_req *ar);

struct api_req *api_req(http_request *req);

/* Base URL for links: "http://host:port" of the given service, from
 * [api] public_host, else the request's Host header, else [api] host.
 * Arena-allocated. */
const char *api_base_url(http_request *req, enum api_service svc);

/* Answers with 'body' serialised (takes the reference; NULL means no body). */
void api_reply_json(http_request *req, int status, json_t *body);

/* Answers an error in the shape of the request's service: identity
 * {"error":{"code","message","title"}}, compute {"<name>":{"code","message"}},
 * network {"NeutronError":{"type","message","detail"}}. */
void api_error(http_request *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Network errors carry a type name such as "NetworkNotFound". */
void api_error_typed(http_request *req, int status, const char *type,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Answers 401 for a missing or bad token, in the identity error shape
 * whatever the service (as keystonemiddleware does for OpenStack). */
void api_error_unauthorized(http_request *req);

/* Answers a failed database call: 503 when the database is unavailable or
 * busy, 409 for unique violations (message given), else 500; logs once. */
void api_db_error(http_request *req, int status, const struct db_error *err);

/* Runs a query for a request.  On success 'cb' gets the result (owned by
 * the pool, valid during the call); on any failure the request is answered
 * with api_db_error() and 'cb' is not called.  'params' must stay valid
 * until the callback (use the request arena). */
typedef void (*api_query_cb)(http_request *req, struct api_req *ar,
                             db_result *res, void *ctx);
void api_query(http_request *req, const char *sql, int nparams,
               const char *const *params, api_query_cb cb, void *ctx);

/* Authenticates the request from X-Auth-Token: on success fills ar->token
 * and returns 0; otherwise answers 401 in the service's error shape and
 * returns a negative errno. */
int api_authenticate(http_request *req, struct api_req *ar)
    __attribute__((warn_unused_result));

/* Checks the policy rule 'op' for the authenticated caller against the
 * owner of the target ('project_id' and/or 'user_id', either may be NULL).
 * Returns 0 when allowed; otherwise answers 403 and returns -EACCES. */
int api_authorize(http_request *req, struct api_req *ar, const char *op,
                  const char *project_id, const char *user_id)
    __attribute__((warn_unused_result));

/* True when the caller holds the cloud admin role. */
bool api_is_admin(const struct api_req *ar);

/* Parses the request body as a JSON object; on failure answers 400 and
 * returns NULL.  The caller owns the result. */
json_t *api_parse_body(http_request *req);

/* Route registration helper: aborts on failure (start-up only). */
void api_route(struct api *a, enum api_service svc, const char *method,
               const char *pattern, api_handler_fn fn);
void api_route_opts(struct api *a, enum api_service svc, const char *method,
                    const char *pattern, api_handler_fn fn,
                    const struct http_route_opts *opts);

/* Module entry points: each registers its routes. */
void versions_register(struct api *a);
void identity_register(struct api *a);
/* The compute (api-server/compute/) and network (api-server/network/)
 * modules, when built. */
void compute_register(struct api *a);
void network_register(struct api *a);
void api_modules_register(struct api *a);
/* At shutdown, modules answer the requests they hold (long polls); at free,
 * they release what they own. */
void compute_stop(struct api *a);
void compute_free(struct api *a);
void api_modules_stop(struct api *a);
void api_modules_free(struct api *a);
int identity_init(struct api *a) __attribute__((warn_unused_result));
void identity_stop(struct api *a);
/* Loads the token keys again (SIGHUP after a rotation); on failure the old
 * keys stay in use. */
int identity_reload_keys(struct api *a) __attribute__((warn_unused_result));
/* True once the catalog and the revocation list are loaded. */
bool identity_ready(const struct api *a);
void identity_free(struct api *a);
void versions_free(void);
/* The dashboard's static files under /dashboard/ on the identity listener
 * when [dashboard] dir is set (opened once; an unusable directory fails the
 * start).  dashboard_free() closes the directory. */
int dashboard_init(struct api *a) __attribute__((warn_unused_result));
void dashboard_free(void);

#endif
