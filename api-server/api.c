#include "api.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "log.h"
#include "util.h"

static const char *const service_names[API_N_SERVICES] = {
    [API_IDENTITY] = "identity",
    [API_COMPUTE] = "compute",
    [API_NETWORK] = "network",
};

/* Route data: the handler and where it belongs.  Allocated at start-up and
 * kept for the life of the process. */
struct api_route_data {
    struct api *api;
    enum api_service svc;
    api_handler_fn fn;
    struct api_route_data *next;
};

struct api_svc_data {
    struct api *api;
    enum api_service svc;
};

static struct api_svc_data svc_data[API_N_SERVICES];

static struct api_req *
api_req_attach(http_request *req, struct api *a, enum api_service svc)
{
    struct api_req *ar = http_req_get_data(req);
    if (!ar) {
        ar = arena_zalloc(http_req_arena(req), sizeof *ar);
        ar->api = a;
        ar->svc = svc;
        http_req_set_data(req, ar);
    }
    return ar;
}

struct api_req *
api_req(http_request *req)
{
    return http_req_get_data(req);
}

static void
route_trampoline(http_request *req, void *data)
{
    struct api_route_data *rd = data;
    struct api_req *ar = api_req_attach(req, rd->api, rd->svc);
    http_resp_header(req, "x-openstack-request-id", http_req_id(req));
    rd->fn(req, ar);
}

void
api_route_opts(struct api *a, enum api_service svc, const char *method,
               const char *pattern, api_handler_fn fn,
               const struct http_route_opts *opts)
{
    struct api_route_data *rd = malloc(sizeof *rd);
    if (!rd)
        abort();
    rd->api = a;
    rd->svc = svc;
    rd->fn = fn;
    rd->next = a->routes;
    a->routes = rd;
    if (http_server_route(a->servers[svc], method, pattern, route_trampoline,
                          rd, opts) < 0) {
        log_error("api", "cannot add route %s %s", method, pattern);
        abort();
    }
}

void
api_route(struct api *a, enum api_service svc, const char *method,
          const char *pattern, api_handler_fn fn)
{
    api_route_opts(a, svc, method, pattern, fn, NULL);
}

const char *
api_base_url(http_request *req, enum api_service svc)
{
    struct api_req *ar = api_req(req);
    struct api *a = ar->api;
    struct arena *ar_mem = http_req_arena(req);
    const char *pub = conf_str(a->conf, "api", "public_host");
    if (*pub)
        return arena_printf(ar_mem, "http://%s:%d", pub, a->ports[svc]);
    const char *host = http_req_header(req, "host");
    if (host && svc == ar->svc && *host && strlen(host) < 256 &&
        !strpbrk(host, "\"\\<> \t/")) {
        return arena_printf(ar_mem, "http://%s", host);
    }
    const char *h = conf_str(a->conf, "api", "host");
    if (!strcmp(h, "0.0.0.0") || !strcmp(h, "::"))
        h = "127.0.0.1";
    if (strchr(h, ':'))
        return arena_printf(ar_mem, "http://[%s]:%d", h, a->ports[svc]);
    return arena_printf(ar_mem, "http://%s:%d", h, a->ports[svc]);
}

void
api_reply_json(http_request *req, int status, json_t *body)
{
    if (!body) {
        (void)http_respond(req, status, NULL, NULL, 0);
        return;
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) {
        (void)http_respond(req, 500, "application/json",
                           "{\"error\":\"serialisation failed\"}", 31);
        return;
    }
    (void)http_respond(req, status, "application/json", text, strlen(text));
    free(text);
}

static const char *
compute_error_name(int status)
{
    switch (status) {
    case 400: return "badRequest";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "itemNotFound";
    case 405: return "badMethod";
    case 406: return "notAcceptable";
    case 409: return "conflictingRequest";
    case 413: return "overLimit";
    case 415: return "badMediaType";
    case 429: return "overLimit";
    case 501: return "notImplemented";
    case 503: return "serviceUnavailable";
    default: return status >= 500 ? "computeFault" : "badRequest";
    }
}

static const char *
network_error_type(int status)
{
    switch (status) {
    case 400: return "BadRequest";
    case 401: return "NotAuthorized";
    case 403: return "PolicyNotAuthorized";
    case 404: return "NotFound";
    case 405: return "HTTPMethodNotAllowed";
    case 409: return "Conflict";
    case 413: return "RequestEntityTooLarge";
    case 503: return "ServiceUnavailable";
    default: return status >= 500 ? "InternalServerError" : "BadRequest";
    }
}

static void
error_reply(http_request *req, enum api_service svc, int status,
            const char *type, const char *msg)
{
    json_t *body;
    if (status == 401 && svc == API_IDENTITY)
        http_resp_header(req, "WWW-Authenticate",
                         arena_printf(http_req_arena(req), "Keystone uri=\"%s\"",
                                      api_base_url(req, API_IDENTITY)));
    switch (svc) {
    case API_IDENTITY:
        body = json_pack("{s:{s:i,s:s,s:s}}", "error", "code", status,
                         "message", msg, "title", http_status_text(status));
        break;
    case API_COMPUTE:
        body = json_pack("{s:{s:i,s:s}}", compute_error_name(status),
                         "code", status, "message", msg);
        break;
    case API_NETWORK:
        body = json_pack("{s:{s:s,s:s,s:s}}", "NeutronError", "type",
                         type ? type : network_error_type(status), "message",
                         msg, "detail", "");
        break;
    case API_N_SERVICES:
    default:
        body = json_pack("{s:s}", "error", msg);
        break;
    }
    api_reply_json(req, status, body);
}

static void
api_verror(http_request *req, int status, const char *type, const char *fmt,
           va_list ap)
{
    struct api_req *ar = api_req(req);
    char *msg = arena_vprintf(http_req_arena(req), fmt, ap);
    if (status == 401 && ar->api)
        ar->api->counters.auth_failures++;
    error_reply(req, ar->svc, status, type, msg);
}

void
api_error(http_request *req, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    api_verror(req, status, NULL, fmt, ap);
    va_end(ap);
}

void
api_error_typed(http_request *req, int status, const char *type,
                const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    api_verror(req, status, type, fmt, ap);
    va_end(ap);
}

void
api_error_unauthorized(http_request *req)
{
    struct api_req *ar = api_req(req);
    ar->api->counters.auth_failures++;
    /* Every service rejects a bad token the way keystonemiddleware does in
     * front of OpenStack's services: 401 in the identity error shape. */
    error_reply(req, API_IDENTITY, 401,
                NULL, "The request you have made requires authentication.");
}

void
api_db_error(http_request *req, int status, const struct db_error *err)
{
    struct api_req *ar = api_req(req);
    const char *msg, *detail;
    int code = db_error_http(status, err, &msg, &detail);
    if (code == 503) {
        ar->api->counters.db_unavailable++;
        http_resp_header(req, "Retry-After", "1");
    }
    if (code != 500) {
        api_error(req, code, "%s%s", msg, detail ? detail : "");
        return;
    }
    log_error("api", "%s %s: database error %d: %s%s%s", http_req_method(req),
              http_req_path(req), status, err ? err->sqlstate : "",
              err ? " " : "", err && err->message ? err->message : "");
    api_error(req, 500, "An unexpected error prevented the server from "
              "fulfilling your request.");
}

struct api_query_ctx {
    http_request *req;
    api_query_cb cb;
    void *ctx;
    const char *sql;
    int nparams;
    const char *const *params;
    int attempts;
};

/* A statement PostgreSQL aborted for a deadlock or a serialization failure
 * was rolled back whole (each api_query() statement is its own
 * transaction), so running it again is safe; a few attempts ride out
 * contention between API calls and agent reports on the same rows. */
#define API_QUERY_ATTEMPTS 4

static void
api_query_done(int status, db_result *res, const struct db_error *err, void *arg)
{
    struct api_query_ctx *q = arg;
    if (status == -EAGAIN && ++q->attempts < API_QUERY_ATTEMPTS) {
        int rc = db_query(api_req(q->req)->api->db, q->sql, q->nparams, q->params,
                          api_query_done, q);
        if (rc == 0)
            return;
        status = rc;
        err = NULL;
    }
    if (status < 0) {
        api_db_error(q->req, status, err);
        return;
    }
    q->cb(q->req, api_req(q->req), res, q->ctx);
}

void
api_query(http_request *req, const char *sql, int nparams,
          const char *const *params, api_query_cb cb, void *ctx)
{
    struct api_req *ar = api_req(req);
    struct api_query_ctx *q = arena_alloc(http_req_arena(req), sizeof *q);
    q->req = req;
    q->cb = cb;
    q->ctx = ctx;
    q->sql = sql;
    q->nparams = nparams;
    q->params = params;
    q->attempts = 0;
    int rc = db_query(ar->api->db, sql, nparams, params, api_query_done, q);
    if (rc < 0)
        api_db_error(req, rc, NULL);
}

json_t *
api_parse_body(http_request *req)
{
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    if (!body || !len) {
        api_error(req, 400, "The request body is missing.");
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        api_error(req, 400, "Malformed JSON in the request body: %s (line %d, column %d).",
                  jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        api_error(req, 400, "The request body must be a JSON object.");
        return NULL;
    }
    return j;
}

static void
server_error_handler(http_request *req, int status, const char *message,
                     void *data)
{
    struct api_svc_data *sd = data;
    api_req_attach(req, sd->api, sd->svc);
    if (status == 404)
        message = "The resource could not be found.";
    error_reply(req, sd->svc, status, NULL, message);
}

/* ---- /healthz and /metrics, on every listener. */

static void
healthz(http_request *req, struct api_req *ar)
{
    bool up = db_pool_available(ar->api->db);
    bool ready = identity_ready(ar->api);
    json_t *j = json_pack("{s:s,s:s,s:s}", "status", up && ready ? "ok" : "degraded",
                          "database", up ? "ok" : "unavailable",
                          "identity", ready ? "ready" : "loading");
    api_reply_json(req, up && ready ? 200 : 503, j);
}

static void
metrics(http_request *req, struct api_req *ar)
{
    struct api *a = ar->api;
    struct arena *mem = http_req_arena(req);
    char *out = arena_printf(mem,
        "# HELP nimbus_uptime_seconds Seconds since this process started.\n"
        "# TYPE nimbus_uptime_seconds gauge\n"
        "nimbus_uptime_seconds %.3f\n",
        (double)(util_now_ns() - a->started_ns) / 1e9);
    out = arena_printf(mem, "%s"
        "# HELP nimbus_http_requests_total Requests dispatched.\n"
        "# TYPE nimbus_http_requests_total counter\n", out);
    for (int s = 0; s < API_N_SERVICES; s++) {
        struct http_server_stats st;
        http_server_stats(a->servers[s], &st);
        out = arena_printf(mem, "%snimbus_http_requests_total{service=\"%s\"} %llu\n",
                           out, service_names[s], (unsigned long long)st.requests);
    }
    out = arena_printf(mem, "%s"
        "# HELP nimbus_http_responses_total Responses by status class.\n"
        "# TYPE nimbus_http_responses_total counter\n", out);
    for (int s = 0; s < API_N_SERVICES; s++) {
        struct http_server_stats st;
        http_server_stats(a->servers[s], &st);
        for (int c = 1; c <= 5; c++)
            out = arena_printf(mem, "%snimbus_http_responses_total{service=\"%s\",code=\"%dxx\"} %llu\n",
                               out, service_names[s], c,
                               (unsigned long long)st.responses[c]);
    }
    out = arena_printf(mem, "%s"
        "# HELP nimbus_http_connections_open Open client connections.\n"
        "# TYPE nimbus_http_connections_open gauge\n", out);
    for (int s = 0; s < API_N_SERVICES; s++) {
        struct http_server_stats st;
        http_server_stats(a->servers[s], &st);
        out = arena_printf(mem, "%snimbus_http_connections_open{service=\"%s\"} %u\n"
                           "nimbus_http_connections_refused_total{service=\"%s\"} %llu\n"
                           "nimbus_http_timeouts_total{service=\"%s\"} %llu\n",
                           out, service_names[s], st.connections_open,
                           service_names[s], (unsigned long long)st.connections_refused,
                           service_names[s], (unsigned long long)st.timeouts);
    }
    struct db_pool_stats ds;
    db_pool_stats(a->db, &ds);
    out = arena_printf(mem, "%s"
        "# HELP nimbus_db_up Whether a database connection is up.\n"
        "# TYPE nimbus_db_up gauge\n"
        "nimbus_db_up %d\n"
        "nimbus_db_connections %u\n"
        "nimbus_db_queries_total %llu\n"
        "nimbus_db_failures_total %llu\n"
        "nimbus_db_reconnects_total %llu\n"
        "nimbus_db_notifications_total %llu\n"
        "nimbus_db_queued %u\n"
        "nimbus_db_unavailable_responses_total %llu\n"
        "nimbus_auth_failures_total %llu\n"
        "nimbus_tokens_issued_total %llu\n"
        "nimbus_tokens_validated_total %llu\n",
        out, db_pool_available(a->db) ? 1 : 0, ds.connected,
        (unsigned long long)ds.queries, (unsigned long long)ds.failures,
        (unsigned long long)ds.reconnects, (unsigned long long)ds.notifications,
        ds.queued, (unsigned long long)a->counters.db_unavailable,
        (unsigned long long)a->counters.auth_failures,
        (unsigned long long)a->counters.tokens_issued,
        (unsigned long long)a->counters.tokens_validated);
    (void)http_respond(req, 200, "text/plain; version=0.0.4", out, strlen(out));
}

static const char *const port_options[API_N_SERVICES] = {
    [API_IDENTITY] = "identity_port",
    [API_COMPUTE] = "compute_port",
    [API_NETWORK] = "network_port",
};

int
api_start(struct api *a)
{
    struct http_server_config hc;
    http_server_config_defaults(&hc);
    hc.max_connections = (unsigned)conf_int(a->conf, "api", "max_connections");
    hc.max_header_bytes = (size_t)conf_int(a->conf, "api", "max_header_bytes");
    hc.max_body_bytes = (size_t)conf_int(a->conf, "api", "max_body_bytes");
    hc.header_timeout_ms = (unsigned)conf_int(a->conf, "api", "header_timeout") * 1000u;
    hc.idle_timeout_ms = (unsigned)conf_int(a->conf, "api", "idle_timeout") * 1000u;
    a->started_ns = util_now_ns();

    for (int s = 0; s < API_N_SERVICES; s++) {
        int rc = http_server_new(a->loop, &hc, &a->servers[s]);
        if (rc < 0) {
            log_error("api", "cannot create the %s server: %s", service_names[s],
                      strerror(-rc));
            return rc;
        }
        svc_data[s].api = a;
        svc_data[s].svc = (enum api_service)s;
        http_server_set_error_handler(a->servers[s], server_error_handler, &svc_data[s]);
        api_route(a, (enum api_service)s, "GET", "/healthz", healthz);
        api_route(a, (enum api_service)s, "GET", "/metrics", metrics);
    }
    versions_register(a);
    int rc = identity_init(a);
    if (rc < 0)
        return rc;
    identity_register(a);
    api_modules_register(a);
    rc = dashboard_init(a);
    if (rc < 0)
        return rc;
    const char *origins = conf_str(a->conf, "dashboard", "allowed_origins");
    for (int s = 0; s < API_N_SERVICES; s++) {
        rc = http_server_set_cors(a->servers[s], origins);
        if (rc < 0) {
            log_error("api", "[dashboard] allowed_origins: %s", rc == -EINVAL
                      ? "not a list of at most 32 http[s]://host[:port] origins"
                      : strerror(-rc));
            return rc;
        }
    }

    bool reuse = conf_int(a->conf, "api", "workers") > 1;
    const char *host = conf_str(a->conf, "api", "host");
    for (int s = 0; s < API_N_SERVICES; s++) {
        int port = (int)conf_int(a->conf, "api", port_options[s]);
        rc = http_server_listen(a->servers[s], host, port, reuse);
        if (rc < 0) {
            log_error("api", "cannot listen on %s:%d for %s: %s", host, port,
                      service_names[s], strerror(-rc));
            return rc;
        }
        a->ports[s] = http_server_port(a->servers[s]);
    }
    return 0;
}

struct shutdown_state {
    int pending;
    void (*done)(void *arg);
    void *arg;
};

static void
one_server_done(void *arg)
{
    struct shutdown_state *st = arg;
    if (--st->pending == 0) {
        void (*done)(void *) = st->done;
        void *darg = st->arg;
        free(st);
        done(darg);
    }
}

void
api_shutdown(struct api *a, void (*done)(void *arg), void *arg)
{
    struct shutdown_state *st = calloc(1, sizeof *st);
    if (!st)
        abort();
    st->done = done;
    st->arg = arg;
    st->pending = API_N_SERVICES;
    identity_stop(a);
    api_modules_stop(a);
    for (int s = 0; s < API_N_SERVICES; s++)
        http_server_shutdown(a->servers[s], one_server_done, st);
}

void
api_free(struct api *a)
{
    identity_free(a);
    api_modules_free(a);
    dashboard_free();
    for (int s = 0; s < API_N_SERVICES; s++) {
        http_server_free(a->servers[s]);
        a->servers[s] = NULL;
    }
    while (a->routes) {
        struct api_route_data *next = a->routes->next;
        free(a->routes);
        a->routes = next;
    }
}
