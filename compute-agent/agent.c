#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sys/statvfs.h>
#include <sys/sysinfo.h>

#ifdef NIMBUS_HAVE_CURL
#include "channel.h"
#include "console_proxy.h"
#include "disk_move.h"
#include "image_fetch_http.h"
#endif
#include "console_report.h"
#include "http.h"
#include "image_cache.h"
#include "log.h"
#include "state_json.h"
#include "snapshot.h"
#include "storage.h"
#include "util.h"

#include <jansson.h>

struct agent {
    uv_loop_t *loop;
    struct agent_config cfg;
    struct hypervisor *hv;
    struct img_cache *cache;
    struct storage *storage;
    struct reconciler *rc;
    struct snap *snap;                /* Resize and snapshot disk work. */
    struct console_report *consoles;  /* Console tails in the observed state. */

    struct desired_set desired;       /* Read by the pass in flight. */
    bool have_desired;
    struct desired_set next;          /* Arrived during a pass. */
    bool have_next;
    char last_parse_err[256];

    uv_timer_t timer;
    uv_fs_poll_t poll;
    uv_async_t wake;                  /* A create of the reconciler's pool is done. */
    bool wake_closing;
    uv_work_t work;
    bool running, pending, stopping;
    http_server *http;
#ifdef NIMBUS_HAVE_CURL
    struct chan *chan;
    struct img_http *img_http;
    struct cproxy *proxy;             /* Console proxy, or NULL. */
#endif
    int open_handles;
    void (*done)(void *arg);
    void *done_arg;

    /* Results of the pass in flight, handed from the worker. */
    int pass_rc;
    char pass_err[512];               /* The provider's message when pass_rc. */
    struct rc_pass_stats pass_stats;
    char *observed_json;
    size_t state_counts[RC_N_STATES];

    /* on_progress and on_event (the reconciler's pool calls them at once),
     * and what they read that the loop changes: 'chan', 'desired'. */
    pthread_mutex_t progress_mu;
    pthread_mutex_t mu;               /* The counters below (events come from the workers). */
    uint64_t passes, pass_failures, actions, step_failures, events, guest_poweroffs;
    uint64_t last_pass_ns, max_pass_ns;
};

static uint64_t
now_ms(void)
{
    return util_now_ns() / 1000000u;
}

/* Called on the pass's thread and the reconciler's workers, at once, for
 * each reconciler event: the counters are under 'mu', the channel has its
 * own lock, and each line is one write(2) to the events file. */
static void
on_event(void *ctx, const char *uuid, const char *event, const char *detail)
{
    struct agent *a = ctx;
    if (!strcmp(event, "step-failed") || !strcmp(event, "error"))
        log_warn("reconcile", "instance %s: %s: %s", uuid, event, detail);
    else
        log_info("reconcile", "instance %s: %s%s%s", uuid, event, detail[0] ? ": " : "", detail);
    pthread_mutex_lock(&a->mu);
    a->events++;
    if (!strcmp(event, "step-failed"))
        a->step_failures++;
    if (!strcmp(event, "power-off-by-guest"))
        a->guest_poweroffs++;
    pthread_mutex_unlock(&a->mu);
    char ts[32];
    util_iso8601_now(ts);
    char *line = sj_event(a->cfg.node, uuid, event, detail, ts);
    if (!line)
        return;
#ifdef NIMBUS_HAVE_CURL
    pthread_mutex_lock(&a->progress_mu);
    if (a->chan)
        chan_report_event(a->chan, line);
    pthread_mutex_unlock(&a->progress_mu);
#endif
    int fd = !a->cfg.events_file || !a->cfg.events_file[0] ? -1 :
             open(a->cfg.events_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        size_t n = strlen(line);
        line[n] = '\n';   /* The NUL of json_dumps's n+1 bytes becomes the newline. */
        ssize_t w = write(fd, line, n + 1);
        (void)w;
        close(fd);
    }
    free(line);
}

/* The observed state as the reconciler knows it now, with console tails;
 * NULL when out of memory.  Under progress_mu (the pass's thread and the
 * reconciler's pool).  'counts' gets the
 * number of instances per state when not NULL. */
static char *
observed_now(struct agent *a, size_t *counts)
{
    struct rc_observed *obs = NULL;
    size_t n = 0;
    char *json = NULL;
    if (rc_observed(a->rc, &obs, &n) == 0) {
        for (size_t i = 0; counts && i < n; i++)
            counts[obs[i].state]++;
        json = sj_observed(a->cfg.node, obs, n, a->desired.version);
        uint64_t delivered = UINT64_MAX;
#ifdef NIMBUS_HAVE_CURL
        if (a->chan) {
            struct chan_stats cs;
            chan_stats(a->chan, &cs);
            delivered = cs.observed_delivered;
        }
#endif
        char *with = json && a->consoles
                     ? console_report_add(a->consoles, json, now_ms(), delivered)
                     : NULL;
        if (with) {
            free(json);
            json = with;
        }
    }
    rc_observed_free(obs, n);
    return json;
}

/* An instance became active in the middle of a pass: its state goes to
 * nimbus-api now (the pass's thread or a reconciler worker: one at a
 * time, for the console report's memory and the order of the reports).
 * The file source waits for the end of the pass. */
static void
on_progress(void *ctx)
{
#ifdef NIMBUS_HAVE_CURL
    struct agent *a = ctx;
    pthread_mutex_lock(&a->progress_mu);
    if (!a->chan) {
        pthread_mutex_unlock(&a->progress_mu);
        return;
    }
    char *json = observed_now(a, NULL);
    if (json)
        chan_report_observed(a->chan, json);
    pthread_mutex_unlock(&a->progress_mu);
    free(json);
#else
    (void)ctx;
#endif
}

/* A create of the reconciler's pool is done (on the pool's thread): a
 * pass soon, for the steps after it and the observed state. */
static void
on_rc_wake(void *ctx)
{
    struct agent *a = ctx;
    uv_async_send(&a->wake);
}

static void kick(struct agent *a);
static void maybe_done(struct agent *a);

static void
on_wake(uv_async_t *h)
{
    struct agent *a = h->data;
    if (a->stopping)
        maybe_done(a);
    else
        kick(a);
}

static void
pass_work(uv_work_t *w)
{
    struct agent *a = w->data;
    struct rc_pass_stats st = { 0 };
    a->pass_rc = rc_pass(a->rc, &a->desired, now_ms(), &st);
    snprintf(a->pass_err, sizeof a->pass_err, "%s", a->pass_rc ? hv_err(a->hv) : "");
    a->pass_stats = st;
    memset(a->state_counts, 0, sizeof a->state_counts);
    /* The pool's threads report (on_progress) while the pass ends. */
    pthread_mutex_lock(&a->progress_mu);
    a->observed_json = observed_now(a, a->state_counts);
    pthread_mutex_unlock(&a->progress_mu);
    if (a->cfg.image_max_age_s && a->cache) {
        const char **ids = calloc(a->desired.n * 3 + 1, sizeof *ids);
        size_t k = 0;
        for (size_t i = 0; ids && i < a->desired.n; i++) {
            ids[k++] = a->desired.insts[i].image.id;
            ids[k++] = a->desired.insts[i].kernel.id;
            ids[k++] = a->desired.insts[i].ramdisk.id;
        }
        if (ids)
            img_cache_clean(a->cache, ids, k, (time_t)a->cfg.image_max_age_s, time(NULL));
        free(ids);
    }
}

static int
write_atomic(const char *path, const char *text)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "we");
    if (!f)
        return -errno;
    fputs(text, f);
    fputc('\n', f);
    if (fclose(f) != 0) {
        unlink(tmp);
        return -EIO;
    }
    return rename(tmp, path) < 0 ? -errno : 0;
}

static void take_desired(struct agent *a, struct desired_set *ds);

static void
pass_done(uv_work_t *w, int status)
{
    struct agent *a = w->data;
    a->running = false;
    pthread_mutex_lock(&a->mu);
    a->passes++;
    if (a->pass_rc)
        a->pass_failures++;
    a->actions += a->pass_stats.actions;
    a->last_pass_ns = a->pass_stats.duration_ns;
    if (a->pass_stats.duration_ns > a->max_pass_ns)
        a->max_pass_ns = a->pass_stats.duration_ns;
    pthread_mutex_unlock(&a->mu);
    if (a->pass_rc)
        log_warn("reconcile", "pass skipped: cannot list instances: %s", a->pass_err);
    else if (a->pass_stats.actions)
        log_info("reconcile", "pass: %u desired, %u present, %u steps (%u failed) in %.1f ms",
                 a->pass_stats.desired, a->pass_stats.actual, a->pass_stats.actions,
                 a->pass_stats.failures, (double)a->pass_stats.duration_ns / 1e6);
#ifdef NIMBUS_HAVE_CURL
    if (a->observed_json && a->chan)
        chan_report_observed(a->chan, a->observed_json);
#endif
    if (a->observed_json && a->cfg.observed_file && a->cfg.observed_file[0]) {
        int r = write_atomic(a->cfg.observed_file, a->observed_json);
        if (r)
            log_warn("agent", "writing %s: %s", a->cfg.observed_file, strerror(-r));
    }
    free(a->observed_json);
    a->observed_json = NULL;
    if (a->stopping) {
        maybe_done(a);
        return;
    }
    /* A step that did something may enable the next (or failed and wants
     * a retry): the timer takes care of retries; changes queued meanwhile
     * run now. */
    if (a->pending || a->have_next) {
        a->pending = false;
        kick(a);
    }
}

static void
kick(struct agent *a)
{
    if (a->stopping)
        return;
    if (a->running) {
        a->pending = true;
        return;
    }
    if (a->have_next) {
        pthread_mutex_lock(&a->progress_mu);
        desired_set_free(&a->desired);
        a->desired = a->next;
        pthread_mutex_unlock(&a->progress_mu);
        memset(&a->next, 0, sizeof a->next);
        a->have_next = false;
        a->have_desired = true;
    }
    if (!a->have_desired)
        return;
    a->running = true;
    a->work.data = a;
    int r = uv_queue_work(a->loop, &a->work, pass_work, pass_done);
    if (r) {
        a->running = false;
        log_error("agent", "cannot queue a reconcile pass: %s", uv_strerror(r));
    }
}

/* Reads and parses the desired-state file; keeps the previous state on
 * any error (a half-written file, a typo). */
static void
load_desired(struct agent *a)
{
    const char *path = a->cfg.desired_file;
    FILE *f = fopen(path, "re");
    if (!f) {
        if (strcmp(a->last_parse_err, "missing")) {
            log_warn("agent", "desired state %s: %s (waiting for it)", path, strerror(errno));
            snprintf(a->last_parse_err, sizeof a->last_parse_err, "missing");
        }
        return;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int r = 0;
    for (;;) {
        if (len + 65536 > cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > SJ_MAX_DOC_BYTES + 65536) {
                r = -E2BIG;
                break;
            }
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                r = -ENOMEM;
                break;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    struct desired_set ds;
    char err[256] = "";
    if (!r)
        r = sj_parse_desired(buf, len, &ds, err, sizeof err);
    else
        snprintf(err, sizeof err, "%s", strerror(-r));
    free(buf);
    if (r) {
        if (strcmp(a->last_parse_err, err)) {
            log_error("agent", "desired state %s: %s (keeping the previous one)", path, err);
            snprintf(a->last_parse_err, sizeof a->last_parse_err, "%s", err);
        }
        return;
    }
    a->last_parse_err[0] = 0;
    take_desired(a, &ds);
}

/* Takes ownership of 'ds' (from a source) and reconciles against it. */
static void
take_desired(struct agent *a, struct desired_set *ds)
{
    log_info("agent", "desired state version %llu: %zu instances",
             (unsigned long long)ds->version, ds->n);
    if (a->have_next)
        desired_set_free(&a->next);
    a->next = *ds;
    a->have_next = true;
    kick(a);
}

#ifdef NIMBUS_HAVE_CURL
/* The console proxy's question: where is the console of 'uuid'? */
static int
console_target(void *ctx, const char *uuid, const char *protocol, char *addr, size_t len)
{
    struct agent *a = ctx;
    if (!a->hv->class->console)
        return -ENOTSUP;
    return a->hv->class->console(a->hv, uuid, protocol, addr, len);
}

static void
on_chan_desired(void *arg, struct desired_set *ds)
{
    take_desired(arg, ds);
}

/* Facts for the register call: what this node offers. */
static char *
node_facts(struct agent *a)
{
    struct sysinfo si;
    struct statvfs vfs;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t ram_mb = sysinfo(&si) == 0 ? (uint64_t)si.totalram * si.mem_unit / (1024 * 1024) : 0;
    uint64_t disk_gb = statvfs(a->cfg.state_dir, &vfs) == 0 ?
                       (uint64_t)vfs.f_blocks * vfs.f_frsize / (1024ull * 1024 * 1024) : 0;
    char model[256] = "";
    FILE *f = fopen("/proc/cpuinfo", "re");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(model, sizeof model, "%s", strchr(line, ':') + 2);
            model[strcspn(model, "\n")] = 0;
            break;
        }
    if (f)
        fclose(f);
    char boot_id[37];
    util_uuid4(boot_id);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}",
                          "boot_id", boot_id, "agent_version", "0.1.0",
                          "hypervisor_type", a->hv->class->virt_type(a->hv),
                          "cpu_model", model, "vcpus", (json_int_t)cpus,
                          "ram_mb", (json_int_t)ram_mb, "disk_gb", (json_int_t)disk_gb);
    if (j && a->proxy)
        json_object_set_new(j, "console_url", json_string(cproxy_url(a->proxy)));
    if (j && a->cfg.migration_uri && a->cfg.migration_uri[0])
        json_object_set_new(j, "libvirt_uri", json_string(a->cfg.migration_uri));
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return s;
}
#endif

static void
on_poll(uv_fs_poll_t *h, int status, const uv_stat_t *prev, const uv_stat_t *cur)
{
    load_desired(h->data);
}

static void
on_timer(uv_timer_t *t)
{
    kick(t->data);
}

void
agent_reload(struct agent *a)
{
    if (a->cfg.desired_file && a->cfg.desired_file[0])
        load_desired(a);
}

/* ---- /healthz and /metrics */

static void
h_healthz(http_request *req, void *data)
{
    struct agent *a = data;
    const char *body = a->have_desired ? "ok\n" : "ok (no desired state yet)\n";
    if (http_respond(req, 200, "text/plain", body, strlen(body)) < 0)
        return;
}

static void
h_metrics(http_request *req, void *data)
{
    struct agent *a = data;
    char buf[4096];
    size_t n = 0;
    pthread_mutex_lock(&a->mu);
#define M(...) n += (size_t)snprintf(buf + n, n < sizeof buf ? sizeof buf - n : 0, __VA_ARGS__)
    M("# TYPE nimbus_compute_reconcile_passes_total counter\n"
      "nimbus_compute_reconcile_passes_total %llu\n", (unsigned long long)a->passes);
    M("nimbus_compute_reconcile_pass_failures_total %llu\n", (unsigned long long)a->pass_failures);
    M("nimbus_compute_reconcile_steps_total %llu\n", (unsigned long long)a->actions);
    M("nimbus_compute_reconcile_step_failures_total %llu\n", (unsigned long long)a->step_failures);
    M("nimbus_compute_events_total %llu\n", (unsigned long long)a->events);
    M("nimbus_compute_guest_poweroffs_total %llu\n", (unsigned long long)a->guest_poweroffs);
    M("nimbus_compute_reconcile_last_pass_seconds %.6f\n", (double)a->last_pass_ns / 1e9);
    M("nimbus_compute_reconcile_max_pass_seconds %.6f\n", (double)a->max_pass_ns / 1e9);
    pthread_mutex_unlock(&a->mu);
    if (!a->running)
        for (int s = 0; s < RC_N_STATES; s++)
            M("nimbus_compute_instances{state=\"%s\"} %zu\n", rc_state_name((enum rc_state)s),
              a->state_counts[s]);
    if (a->cache) {
        struct img_cache_stats cs;
        img_cache_stats(a->cache, &cs);
        M("nimbus_compute_image_cache_hits_total %llu\n", (unsigned long long)cs.hits);
        M("nimbus_compute_image_cache_fetches_total %llu\n", (unsigned long long)cs.fetches);
        M("nimbus_compute_image_cache_hash_failures_total %llu\n", (unsigned long long)cs.hash_failures);
        M("nimbus_compute_image_cache_overlays_created_total %llu\n", (unsigned long long)cs.overlays_created);
        M("nimbus_compute_image_cache_cleaned_total %llu\n", (unsigned long long)cs.cleaned);
    }
#undef M
    if (n >= sizeof buf)
        n = sizeof buf - 1;
    if (http_respond(req, 200, "text/plain; version=0.0.4", buf, n) < 0)
        return;
}

/* GET /v1/instances/{uuid}/console?length=N: the console log's tail, for
 * nimbus-api's os-getConsoleOutput ("openstack console log show").  When
 * the agent has a node credential, callers must present it. */
static void
h_console(http_request *req, void *data)
{
    struct agent *a = data;
    if (a->cfg.node_token && a->cfg.node_token[0]) {
        const char *h = http_req_header(req, "Authorization");
        if (!h || strncmp(h, "Bearer ", 7) || !util_streq_ct(h + 7, a->cfg.node_token)) {
            if (http_respond(req, 401, "text/plain", "unauthorized\n", 13) < 0)
                return;
            return;
        }
    }
    const char *len_s = http_req_query_param(req, "length");
    long lines = len_s ? strtol(len_s, NULL, 10) : 0;
    if (lines < 0 || lines > 100000)
        lines = 0;
    char *out = NULL;
    size_t n = 0;
    int r = storage_console(a->storage, http_req_param(req, "uuid"), (unsigned)lines, &out, &n);
    if (r) {
        const char *msg = r == -EINVAL ? "invalid instance id\n" : "no console log\n";
        if (http_respond(req, r == -EINVAL ? 400 : 404, "text/plain", msg, strlen(msg)) < 0)
            return;
        return;
    }
    if (http_respond(req, 200, "text/plain; charset=utf-8", out, n) < 0) {
        free(out);
        return;
    }
    free(out);
}

/* ---- life cycle */

int
agent_start(uv_loop_t *loop, const struct agent_config *cfg, struct agent **out,
            char *err, size_t errlen)
{
    struct agent *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    *out = a;
    a->loop = loop;
    a->cfg = *cfg;
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->progress_mu, NULL);
    int r = hv_open(&cfg->hv, &a->hv, err, errlen);
    if (r)
        return r;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/images", cfg->state_dir);
    struct img_fetcher f = { img_fetch_dir, (void *)cfg->image_source_dir };
    if (cfg->image_fetch && !strcmp(cfg->image_fetch, "http")) {
#ifdef NIMBUS_HAVE_CURL
        struct img_http_config hc = { .image_url = cfg->image_url,
                                      .node_token = cfg->node_token };
        if ((r = img_http_new(&hc, &a->img_http))) {
            snprintf(err, errlen, "image fetch over http: %s", r == -EINVAL
                     ? "[agent] image_url and [source] node_token_file are required"
                     : strerror(-r));
            return r;
        }
        f = (struct img_fetcher){ img_fetch_http, a->img_http };
#else
        snprintf(err, errlen, "built without libcurl: no image fetch over http");
        return -ENOTSUP;
#endif
    } else if (cfg->image_fetch && cfg->image_fetch[0] && strcmp(cfg->image_fetch, "dir")) {
        snprintf(err, errlen, "[agent] image_fetch must be dir or http, not '%s'", cfg->image_fetch);
        return -EINVAL;
    }
    if ((r = img_cache_new(dir, f, &a->cache))) {
        snprintf(err, errlen, "image cache %s: %s", dir, strerror(-r));
        return r;
    }
    bool containers = !strcmp(cfg->hv.type, "oci");
    if ((r = storage_new(cfg->state_dir, a->cache, containers, &a->storage))) {
        snprintf(err, errlen, "state directory %s: %s", cfg->state_dir, strerror(-r));
        return r;
    }
    struct rc_storage si = storage_interface(a->storage);
    struct snap_config sc = { .image_url = cfg->image_url, .node_token = cfg->node_token };
#ifdef NIMBUS_HAVE_CURL
    sc.auth = a->img_http;
#endif
    if ((r = snap_new(&sc, a->storage, &a->snap)) ||
        (r = console_report_new(a->storage, &a->consoles))) {
        snprintf(err, errlen, "agent: %s", strerror(-r));
        return r;
    }
    snap_attach(a->snap, &si);
#ifdef NIMBUS_HAVE_CURL
    if (!containers) {
        si.import_disk = dmove_import;
        si.import_ctx = a->storage;
    }
#endif
    if ((r = rc_new(a->hv, &si, &cfg->rc, on_event, a, &a->rc))) {
        snprintf(err, errlen, "reconciler: %s", strerror(-r));
        return r;
    }
    rc_set_progress(a->rc, on_progress);
    uv_async_init(loop, &a->wake, on_wake);
    a->wake.data = a;
    a->open_handles++;
    rc_set_wake(a->rc, on_rc_wake);
    log_info("agent", "node %s: hypervisor %s (%s), state in %s", cfg->node, cfg->hv.type,
             a->hv->class->virt_type(a->hv), cfg->state_dir);

    if (cfg->listen_host && cfg->listen_host[0]) {
        if ((r = http_server_new(loop, NULL, &a->http)) ||
            (r = http_server_route(a->http, "GET", "/healthz", h_healthz, a, NULL)) ||
            (r = http_server_route(a->http, "GET", "/metrics", h_metrics, a, NULL)) ||
            (r = http_server_route(a->http, "GET", "/v1/instances/{uuid}/console", h_console, a,
                                   NULL)) ||
            (r = http_server_listen(a->http, cfg->listen_host, cfg->listen_port, false))) {
            snprintf(err, errlen, "listening on %s:%d: %s", cfg->listen_host, cfg->listen_port,
                     strerror(-r));
            return r;
        }
    }
    uv_timer_init(loop, &a->timer);
    a->timer.data = a;
    a->open_handles++;
    uv_timer_start(&a->timer, on_timer, cfg->interval_ms, cfg->interval_ms);
    if (cfg->source && !strcmp(cfg->source, "http")) {
#ifdef NIMBUS_HAVE_CURL
        if (cfg->console_listen && cfg->console_listen[0]) {
            char instances_dir[PATH_MAX];
            storage_inst_dir(a->storage, "", instances_dir);
            instances_dir[strlen(instances_dir) - 1] = 0;   /* Without the trailing '/'. */
            struct cproxy_config pc = {
                .listen_host = cfg->console_listen, .port = cfg->console_port,
                .public_url = cfg->console_public_url, .api_url = cfg->api_url,
                .node = cfg->node, .node_token = cfg->node_token,
                .instances_dir = instances_dir,
            };
            if ((r = cproxy_start(&pc, console_target, a, &a->proxy, err, errlen)))
                return r;
            log_info("agent", "console proxy at %s", cproxy_url(a->proxy));
        }
        char *facts = node_facts(a);
        struct chan_config cc = {
            .api_url = cfg->api_url, .node = cfg->node, .token = cfg->node_token,
            .wait_s = cfg->poll_wait_s, .heartbeat_ms = cfg->heartbeat_ms,
            .register_json = facts, .inventory_json = facts,
        };
        r = chan_start(loop, &cc, on_chan_desired, a, &a->chan);
        free(facts);
        if (r) {
            snprintf(err, errlen, "agent channel: %s", strerror(-r));
            return r;
        }
        log_info("agent", "desired state from %s (long poll)", cfg->api_url);
#else
        snprintf(err, errlen, "built without libcurl: no http source");
        return -ENOTSUP;
#endif
    } else if (cfg->desired_file && cfg->desired_file[0]) {
        uv_fs_poll_init(loop, &a->poll);
        a->poll.data = a;
        a->open_handles++;
        uv_fs_poll_start(&a->poll, on_poll, cfg->desired_file, 500);
        load_desired(a);
    } else {
        log_warn("agent", "no desired-state source configured: doing nothing");
    }
    return 0;
}

static void
handle_closed(uv_handle_t *h)
{
    struct agent *a = h->data;
    a->open_handles--;
    maybe_done(a);
}

static void
http_closed(void *arg)
{
    struct agent *a = arg;
    http_server_free(a->http);
    a->http = NULL;
    a->open_handles--;
    maybe_done(a);
}

static void
maybe_done(struct agent *a)
{
    /* The creates in flight finish before the agent does: the wake-up
     * stays open for them, then closes. */
    if (a->stopping && !a->running && a->wake.loop && !a->wake_closing && rc_idle(a->rc)) {
        a->wake_closing = true;
        rc_set_wake(a->rc, NULL);
        uv_close((uv_handle_t *)&a->wake, handle_closed);
    }
    if (a->stopping && !a->running && a->open_handles == 0 && a->done) {
        void (*done)(void *) = a->done;
        a->done = NULL;
        done(a->done_arg);
    }
}

void
agent_stop(struct agent *a, void (*done)(void *arg), void *arg)
{
    a->stopping = true;
    a->done = done;
    a->done_arg = arg;
    if (uv_is_active((uv_handle_t *)&a->timer) || a->timer.loop) {
        uv_timer_stop(&a->timer);
        uv_close((uv_handle_t *)&a->timer, handle_closed);
    }
    if (a->cfg.desired_file && a->cfg.desired_file[0] && a->poll.loop) {
        uv_fs_poll_stop(&a->poll);
        uv_close((uv_handle_t *)&a->poll, handle_closed);
    }
#ifdef NIMBUS_HAVE_CURL
    pthread_mutex_lock(&a->progress_mu);
    chan_stop(a->chan);
    a->chan = NULL;
    pthread_mutex_unlock(&a->progress_mu);
    cproxy_stop(a->proxy);
    a->proxy = NULL;
#endif
    if (a->http) {
        a->open_handles++;
        http_server_shutdown(a->http, http_closed, a);
    }
    maybe_done(a);
}

void
agent_free(struct agent *a)
{
    if (!a)
        return;
    /* The pool's creates finish while the channel can still take events. */
    if (a->rc)
        rc_set_wake(a->rc, NULL);
    rc_free(a->rc);
#ifdef NIMBUS_HAVE_CURL
    chan_stop(a->chan);
    cproxy_stop(a->proxy);
#endif
    snap_free(a->snap);
    console_report_free(a->consoles);
    storage_free(a->storage);
    img_cache_free(a->cache);
#ifdef NIMBUS_HAVE_CURL
    img_http_free(a->img_http);
#endif
    hv_close(a->hv);
    http_server_free(a->http);
    desired_set_free(&a->desired);
    desired_set_free(&a->next);
    free(a->observed_json);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->progress_mu);
    free(a);
}

int
agent_port(const struct agent *a)
{
    return a->http ? http_server_port(a->http) : 0;
}
