/* The HTTP source against a fake nimbus-api (lib/http.h on the test's
 * loop): registration with the node credential, long poll (held answers,
 * 304), desired states delivered in order, observed state and events (with
 * ids) reported, re-registration after a 401, recovery after 503s, and a
 * stop that aborts a long poll in flight. */
#include "channel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "state_json.h"
#include "strbuf.h"
#include "../check.h"

#define UA "11111111-1111-4111-8111-111111111111"
#define UB "22222222-2222-4222-8222-222222222222"

static struct {
    int registers, inventories, bad_auth;
    uint64_t version;
    char doc[4096];
    char observed[4096];
    int events;
    int fail_401, fail_503;
    http_request *held;
    uv_timer_t hold;
} api;

static uint64_t got_version;
static size_t got_n;
static int phase;
static uv_timer_t step;
static http_server *srv;
static struct chan *chan;
static int steps;

static bool
authorized(http_request *req)
{
    const char *h = http_req_header(req, "Authorization");
    if (h && !strcmp(h, "Bearer s3cret"))
        return true;
    api.bad_auth++;
    if (http_respond(req, 401, "application/json", "{}", 2) < 0)
        return false;
    return false;
}

static void
reply(http_request *req, int status, const char *body)
{
    if (http_respond(req, status, "application/json", body, body ? strlen(body) : 0) < 0)
        fprintf(stderr, "answer dropped\n");
}

static void
h_register(http_request *req, void *data)
{
    if (!authorized(req))
        return;
    CHECK_STR(http_req_param(req, "node"), "node-1");
    api.registers++;
    reply(req, 200, "{\"heartbeat_interval\":1}");
}

static void
h_inventory(http_request *req, void *data)
{
    if (!authorized(req))
        return;
    api.inventories++;
    reply(req, 204, NULL);
}

static void
release_held(uv_timer_t *t)
{
    if (api.held) {
        http_request *r = api.held;
        api.held = NULL;
        reply(r, 304, NULL);
    }
}

static void
h_desired(http_request *req, void *data)
{
    if (!authorized(req))
        return;
    if (api.fail_401) {
        api.fail_401--;
        reply(req, 401, "{}");
        return;
    }
    const char *since = http_req_query_param(req, "since");
    CHECK(since != NULL);
    CHECK(http_req_query_param(req, "wait") != NULL);
    if (since && strtoull(since, NULL, 10) < api.version) {
        reply(req, 200, api.doc);
        return;
    }
    /* Hold it, as a long poll does; answered 304 a little later. */
    if (api.held)
        reply(api.held, 304, NULL);
    api.held = req;
    uv_timer_start(&api.hold, release_held, 300, 0);
}

static void
h_observed(http_request *req, void *data)
{
    if (!authorized(req))
        return;
    if (api.fail_503) {
        api.fail_503--;
        reply(req, 503, "{}");
        return;
    }
    size_t len;
    const char *b = http_req_body(req, &len);
    bfmt(api.observed, sizeof api.observed, "%s", b ? b : "");
    reply(req, 204, NULL);
}

static void
h_events(http_request *req, void *data)
{
    if (!authorized(req))
        return;
    const char *b = http_req_body(req, NULL);
    for (const char *p = b; p && (p = strstr(p, "\"id\":")); p++)
        api.events++;
    reply(req, 204, NULL);
}

static void
set_doc(uint64_t version, bool two)
{
    api.version = version;
    bfmt(api.doc, sizeof api.doc,
         "{\"version\": %llu, \"instances\": [{\"uuid\": \"" UA "\", \"image\": {\"id\": \"i1\"}}%s]}",
         (unsigned long long)version,
         two ? ", {\"uuid\": \"" UB "\", \"image\": {\"id\": \"i1\"}}" : "");
}

static void
on_desired(void *arg, struct desired_set *ds)
{
    CHECK(ds->version > got_version);
    got_version = ds->version;
    got_n = ds->n;
    desired_set_free(ds);
}

static void
srv_closed(void *arg)
{
}

static void
finish(void)
{
    uv_timer_stop(&step);
    uv_close((uv_handle_t *)&step, NULL);
    uv_close((uv_handle_t *)&api.hold, NULL);
    double t0 = (double)uv_hrtime() / 1e9;
    chan_stop(chan);
    double t = (double)uv_hrtime() / 1e9 - t0;
    fprintf(stderr, "chan_stop with a long poll in flight: %.3f s\n", t);
    CHECK(t < 2.0);
    if (api.held) {
        reply(api.held, 304, NULL);
        api.held = NULL;
    }
    http_server_shutdown(srv, srv_closed, NULL);
}

static void
on_step(uv_timer_t *t)
{
    steps++;
    if (steps > 1000) {   /* 20 s */
        fprintf(stderr, "stuck in phase %d\n", phase);
        CHECK(!"timed out");
        finish();
        return;
    }
    struct chan_stats st;
    chan_stats(chan, &st);
    switch (phase) {
    case 0:
        if (got_version == 1) {
            CHECK_INT(got_n, 1);
            CHECK_INT(api.registers, 1);
            set_doc(2, true);
            phase++;
        }
        break;
    case 1:
        if (got_version == 2) {
            CHECK_INT(got_n, 2);
            chan_report_observed(chan, "{\"node\":\"node-1\",\"instances\":[{\"uuid\":\"" UA "\"}]}");
            chan_report_event(chan, "{\"uuid\":\"" UA "\",\"event\":\"created\"}");
            chan_report_event(chan, "{\"uuid\":\"" UA "\",\"event\":\"started\"}");
            phase++;
        }
        break;
    case 2:
        if (strstr(api.observed, UA) && api.events == 2) {
            api.fail_401 = 1;
            set_doc(3, false);
            phase++;
        }
        break;
    case 3:
        if (got_version == 3) {
            CHECK(api.registers >= 2);
            CHECK_INT(got_n, 1);
            api.fail_503 = 2;
            chan_report_observed(chan, "{\"node\":\"node-1\",\"instances\":[{\"uuid\":\"" UB "\"}]}");
            phase++;
        }
        break;
    case 4:
        if (strstr(api.observed, UB)) {
            CHECK(st.errors >= 2);
            CHECK(st.reports >= 2);
            CHECK(api.inventories >= 1);
            CHECK_INT(api.bad_auth, 0);
            phase++;
            finish();
        }
        break;
    default:
        break;
    }
}

int
main(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    CHECK_INT(http_server_new(&loop, NULL, &srv), 0);
    CHECK_INT(http_server_route(srv, "POST", "/agent/v1/nodes/{node}/register", h_register, NULL, NULL), 0);
    CHECK_INT(http_server_route(srv, "PUT", "/agent/v1/nodes/{node}/inventory", h_inventory, NULL, NULL), 0);
    CHECK_INT(http_server_route(srv, "GET", "/agent/v1/nodes/{node}/desired", h_desired, NULL, NULL), 0);
    CHECK_INT(http_server_route(srv, "PUT", "/agent/v1/nodes/{node}/observed", h_observed, NULL, NULL), 0);
    CHECK_INT(http_server_route(srv, "POST", "/agent/v1/nodes/{node}/events", h_events, NULL, NULL), 0);
    CHECK_INT(http_server_listen(srv, "127.0.0.1", 0, false), 0);
    uv_timer_init(&loop, &api.hold);
    set_doc(1, false);

    char url[128];
    bfmt(url, sizeof url, "http://127.0.0.1:%d/agent/v1/", http_server_port(srv));
    struct chan_config cc = {
        .api_url = url, .node = "node-1", .token = "s3cret", .wait_s = 1, .heartbeat_ms = 500,
        .register_json = "{\"vcpus\":2}", .inventory_json = "{\"vcpus\":2}",
    };
    CHECK_INT(chan_start(&loop, &cc, on_desired, NULL, &chan), 0);
    uv_timer_init(&loop, &step);
    uv_timer_start(&step, on_step, 20, 20);
    uv_run(&loop, UV_RUN_DEFAULT);
    http_server_free(srv);
    CHECK_INT(uv_loop_close(&loop), 0);
    CHECK_INT(phase, 5);
    return check_exit();
}
