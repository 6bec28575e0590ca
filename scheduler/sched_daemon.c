#include "sched_daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "db.h"
#include "http.h"
#include "log.h"
#include "sched_core.h"

#define MAX_DIRTY 4096

struct daemon {
    uv_loop_t *loop;
    struct sched_ctx s;
    db_pool *pool;
    http_server *http;
    uv_timer_t sweep;
    uv_signal_t sigterm, sigint;
    uv_work_t work;
    bool busy, wake, stopping, once;
    uint64_t last_heartbeat_ns;   /* Non-zero: a heartbeat is due. */
    int sweep_ms;
    /* Host ids changed since the last cycle (written on the loop, read by
     * the worker; the mutex guards both). */
    uv_mutex_t lock;
    int64_t dirty[MAX_DIRTY];
    size_t n_dirty;
    bool dirty_all;
    int exit_status;
    int handled_last;
};

static void kick(struct daemon *d);

static void
work_cb(uv_work_t *w)
{
    struct daemon *d = w->data;
    int64_t ids[MAX_DIRTY];
    size_t n;
    bool all;
    uv_mutex_lock(&d->lock);
    n = d->n_dirty;
    all = d->dirty_all;
    memcpy(ids, d->dirty, n * sizeof ids[0]);
    d->n_dirty = 0;
    d->dirty_all = false;
    uv_mutex_unlock(&d->lock);
    if (all)
        d->s.hosts_loaded = false;
    else if (n && d->s.hosts_loaded && sched_refresh_hosts(&d->s, ids, n) < 0)
        d->s.hosts_loaded = false;
    /* The sweep timer marks a heartbeat as due. */
    if (d->last_heartbeat_ns && sched_heartbeat(&d->s) == 0) {
        d->last_heartbeat_ns = 0;
        if (sched_rescue_dead_hosts(&d->s) < 0)
            d->s.hosts_loaded = false;      /* Logged by the cycle; retried next sweep. */
    }
    d->handled_last = 0;
    for (;;) {
        int rc = sched_cycle(&d->s);
        if (rc < 0) {
            d->handled_last = rc;
            return;
        }
        d->handled_last += rc;
        if (rc < d->s.batch_size)
            return;
        /* A full batch: pick up host changes before the next one. */
        uv_mutex_lock(&d->lock);
        n = d->n_dirty;
        all = d->dirty_all;
        memcpy(ids, d->dirty, n * sizeof ids[0]);
        d->n_dirty = 0;
        d->dirty_all = false;
        uv_mutex_unlock(&d->lock);
        if (all || (n && sched_refresh_hosts(&d->s, ids, n) < 0))
            d->s.hosts_loaded = false;
    }
}

static void
stop_all(struct daemon *d);

static void
after_work_cb(uv_work_t *w, int status)
{
    struct daemon *d = w->data;
    d->busy = false;
    if (d->handled_last < 0)
        log_warn("sched", "cycle failed (%d); retrying at the next sweep", d->handled_last);
    if (d->stopping) {
        stop_all(d);
        return;
    }
    if (d->once && d->handled_last == 0) {
        d->stopping = true;
        stop_all(d);
        return;
    }
    if (d->wake || d->once)
        kick(d);
}

static void
kick(struct daemon *d)
{
    if (d->stopping)
        return;
    if (d->busy) {
        d->wake = true;
        return;
    }
    d->wake = false;
    d->busy = true;
    d->work.data = d;
    if (uv_queue_work(d->loop, &d->work, work_cb, after_work_cb) < 0)
        d->busy = false;
}

static void
on_notify(const char *channel, const char *payload, void *arg)
{
    struct daemon *d = arg;
    if (!strcmp(channel, "nimbus_compute_nodes")) {
        uv_mutex_lock(&d->lock);
        if (d->n_dirty < MAX_DIRTY && payload && *payload) {
            int64_t id = strtoll(payload, NULL, 10);
            size_t i;
            for (i = 0; i < d->n_dirty && d->dirty[i] != id; i++)
                ;
            if (i == d->n_dirty)
                d->dirty[d->n_dirty++] = id;
        } else {
            d->dirty_all = true;
        }
        uv_mutex_unlock(&d->lock);
        return;
    }
    kick(d);
}

static void
on_reconnect(void *arg)
{
    struct daemon *d = arg;
    uv_mutex_lock(&d->lock);
    d->dirty_all = true;           /* We may have missed node changes. */
    uv_mutex_unlock(&d->lock);
    kick(d);
}

static void
on_sweep(uv_timer_t *t)
{
    struct daemon *d = t->data;
    d->last_heartbeat_ns = 1;      /* Heartbeat due. */
    kick(d);
}

static void
metrics(http_request *req, void *data)
{
    struct daemon *d = data;
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "nimbus_scheduler_placed_total %" PRIu64 "\n"
                     "nimbus_scheduler_no_valid_host_total %" PRIu64 "\n"
                     "nimbus_scheduler_lost_races_total %" PRIu64 "\n"
                     "nimbus_scheduler_cycles_total %" PRIu64 "\n"
                     "nimbus_scheduler_leased_total %" PRIu64 "\n"
                     "nimbus_scheduler_db_errors_total %" PRIu64 "\n"
                     "nimbus_scheduler_rescheduled_total %" PRIu64 "\n"
                     "nimbus_scheduler_hosts %zu\n",
                     d->s.counters.placed, d->s.counters.no_valid_host,
                     d->s.counters.lost_races, d->s.counters.cycles, d->s.counters.leased,
                     d->s.counters.errors, d->s.counters.rescheduled, d->s.hosts.n);
    (void)http_respond(req, 200, "text/plain; version=0.0.4", buf, (size_t)n);
}

static void
healthz(http_request *req, void *data)
{
    struct daemon *d = data;
    bool ok = db_pool_available(d->pool);
    (void)http_respond(req, ok ? 200 : 503, "text/plain", ok ? "ok\n" : "database down\n",
                       ok ? 3 : 14);
}

static void
closed_pool(void *arg)
{
    (void)arg;
}

static void
http_closed(void *arg)
{
    (void)arg;
}

static void
stop_all(struct daemon *d)
{
    if (d->busy)
        return;                    /* after_work_cb comes back here. */
    uv_timer_stop(&d->sweep);
    uv_close((uv_handle_t *)&d->sweep, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    if (d->http)
        http_server_shutdown(d->http, http_closed, d);
    db_pool_close(d->pool, closed_pool, d);
}

static void
on_signal(uv_signal_t *s, int signum)
{
    struct daemon *d = s->data;
    log_info("main", "signal %d: stopping", signum);
    if (d->stopping)
        return;
    d->stopping = true;
    stop_all(d);
}

/* A [scheduler] multiplier: a decimal number; sets *bad on garbage. */
static double
conf_double(const struct conf *c, const char *name, bool *bad)
{
    const char *v = conf_str(c, "scheduler", name);
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end) {
        log_error("main", "configuration: [scheduler] %s must be a number, not '%s'", name, v);
        *bad = true;
    }
    return x;
}

int
sched_daemon_run(const struct conf *c, bool once)
{
    struct daemon *d = calloc(1, sizeof *d);
    char err[256];
    int rc, status = 1;
    if (!d)
        return 1;
    d->loop = uv_default_loop();
    d->once = once;
    uv_mutex_init(&d->lock);
    struct sched_ctx *s = &d->s;
    if (sched_pipeline_parse(&s->pipeline, conf_str(c, "scheduler", "filters"),
                             conf_str(c, "scheduler", "weighers"), err, sizeof err) < 0) {
        log_error("main", "configuration: [scheduler] %s", err);
        goto out;
    }
    const char *strategy = conf_str(c, "scheduler", "placement_strategy");
    double sign = 1.0;
    if (!strcmp(strategy, "pack")) {
        sign = -1.0;
    } else if (strcmp(strategy, "spread")) {
        log_error("main", "configuration: [scheduler] placement_strategy must be spread or "
                  "pack, not '%s'", strategy);
        goto out;
    }
    s->policy.service_down_time = (int)conf_int(c, "scheduler", "service_down_time");
    bool bad = false;
    s->policy.ram_multiplier = sign * conf_double(c, "ram_weight_multiplier", &bad);
    s->policy.cpu_multiplier = sign * conf_double(c, "cpu_weight_multiplier", &bad);
    s->policy.disk_multiplier = sign * conf_double(c, "disk_weight_multiplier", &bad);
    s->policy.instances_multiplier = sign * conf_double(c, "instances_weight_multiplier", &bad);
    s->policy.failure_multiplier = conf_double(c, "build_failure_weight_multiplier", &bad);
    s->policy.load_multiplier = conf_double(c, "load_weight_multiplier", &bad);
    s->policy.soft_group_multiplier = conf_double(c, "soft_affinity_weight_multiplier", &bad);
    if (bad)
        goto out;
    s->policy.host_subset_size = (int)conf_int(c, "scheduler", "host_subset_size");
    s->policy.hosts_sampled = (int)conf_int(c, "scheduler", "hosts_sampled");
    s->batch_size = (int)conf_int(c, "scheduler", "batch_size");
    s->lease_seconds = (int)conf_int(c, "scheduler", "lease_seconds");
    s->max_attempts = (int)conf_int(c, "scheduler", "max_attempts");
    s->max_reschedules = (int)conf_int(c, "scheduler", "max_reschedules");
    d->sweep_ms = (int)conf_int(c, "scheduler", "sweep_interval") * 1000;
    const char *name = conf_str(c, "scheduler", "host");
    if (*name) {
        snprintf(s->name, sizeof s->name, "%s", name);
    } else {
        char hn[200] = "localhost";
        (void)gethostname(hn, sizeof hn - 1);
        snprintf(s->name, sizeof s->name, "%s-%ld", hn, (long)getpid());
    }
    s->seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    /* Equally good hosts in an order of this scheduler's own, so that
     * schedulers facing identical hosts claim different ones. */
    s->policy.tie_seed = ((uint64_t)getpid() << 32 ^ (uint64_t)time(NULL)) | 1;

    char *msg = NULL;
    const char *conninfo = conf_str(c, "database", "connection");
    if ((rc = db_sync_connect(conninfo, &s->conn, &msg)) < 0) {
        log_error("main", "cannot connect to the database: %s", msg ? msg : "");
        free(msg);
        goto out;
    }
    /* A placement is one transaction; losing the last few of them in a
     * database crash is harmless (the instance row, the claim and the
     * build request change together, so a lost placement is simply decided
     * again), while waiting for the WAL flush of each would bound
     * placements to the disk's flush rate. */
    if (db_sync_exec(s->conn, "SET synchronous_commit TO off", 0, NULL, NULL, &(struct db_error){0}) < 0)
        log_warn("main", "cannot turn synchronous_commit off; placements will be slower");
    struct db_config dbc;
    db_config_defaults(&dbc);
    dbc.conninfo = conninfo;
    dbc.pool_size = 1;
    dbc.query_timeout_ms = (unsigned)conf_int(c, "database", "query_timeout") * 1000u;
    if ((rc = db_pool_new(d->loop, &dbc, &d->pool)) < 0) {
        log_error("main", "cannot create the database pool: %s", strerror(-rc));
        goto out;
    }
    if (db_listen(d->pool, "nimbus_build_requests", on_notify, on_reconnect, d) < 0
        || db_listen(d->pool, "nimbus_compute_nodes", on_notify, NULL, d) < 0) {
        log_error("main", "cannot listen for notifications");
        goto out;
    }
    int port = (int)conf_int(c, "scheduler", "metrics_port");
    if (port) {
        if (http_server_new(d->loop, NULL, &d->http) < 0
            || http_server_route(d->http, "GET", "/metrics", metrics, d, NULL) < 0
            || http_server_route(d->http, "GET", "/healthz", healthz, d, NULL) < 0
            || http_server_listen(d->http, "127.0.0.1", port, false) < 0) {
            log_error("main", "cannot listen on 127.0.0.1:%d for /metrics", port);
            goto out;
        }
    }
    uv_timer_init(d->loop, &d->sweep);
    d->sweep.data = d;
    uv_timer_start(&d->sweep, on_sweep, 0, (uint64_t)d->sweep_ms);
    uv_signal_init(d->loop, &d->sigterm);
    uv_signal_init(d->loop, &d->sigint);
    d->sigterm.data = d->sigint.data = d;
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    log_info("main", "scheduler %s: %zu filters, %zu weighers, strategy %s", s->name,
             s->pipeline.n_filters, s->pipeline.n_weighers, strategy);
    d->last_heartbeat_ns = 1;
    kick(d);
    uv_run(d->loop, UV_RUN_DEFAULT);
    log_info("main", "stopped: placed %" PRIu64 ", no valid host %" PRIu64
             ", lost races %" PRIu64 ", decision latency p50 %.3f ms p99 %.3f ms",
             s->counters.placed, s->counters.no_valid_host, s->counters.lost_races,
             sched_latency_percentile(s, 50), sched_latency_percentile(s, 99));
    log_info("main", "time: lease %.0f ms, decide %.0f ms, claim %.0f ms, hosts %.0f ms"
             " in %" PRIu64 " cycles", (double)s->counters.ns_lease / 1e6,
             (double)s->counters.ns_decide / 1e6, (double)s->counters.ns_claim / 1e6,
             (double)s->counters.ns_hosts / 1e6, s->counters.cycles);
    status = 0;
out:
    if (d->pool)
        db_pool_free(d->pool);
    http_server_free(d->http);
    if (s->conn)
        db_sync_close(s->conn);
    sched_ctx_free(s);
    uv_mutex_destroy(&d->lock);
    (void)uv_loop_close(d->loop);
    free(d);
    return status;
}
