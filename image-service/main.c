/* nimbus-image: the Image API (Glance v2 compatible).  Parses arguments and
 * configuration, sets up logging, the event loop, the database pool, token
 * authentication and the image store, and serves until SIGTERM, when it
 * stops accepting, lets in-flight requests finish and exits. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img_api.h"
#include "auth_verifier.h"
#include "img_options.h"
#include "img_store.h"
#include "log.h"

struct daemon {
    uv_loop_t loop;
    struct img_ctx ctx;
    uv_signal_t sigterm, sigint;
    bool stopping;
};

static void
db_closed(void *arg)
{
    struct daemon *d = arg;
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
}

static void
http_stopped(void *arg)
{
    struct daemon *d = arg;
    log_info("main", "listener closed; closing the database pool");
    db_pool_close(d->ctx.db, db_closed, d);
}

static void
on_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    if (d->stopping)
        return;
    d->stopping = true;
    log_info("main", "signal %d: finishing in-flight requests", signum);
    img_api_shutdown(&d->ctx, http_stopped, d);
}

static int
run(const struct conf *conf)
{
    struct daemon d;
    memset(&d, 0, sizeof d);
    uv_loop_init(&d.loop);
    struct img_ctx *ctx = &d.ctx;
    ctx->loop = &d.loop;
    ctx->conf = conf;

    const char *dir = conf_str(conf, "image", "store_dir");
    int rc = img_store_fs_new(dir, &ctx->store);
    if (rc < 0) {
        log_error("main", "cannot open the image store %s: %s", dir, strerror(-rc));
        return 1;
    }
    struct db_config dc;
    db_config_defaults(&dc);
    dc.conninfo = conf_str(conf, "database", "connection");
    dc.pool_size = (unsigned)conf_int(conf, "database", "pool_size");
    dc.query_timeout_ms = (unsigned)conf_int(conf, "database", "query_timeout") * 1000u;
    rc = db_pool_new(&d.loop, &dc, &ctx->db);
    if (rc < 0) {
        log_error("main", "cannot create the database pool: %s", strerror(-rc));
        ctx->store->ops->free(ctx->store);
        return 1;
    }
    const char *why = NULL;
    const char *key_dir = conf_str(conf, "identity", "key_dir");
    rc = auth_verifier_new(&d.loop, ctx->db, key_dir, conf_int(conf, "identity", "token_expiration"),
                      &ctx->auth, &why);
    if (rc < 0) {
        log_error("main", "%s (%s): %s", why ? why : "authentication set-up failed", key_dir,
                  strerror(-rc));
        return 1;
    }
    if (img_api_start(ctx) < 0)
        return 1;
    log_info("main", "listening on %s:%d, store %s", conf_str(conf, "image", "host"),
             ctx->port, dir);

    uv_signal_init(&d.loop, &d.sigterm);
    uv_signal_init(&d.loop, &d.sigint);
    d.sigterm.data = d.sigint.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);

    uv_run(&d.loop, UV_RUN_DEFAULT);

    img_api_free(ctx);
    auth_verifier_free(ctx->auth);
    db_pool_free(ctx->db);
    ctx->store->ops->free(ctx->store);
    if (uv_loop_close(&d.loop) != 0)
        log_warn("main", "event loop closed with handles still open");
    log_info("main", "stopped");
    return 0;
}

static void
usage(FILE *out)
{
    fprintf(out, "usage: nimbus-image [--config FILE]\n"
                 "Serves the Image API (Glance v2 compatible).\n"
                 "  --config FILE   configuration file (default %s)\n",
            IMG_DEFAULT_CONFIG);
}

int
main(int argc, char **argv)
{
    const char *config;
    int status = conf_parse_args(argc, argv, usage, &config);
    if (status >= 0)
        return status;
    signal(SIGPIPE, SIG_IGN);
    struct conf *conf = img_config_load(config);
    if (!conf)
        return 1;
    conf_log_init(conf, "nimbus-image");
    int rc = run(conf);
    conf_free(conf);
    return rc;
}
