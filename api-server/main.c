/* nimbus-api: parses arguments and configuration, sets up logging, the
 * event loop, the database pool and the API listeners, and runs until
 * SIGTERM.  With [api] workers > 1 a supervisor forks that many worker
 * processes sharing the ports and restarts any that dies. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api.h"
#include "log.h"
#include "migrate.h"
#include "options.h"

struct daemon {
    uv_loop_t loop;
    struct api api;
    db_pool *db;
    uv_signal_t sigterm, sigint, sighup;
    bool stopping;
};

static void
db_closed(void *arg)
{
    struct daemon *d = arg;
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
}

static void
api_stopped(void *arg)
{
    struct daemon *d = arg;
    log_info("main", "listeners closed; closing the database pool");
    db_pool_close(d->db, db_closed, d);
}

/* SIGHUP: reload the token keys (after 'nimbus-manage keys rotate'). */
static void
on_sighup(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    int rc = identity_reload_keys(&d->api);
    if (rc < 0)
        log_error("main", "SIGHUP: keeping the old token keys: %s", strerror(-rc));
    else
        log_info("main", "SIGHUP: token keys reloaded");
}

static void
on_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    if (d->stopping)
        return;
    d->stopping = true;
    log_info("main", "signal %d: finishing in-flight requests", signum);
    api_shutdown(&d->api, api_stopped, d);
}

/* Refuses to start against a schema that is not the code's; a database that
 * cannot be reached is not fatal (requests get 503 until it is back). */
static int
check_schema(const char *conninfo)
{
    db_conn *c = NULL;
    char *msg = NULL;
    if (db_sync_connect(conninfo, &c, &msg) < 0) {
        log_warn("main", "database not reachable at start-up (%s); serving "
                 "503 until it is", msg ? msg : "?");
        free(msg);
        return 0;
    }
    int rc = migrate_check(c, &msg);
    db_sync_close(c);
    if (rc < 0) {
        log_error("main", "%s", msg ? msg : "schema check failed");
        free(msg);
        return rc;
    }
    return 0;
}

static int
run_worker(const struct conf *conf)
{
    struct daemon d;
    memset(&d, 0, sizeof d);
    uv_loop_init(&d.loop);

    struct db_config dc;
    db_config_defaults(&dc);
    dc.conninfo = conf_str(conf, "database", "connection");
    dc.pool_size = (unsigned)conf_int(conf, "database", "pool_size");
    dc.query_timeout_ms = (unsigned)conf_int(conf, "database", "query_timeout") * 1000u;
    int rc = db_pool_new(&d.loop, &dc, &d.db);
    if (rc < 0) {
        log_error("main", "cannot create the database pool: %s", strerror(-rc));
        return 1;
    }
    d.api.loop = &d.loop;
    d.api.conf = conf;
    d.api.db = d.db;
    rc = api_start(&d.api);
    if (rc < 0)
        return 1;
    log_info("main", "listening: identity %d, compute %d, network %d",
             d.api.ports[API_IDENTITY], d.api.ports[API_COMPUTE],
             d.api.ports[API_NETWORK]);

    uv_signal_init(&d.loop, &d.sigterm);
    uv_signal_init(&d.loop, &d.sigint);
    uv_signal_init(&d.loop, &d.sighup);
    d.sigterm.data = d.sigint.data = d.sighup.data = &d;
    uv_signal_start(&d.sighup, on_sighup, SIGHUP);
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);

    uv_run(&d.loop, UV_RUN_DEFAULT);

    api_free(&d.api);
    versions_free();
    db_pool_free(d.db);
    if (uv_loop_close(&d.loop) != 0)
        log_warn("main", "event loop closed with handles still open");
    log_info("main", "stopped");
    return 0;
}

static volatile sig_atomic_t supervisor_stop, supervisor_hup;

static void
supervisor_signal(int sig)
{
    if (sig == SIGHUP)
        supervisor_hup = 1;
    else
        supervisor_stop = 1;
}

/* Forks 'n' workers, restarts those that die unexpectedly, and passes
 * SIGTERM/SIGINT on. */
static int
run_supervisor(const struct conf *conf, int n)
{
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    if (!pids)
        return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = supervisor_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    int status = 0;
    for (;;) {
        for (int i = 0; i < n && !supervisor_stop; i++) {
            if (pids[i] > 0)
                continue;
            pid_t p = fork();
            if (p == 0) {
                signal(SIGTERM, SIG_DFL);
                signal(SIGINT, SIG_DFL);
                signal(SIGHUP, SIG_DFL);
                _exit(run_worker(conf));
            }
            if (p < 0) {
                log_error("main", "fork: %s", strerror(errno));
                sleep(1);
                continue;
            }
            pids[i] = p;
        }
        if (supervisor_stop) {
            for (int i = 0; i < n; i++)
                if (pids[i] > 0)
                    kill(pids[i], SIGTERM);
            for (int i = 0; i < n; i++)
                if (pids[i] > 0)
                    waitpid(pids[i], NULL, 0);
            break;
        }
        if (supervisor_hup) {
            supervisor_hup = 0;
            for (int i = 0; i < n; i++)
                if (pids[i] > 0)
                    kill(pids[i], SIGHUP);
        }
        int ws;
        pid_t dead = waitpid(-1, &ws, 0);
        if (dead < 0)
            continue;
        for (int i = 0; i < n; i++) {
            if (pids[i] == dead) {
                pids[i] = 0;
                if (!supervisor_stop) {
                    log_error("main", "worker %d exited (status %d); restarting",
                              (int)dead, ws);
                    sleep(1);
                }
            }
        }
    }
    free(pids);
    return status;
}

static void
usage(FILE *out)
{
    fprintf(out, "usage: nimbus-api [--config FILE]\n"
                 "Serves the Identity, Compute and Network APIs.\n"
                 "  --config FILE   configuration file (default %s)\n",
            API_DEFAULT_CONFIG);
}

int
main(int argc, char **argv)
{
    const char *config;
    int status = conf_parse_args(argc, argv, usage, &config);
    if (status >= 0)
        return status;
    signal(SIGPIPE, SIG_IGN);
    struct conf *conf = api_config_load(config);
    if (!conf)
        return 1;
    conf_log_init(conf, "nimbus-api");
    if (check_schema(conf_str(conf, "database", "connection")) < 0) {
        conf_free(conf);
        return 1;
    }
    int workers = (int)conf_int(conf, "api", "workers");
    int rc = workers > 1 ? run_supervisor(conf, workers) : run_worker(conf);
    conf_free(conf);
    return rc;
}
