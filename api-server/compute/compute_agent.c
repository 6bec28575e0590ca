/* The agent channel on the compute listener (docs/agent-channel.md): the
 * five endpoints nimbus-compute agents use under /agent/v1/nodes/{node}/.
 *
 * Each endpoint is one SQL function of the agent migration (0005_agent.sql)
 * that checks the node credential and does the work; this file validates
 * sizes, extracts the bearer credential and holds desired-state long polls.
 *
 * Long polls: a GET desired whose version is unchanged waits in memory (a
 * list of waiters, no database connection held) until a notification on
 * 'nimbus_agent_desired' names its node, or its deadline passes (one
 * one-second timer sweeps the list).  A notification that arrives while the
 * first query of a poll is in flight is not lost: every poll remembers the
 * notification counter it started with and queries again when it moved. */
#include "compute.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "log.h"

/* Body limits: the agent sends documents far smaller than these. */
#define AGENT_MAX_BODY (1u << 20)
#define AGENT_MAX_TOKEN 256
#define AGENT_MAX_WAIT_S 60

struct agent_waiter {
    struct agent_waiter *next, *prev;
    http_request *req;
    const char *node;              /* Request arena. */
    const char *token;             /* Request arena. */
    const char *since;             /* Request arena, decimal. */
    uint64_t deadline_ms;          /* Loop time. */
    uint64_t notify_seen;          /* chan->notifications when the query started. */
};

struct compute_agent {
    struct api *api;
    uv_timer_t timer;
    struct agent_waiter head;      /* Circular list of waiting polls. */
    uint64_t notifications;        /* Desired-state notifications received. */
    size_t n_waiting;
    bool stopping;
    bool timer_closed;             /* Its close callback ran. */
    bool free_on_close;
};

/* The module's single instance: compute_register() runs once per process
 * and the handlers have no other way to reach it from a request. */
static struct compute_agent *the_agent;

static void
waiter_unlink(struct compute_agent *ca, struct agent_waiter *w)
{
    if (!w->next)
        return;
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->next = w->prev = NULL;
    ca->n_waiting--;
}

static void
waiter_link(struct compute_agent *ca, struct agent_waiter *w)
{
    w->next = &ca->head;
    w->prev = ca->head.prev;
    ca->head.prev->next = w;
    ca->head.prev = w;
    ca->n_waiting++;
}

/* The credential of "Authorization: Bearer <credential>", or NULL. */
static const char *
bearer(http_request *req)
{
    const char *h = http_req_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7))
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    return n && n <= AGENT_MAX_TOKEN ? h : NULL;
}

/* Common checks: a node name of sane length and a credential.  Answers and
 * returns NULL on failure; otherwise a 3-slot parameter array (node,
 * credential, and a free slot). */
static const char **
agent_params(http_request *req)
{
    const char *node = http_req_param(req, "node");
    if (!node || !node[0] || strlen(node) > COMPUTE_NAME_MAX) {
        api_error(req, 404, "No such node.");
        return NULL;
    }
    const char *tok = bearer(req);
    if (!tok) {
        api_error(req, 401, "A node credential (Authorization: Bearer) is required.");
        return NULL;
    }
    const char **p = arena_zalloc(http_req_arena(req), 3 * sizeof *p);
    p[0] = compute_dup(req, node);
    p[1] = compute_dup(req, tok);
    return p;
}

/* POST register, PUT inventory, PUT observed, POST events: the body (a JSON
 * object of at most AGENT_MAX_BODY bytes) goes to SQL function 'fn'. */
void
compute_agent_document(http_request *req, const char *fn)
{
    const char **p = agent_params(req);
    if (!p)
        return;
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    if (len > AGENT_MAX_BODY) {
        api_error(req, 413, "The document is larger than %u bytes.", AGENT_MAX_BODY);
        return;
    }
    json_t *j = api_parse_body(req);
    if (!j)
        return;             /* Answered. */
    json_decref(j);
    p[2] = arena_strndup(http_req_arena(req), body, len);
    compute_run(req, arena_printf(http_req_arena(req),
                "SELECT r->>'code' AS code, r->'body' AS body, r->>'message' AS message"
                " FROM %s($1, $2, $3::jsonb) r", fn),
                3, p, "No such node.");
}

static void
agent_register(http_request *req, struct api_req *ar)
{
    (void)ar;
    compute_agent_document(req, "compute_agent_register");
}

static void
agent_inventory(http_request *req, struct api_req *ar)
{
    (void)ar;
    compute_agent_document(req, "compute_agent_inventory");
}

static void
agent_observed(http_request *req, struct api_req *ar)
{
    (void)ar;
    compute_agent_document(req, "compute_agent_observed");
}

static void
agent_events(http_request *req, struct api_req *ar)
{
    (void)ar;
    compute_agent_document(req, "compute_agent_events");
}

/* ---- Desired state and its long poll. */

static void desired_query(struct agent_waiter *w);

static void
desired_done(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    struct agent_waiter *w = ctx;
    struct compute_agent *ca = the_agent;
    (void)ar;
    const char *c = db_rows(res) > 0 ? db_getn(res, 0, "code") : NULL;
    int code = c ? atoi(c) : 500;
    if (code == 200) {
        const char *body = db_getn(res, 0, "body");
        (void)http_respond(req, 200, "application/json", body ? body : "{}",
                           body ? strlen(body) : 2);
        return;
    }
    if (code != 304) {
        const char *msg = db_getn(res, 0, "message");
        api_error(req, code, "%s", msg ? msg : http_status_text(code));
        return;
    }
    uint64_t now = uv_now(ca->api->loop);
    if (ca->stopping || http_req_aborted(req) || now >= w->deadline_ms) {
        (void)http_respond(req, 304, NULL, NULL, 0);
        return;
    }
    if (w->notify_seen != ca->notifications) {
        desired_query(w);   /* Something changed while we asked: ask again. */
        return;
    }
    waiter_link(ca, w);
}

static void
desired_query(struct agent_waiter *w)
{
    const char **p = arena_zalloc(http_req_arena(w->req), 3 * sizeof *p);
    p[0] = w->node;
    p[1] = w->token;
    p[2] = w->since;
    w->notify_seen = the_agent->notifications;
    compute_query(w->req,
                  "SELECT r->>'code' AS code, r->'body' AS body, r->>'message' AS message"
                  " FROM compute_agent_desired($1, $2, $3::bigint) r",
                  3, p, desired_done, w);
}

static void
agent_desired(http_request *req, struct api_req *ar)
{
    (void)ar;
    const char **p = agent_params(req);
    if (!p)
        return;
    const char *since = http_req_query_param(req, "since");
    const char *wait = http_req_query_param(req, "wait");
    char *end;
    unsigned long long s = 0;
    long wait_s = 0;
    if (since) {
        errno = 0;
        s = strtoull(since, &end, 10);
        if (errno || *end || end == since || s > INT64_MAX) {
            api_error(req, 400, "'since' must be a version number.");
            return;
        }
    }
    if (wait) {
        wait_s = strtol(wait, &end, 10);
        if (*end || end == wait || wait_s < 0) {
            api_error(req, 400, "'wait' must be a number of seconds.");
            return;
        }
        if (wait_s > AGENT_MAX_WAIT_S)
            wait_s = AGENT_MAX_WAIT_S;
    }
    struct agent_waiter *w = arena_zalloc(http_req_arena(req), sizeof *w);
    w->req = req;
    w->node = p[0];
    w->token = p[1];
    w->since = arena_printf(http_req_arena(req), "%llu", s);
    w->deadline_ms = uv_now(the_agent->api->loop) + (uint64_t)wait_s * 1000u;
    desired_query(w);
}

/* A node's desired state changed: every poll of that node asks again. */
static void
on_desired_notify(const char *channel, const char *payload, void *arg)
{
    struct compute_agent *ca = arg;
    (void)channel;
    ca->notifications++;
    struct agent_waiter *w = ca->head.next;
    while (w != &ca->head) {
        struct agent_waiter *next = w->next;
        if (!payload || !strcmp(payload, w->node)) {
            waiter_unlink(ca, w);
            desired_query(w);
        }
        w = next;
    }
}

/* The listening connection came back: notifications may have been lost. */
static void
on_listen_reconnect(void *arg)
{
    on_desired_notify("nimbus_agent_desired", NULL, arg);
}

static void
on_sweep(uv_timer_t *t)
{
    struct compute_agent *ca = t->data;
    uint64_t now = uv_now(ca->api->loop);
    struct agent_waiter *w = ca->head.next;
    while (w != &ca->head) {
        struct agent_waiter *next = w->next;
        if (ca->stopping || now >= w->deadline_ms || http_req_aborted(w->req)) {
            waiter_unlink(ca, w);
            (void)http_respond(w->req, 304, NULL, NULL, 0);
        }
        w = next;
    }
}

static void
timer_closed(uv_handle_t *h)
{
    struct compute_agent *ca = h->data;
    ca->timer_closed = true;
    if (ca->free_on_close)
        free(ca);
}

void
compute_agent_stop(struct api *a)
{
    struct compute_agent *ca = the_agent;
    if (!ca || ca->api != a || ca->stopping)
        return;
    ca->stopping = true;
    on_sweep(&ca->timer);   /* Answers every waiting poll now. */
    uv_close((uv_handle_t *)&ca->timer, timer_closed);
}

void
compute_agent_free(struct api *a)
{
    struct compute_agent *ca = the_agent;
    if (!ca || ca->api != a)
        return;
    the_agent = NULL;
    if (ca->timer_closed) {
        free(ca);
    } else {
        /* Never stopped (start-up failed): freed if the loop runs again. */
        ca->stopping = true;
        ca->free_on_close = true;
        if (!uv_is_closing((uv_handle_t *)&ca->timer))
            uv_close((uv_handle_t *)&ca->timer, timer_closed);
    }
}

void
compute_agent_register(struct api *a)
{
    struct compute_agent *ca = calloc(1, sizeof *ca);
    if (!ca)
        abort();
    ca->api = a;
    ca->head.next = ca->head.prev = &ca->head;
    uv_timer_init(a->loop, &ca->timer);
    ca->timer.data = ca;
    uv_timer_start(&ca->timer, on_sweep, 1000, 1000);
    uv_unref((uv_handle_t *)&ca->timer);
    the_agent = ca;
    if (a->db && db_listen(a->db, "nimbus_agent_desired", on_desired_notify,
                           on_listen_reconnect, ca) < 0)
        log_warn("compute", "cannot listen for desired-state changes: agent long polls "
                 "will only end at their deadline");

    api_route(a, API_COMPUTE, "POST", "/agent/v1/nodes/{node}/register", agent_register);
    api_route(a, API_COMPUTE, "PUT", "/agent/v1/nodes/{node}/inventory", agent_inventory);
    api_route(a, API_COMPUTE, "GET", "/agent/v1/nodes/{node}/desired", agent_desired);
    api_route(a, API_COMPUTE, "PUT", "/agent/v1/nodes/{node}/observed", agent_observed);
    api_route(a, API_COMPUTE, "POST", "/agent/v1/nodes/{node}/events", agent_events);
}
