/* A server built on lib/http for the integration tests in test_http.py.
 *
 * It listens on 127.0.0.1 (port 0 unless --port is given), prints the port
 * on stdout, and shuts down gracefully on SIGTERM, exiting 0 once every
 * connection is gone.  Routes:
 *
 *   GET  /hello                    fixed text
 *   POST /echo                     buffered body (max 64 KiB) echoed back
 *   PUT  /upload                   streamed body: byte count and byte sum as
 *                                  JSON; pauses reading every 32 MiB for a
 *                                  few milliseconds to exercise back-pressure
 *   PUT  /upload-capped            streamed body capped at 1 MiB
 *   GET  /slow                     answers after 200 ms
 *   GET  /stream                   chunked answer written piece by piece
 *   GET  /v2.1/servers/{id}        and /v2.1/servers/detail, and
 *   GET|POST /v2.1/servers/{id}/action: JSON naming the route and capture
 *   GET  /query                    query parameters as JSON
 *   GET  /rss                      resident set size in bytes
 *   GET  /stats                    http_server_stats() as JSON
 *   GET  /file                     the file given with --file, sent with
 *                                  http_respond_file(); one "bytes=a-b",
 *                                  "bytes=a-" or "bytes=-n" Range gives 206
 *   GET  /file-short               announces 4096 bytes more than the file has
 *   GET  /file-later               /file, answered after 100 ms
 *   GET  /file-stats               outcomes of the file answers as JSON
 *
 * --cors ORIGINS sets the origins allowed to call across origins
 * (http_server_set_cors); a list it refuses makes the server exit 1.
 *
 * Errors the server generates are answered as JSON by a custom handler. */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"

#define PAUSE_EVERY (32u << 20)

static http_server *server;
static const char *file_path;

/* Outcomes of file answers, as their done callbacks saw them. */
static struct {
    unsigned ok, reset, timedout, nodata, other;
    uint64_t bytes;
} file_stats;
static uv_signal_t sigterm_handle;
static uv_signal_t sigint_handle;

static void
respond_text(http_request *req, int status, const char *ctype, const char *text)
{
    if (http_respond(req, status, ctype, text, strlen(text)) < 0)
        fprintf(stderr, "test-server: answer failed for %s\n", http_req_path(req));
}

static void
on_error(http_request *req, int status, const char *message, void *data)
{
    struct arena *a = http_req_arena(req);
    char *body = arena_printf(a, "{\"error\": {\"code\": %d, \"message\": \"%s\"}}",
                              status, message);
    http_resp_header(req, "X-Error-Handler", "json");
    respond_text(req, status, "application/json", body);
}

static void
hello(http_request *req, void *data)
{
    respond_text(req, 200, "text/plain", "Hello, world!\n");
}

static void
echo(http_request *req, void *data)
{
    size_t len;
    const char *body = http_req_body(req, &len);
    char n[32];
    snprintf(n, sizeof n, "%zu", len);
    http_resp_header(req, "X-Body-Length", n);
    if (http_respond(req, 200, "application/octet-stream", body, len) < 0)
        fprintf(stderr, "test-server: echo answer failed\n");
}

/* ---- Streamed upload. */

struct upload {
    http_request *req;
    uv_timer_t timer;
    uint64_t bytes;
    uint64_t sum;
    uint64_t next_pause;
    unsigned pauses;
};

static void
upload_free_cb(uv_handle_t *h)
{
    free(h->data);
}

static void
upload_resume_cb(uv_timer_t *t)
{
    struct upload *u = t->data;
    http_req_resume(u->req);
}

static int
upload_data(http_request *req, const char *data, size_t len, void *arg)
{
    struct upload *u = arg;
    const unsigned char *p = (const unsigned char *)data;
    uint64_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum += p[i];
    u->sum += sum;
    u->bytes += len;
    if (u->bytes >= u->next_pause) {
        u->next_pause += PAUSE_EVERY;
        u->pauses++;
        http_req_pause(req);
        uv_timer_start(&u->timer, upload_resume_cb, 5, 0);
    }
    return 0;
}

static void
upload_end(http_request *req, int status, void *arg)
{
    struct upload *u = arg;
    struct arena *a = http_req_arena(req);
    uv_timer_stop(&u->timer);
    if (status == 0) {
        char *body = arena_printf(a, "{\"bytes\": %" PRIu64 ", \"sum\": %" PRIu64
                                  ", \"pauses\": %u}", u->bytes, u->sum, u->pauses);
        respond_text(req, 200, "application/json", body);
    } else if (status == -E2BIG) {
        on_error(req, 413, "Upload too large.", NULL);
    } else {
        char *msg = arena_printf(a, "Upload failed: %s.", strerror(-status));
        on_error(req, 400, msg, NULL);
    }
    uv_close((uv_handle_t *)&u->timer, upload_free_cb);
}

static void
upload(http_request *req, void *data)
{
    struct upload *u = calloc(1, sizeof *u);
    if (!u) {
        on_error(req, 500, "Out of memory.", NULL);
        return;
    }
    u->req = req;
    u->next_pause = PAUSE_EVERY;
    uv_timer_init(uv_default_loop(), &u->timer);
    u->timer.data = u;
    if (http_req_read_body(req, upload_data, upload_end, u) < 0) {
        on_error(req, 500, "Cannot read the body.", NULL);
        uv_close((uv_handle_t *)&u->timer, upload_free_cb);
    }
}

/* ---- Streamed upload received into the handler's own buffer
 * (http_req_set_body_buffer()).  The answer tells how many pieces arrived
 * in that buffer and whether one ever came from before the place offered
 * or past its end (the server's bug). */

#define INPLACE_BUF (256u * 1024u)

struct inplace {
    char buf[INPLACE_BUF];
    size_t fill;               /* Body bytes kept, compacted, at the start. */
    const char *offered;       /* Place of the last read offered. */
    size_t offered_len;
    uint64_t bytes, sum;
    unsigned in_place, copied;
    bool bad;
};

static char *
inplace_buffer(http_request *req, size_t *len, void *arg)
{
    struct inplace *u = arg;
    if (INPLACE_BUF - u->fill < 4096)
        u->fill = 0;           /* Start over: the bytes were summed already. */
    size_t room = INPLACE_BUF - u->fill;
    if (*len > room)
        *len = room;
    u->offered = u->buf + u->fill;
    u->offered_len = *len;
    return (char *)u->offered;
}

static int
inplace_data(http_request *req, const char *data, size_t len, void *arg)
{
    struct inplace *u = arg;
    const unsigned char *p = (const unsigned char *)data;
    for (size_t i = 0; i < len; i++)
        u->sum += p[i];
    u->bytes += len;
    if (data >= u->buf && data < u->buf + INPLACE_BUF) {
        u->in_place++;
        if (data < u->offered || data + len > u->offered + u->offered_len)
            u->bad = true;
        memmove(u->buf + u->fill, data, len);
        u->fill += len;
    } else {
        u->copied++;
    }
    return 0;
}

static void
inplace_end(http_request *req, int status, void *arg)
{
    struct inplace *u = arg;
    if (status == 0)
        respond_text(req, 200, "application/json",
                     arena_printf(http_req_arena(req), "{\"bytes\": %" PRIu64 ", \"sum\": %"
                                  PRIu64 ", \"in_place\": %u, \"copied\": %u, \"bad\": %s}",
                                  u->bytes, u->sum, u->in_place, u->copied,
                                  u->bad ? "true" : "false"));
    else
        on_error(req, 400, "Upload failed.", NULL);
    free(u);
}

static void
upload_inplace(http_request *req, void *data)
{
    struct inplace *u = calloc(1, sizeof *u);
    if (!u) {
        on_error(req, 500, "Out of memory.", NULL);
        return;
    }
    if (http_req_read_body(req, inplace_data, inplace_end, u) < 0) {
        free(u);
        on_error(req, 500, "Cannot read the body.", NULL);
        return;
    }
    http_req_set_body_buffer(req, inplace_buffer);
}

/* ---- Delayed answer. */

static void
slow_free_cb(uv_handle_t *h)
{
    free(h);
}

static void
slow_timer_cb(uv_timer_t *t)
{
    http_request *req = t->data;
    respond_text(req, 200, "text/plain", "slow\n");
    uv_close((uv_handle_t *)t, slow_free_cb);
}

static void
slow(http_request *req, void *data)
{
    uv_timer_t *t = malloc(sizeof *t);
    if (!t) {
        on_error(req, 500, "Out of memory.", NULL);
        return;
    }
    uv_timer_init(uv_default_loop(), t);
    t->data = req;
    uv_timer_start(t, slow_timer_cb, 200, 0);
}

/* ---- Chunked answer: each piece is written from the previous one's done
 * callback. */

#define STREAM_PIECES 5

static void
stream_next(http_request *req, int status, void *arg)
{
    uintptr_t i = (uintptr_t)arg;
    if (status < 0 || i == STREAM_PIECES) {
        if (http_resp_end(req) < 0)
            fprintf(stderr, "test-server: stream end failed\n");
        return;
    }
    char *piece = arena_printf(http_req_arena(req), "piece %u\n", (unsigned)i);
    if (http_resp_write(req, piece, strlen(piece), stream_next, (void *)(i + 1)) < 0 &&
        http_resp_end(req) < 0)
        fprintf(stderr, "test-server: stream write failed\n");
}

static void
stream(http_request *req, void *data)
{
    if (http_resp_start(req, 200, "text/plain", -1) < 0) {
        fprintf(stderr, "test-server: stream start failed\n");
        return;
    }
    /* The first piece is copied by the server (no done callback). */
    if (http_resp_write(req, "start\n", 6, NULL, NULL) < 0)
        fprintf(stderr, "test-server: stream write failed\n");
    stream_next(req, 0, (void *)0);
}

/* ---- Router checks. */

static void
server_detail(http_request *req, void *data)
{
    respond_text(req, 200, "application/json", "{\"route\": \"detail\"}");
}

static void
server_show(http_request *req, void *data)
{
    char *body = arena_printf(http_req_arena(req), "{\"route\": \"%s\", \"id\": \"%s\"}",
                              (const char *)data, http_req_param(req, "id"));
    respond_text(req, 200, "application/json", body);
}

static int
query_cb(const char *name, const char *value, void *arg)
{
    struct arena *a = ((void **)arg)[0];
    char **out = ((void **)arg)[1];
    *out = arena_printf(a, "%s%s\"%s\": \"%s\"", *out, **out ? ", " : "", name, value);
    return 0;
}

static void
query(http_request *req, void *data)
{
    struct arena *a = http_req_arena(req);
    char *items = arena_strdup(a, "");
    void *arg[2] = { a, &items };
    if (http_req_query_each(req, query_cb, arg) != 0)
        items = arena_strdup(a, "");
    const char *x = http_req_query_param(req, "x");
    respond_text(req, 200, "application/json",
                 arena_printf(a, "{\"items\": {%s}, \"x\": \"%s\", \"id\": \"%s\"}", items,
                              x ? x : "(none)", http_req_id(req)));
}

static void
rss(http_request *req, void *data)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    char *body = arena_printf(http_req_arena(req), "%ld\n", resident * sysconf(_SC_PAGESIZE));
    respond_text(req, 200, "text/plain", body);
}

static void
stats(http_request *req, void *data)
{
    struct http_server_stats st;
    http_server_stats(server, &st);
    char *body = arena_printf(http_req_arena(req),
        "{\"requests\": %" PRIu64 ", \"connections_total\": %" PRIu64
        ", \"connections_refused\": %" PRIu64 ", \"timeouts\": %" PRIu64
        ", \"connections_open\": %u, \"2xx\": %" PRIu64 ", \"4xx\": %" PRIu64 "}",
        st.requests, st.connections_total, st.connections_refused, st.timeouts,
        st.connections_open, st.responses[2], st.responses[4]);
    respond_text(req, 200, "application/json", body);
}

/* ---- File answers. */

static void
file_done(http_request *req, int status, uint64_t sent, void *arg)
{
    int fd = (int)(intptr_t)arg;
    (void)req;
    close(fd);
    file_stats.bytes += sent;
    if (status == 0)
        file_stats.ok++;
    else if (status == -ECONNRESET)
        file_stats.reset++;
    else if (status == -ETIMEDOUT)
        file_stats.timedout++;
    else if (status == -ENODATA)
        file_stats.nodata++;
    else
        file_stats.other++;
}

/* Parses one "bytes=a-b", "bytes=a-" or "bytes=-n" range: 1 with
 * [*from, *to) set, 0 to ignore the header, -1 when unsatisfiable. */
static int
parse_range(const char *h, uint64_t size, uint64_t *from, uint64_t *to)
{
    unsigned long long a, b;
    char tail;
    if (!h || strncmp(h, "bytes=", 6) != 0)
        return 0;
    h += 6;
    if (sscanf(h, "-%llu%c", &a, &tail) == 1) {
        if (a == 0)
            return -1;
        *from = a >= size ? 0 : size - a;
        *to = size;
        return 1;
    }
    if (sscanf(h, "%llu-%llu%c", &a, &b, &tail) == 2) {
        if (b < a)
            return 0;
        if (a >= size)
            return -1;
        *from = a;
        *to = b + 1 < size ? b + 1 : size;
        return 1;
    }
    if (sscanf(h, "%llu-%c", &a, &tail) == 1) {
        if (a >= size)
            return -1;
        *from = a;
        *to = size;
        return 1;
    }
    return 0;
}

static void
file(http_request *req, void *data)
{
    bool short_file = data != NULL;
    struct arena *a = http_req_arena(req);
    int fd = file_path ? open(file_path, O_RDONLY | O_CLOEXEC) : -1;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        on_error(req, 404, "No file.", NULL);
        return;
    }
    uint64_t size = (uint64_t)st.st_size, from = 0, to = size;
    int rr = short_file ? 0 : parse_range(http_req_header(req, "Range"), size, &from, &to);
    if (rr < 0) {
        close(fd);
        http_resp_header(req, "Content-Range", arena_printf(a, "bytes */%" PRIu64, size));
        on_error(req, 416, "Range not satisfiable.", NULL);
        return;
    }
    if (rr > 0)
        http_resp_header(req, "Content-Range", arena_printf(a, "bytes %" PRIu64 "-%" PRIu64
                                                            "/%" PRIu64, from, to - 1, size));
    if (short_file)
        to += 4096;
    int r = http_respond_file(req, rr > 0 ? 206 : 200, "application/octet-stream", fd, from,
                              to - from, file_done, (void *)(intptr_t)fd);
    if (r < 0) {
        close(fd);
        on_error(req, 500, "Cannot send the file.", NULL);
    }
}

static void
file_later_cb(uv_timer_t *t)
{
    file(t->data, NULL);
    uv_close((uv_handle_t *)t, slow_free_cb);
}

static void
file_later(http_request *req, void *data)
{
    uv_timer_t *t = malloc(sizeof *t);
    if (!t) {
        on_error(req, 500, "Out of memory.", NULL);
        return;
    }
    uv_timer_init(uv_default_loop(), t);
    t->data = req;
    uv_timer_start(t, file_later_cb, 100, 0);
}

static void
file_stats_get(http_request *req, void *data)
{
    char *body = arena_printf(http_req_arena(req),
        "{\"ok\": %u, \"reset\": %u, \"timedout\": %u, \"nodata\": %u, \"other\": %u, "
        "\"bytes\": %" PRIu64 "}", file_stats.ok, file_stats.reset, file_stats.timedout,
        file_stats.nodata, file_stats.other, file_stats.bytes);
    respond_text(req, 200, "application/json", body);
}

/* ---- Main. */

static void
shutdown_done(void *arg)
{
    /* The process is about to exit: a repeated SIGTERM must not kill it
     * with a signal status once the handlers are gone. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    uv_close((uv_handle_t *)&sigterm_handle, NULL);
    uv_close((uv_handle_t *)&sigint_handle, NULL);
}

static void
on_signal(uv_signal_t *h, int signum)
{
    fprintf(stderr, "test-server: signal %d, shutting down\n", signum);
    http_server_shutdown(server, shutdown_done, NULL);
}

static int
add_routes(http_server *s)
{
    struct http_route_opts echo_opts = { .max_body_bytes = 64 * 1024 };
    struct http_route_opts up_opts = { .flags = HTTP_ROUTE_STREAM };
    struct http_route_opts capped_opts = { .flags = HTTP_ROUTE_STREAM,
                                           .max_body_bytes = 1024 * 1024 };
    int r = 0;
    r = r ? r : http_server_route(s, "GET", "/hello", hello, NULL, NULL);
    r = r ? r : http_server_route(s, "POST", "/echo", echo, NULL, &echo_opts);
    r = r ? r : http_server_route(s, "PUT", "/upload", upload, NULL, &up_opts);
    r = r ? r : http_server_route(s, "PUT", "/upload-capped", upload, NULL, &capped_opts);
    r = r ? r : http_server_route(s, "PUT", "/upload-inplace", upload_inplace, NULL, &up_opts);
    r = r ? r : http_server_route(s, "GET", "/slow", slow, NULL, NULL);
    r = r ? r : http_server_route(s, "GET", "/stream", stream, NULL, NULL);
    r = r ? r : http_server_route(s, "GET", "/v2.1/servers/{id}", server_show, (void *)"show", NULL);
    r = r ? r : http_server_route(s, "GET", "/v2.1/servers/detail", server_detail, NULL, NULL);
    r = r ? r : http_server_route(s, "GET", "/v2.1/servers/{id}/action", server_show,
                                  (void *)"action-get", NULL);
    r = r ? r : http_server_route(s, "POST", "/v2.1/servers/{id}/action", server_show,
                                  (void *)"action-post", NULL);
    r = r ? r : http_server_route(s, "GET", "/query", query, NULL, NULL);
    r = r ? r : http_server_route(s, "GET", "/rss", rss, NULL, NULL);
    r = r ? r : http_server_route(s, "GET", "/stats", stats, NULL, NULL);
    r = r ? r : http_server_route(s, "GET", "/file", file, NULL, NULL);
    r = r ? r : http_server_route(s, "GET", "/file-short", file, (void *)"short", NULL);
    r = r ? r : http_server_route(s, "GET", "/file-stats", file_stats_get, NULL, NULL);
    r = r ? r : http_server_route(s, "GET", "/file-later", file_later, NULL, NULL);
    return r;
}

static void
raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            perror("test-server: setrlimit");
    }
}

int
main(int argc, char **argv)
{
    struct http_server_config cfg;
    int port = 0;
    const char *cors = NULL;
    http_server_config_defaults(&cfg);
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: %s [--port N] [--header-timeout-ms N] "
                    "[--idle-timeout-ms N] [--body-timeout-ms N] [--max-connections N] "
                    "[--max-header-bytes N] [--send-timeout-ms N] [--file PATH] [--cors ORIGINS]\n", argv[0]);
            return 2;
        }
        unsigned long n = strtoul(v, NULL, 10);
        if (strcmp(a, "--port") == 0)
            port = (int)n;
        else if (strcmp(a, "--header-timeout-ms") == 0)
            cfg.header_timeout_ms = (unsigned)n;
        else if (strcmp(a, "--idle-timeout-ms") == 0)
            cfg.idle_timeout_ms = (unsigned)n;
        else if (strcmp(a, "--body-timeout-ms") == 0)
            cfg.body_timeout_ms = (unsigned)n;
        else if (strcmp(a, "--max-connections") == 0)
            cfg.max_connections = (unsigned)n;
        else if (strcmp(a, "--max-header-bytes") == 0)
            cfg.max_header_bytes = n;
        else if (strcmp(a, "--send-timeout-ms") == 0)
            cfg.send_timeout_ms = (unsigned)n;
        else if (strcmp(a, "--file") == 0)
            file_path = v;
        else if (strcmp(a, "--cors") == 0)
            cors = v;
        else {
            fprintf(stderr, "test-server: unknown option %s\n", a);
            return 2;
        }
    }
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);

    uv_loop_t *loop = uv_default_loop();
    int r = http_server_new(loop, &cfg, &server);
    if (r < 0) {
        fprintf(stderr, "test-server: http_server_new: %s\n", strerror(-r));
        return 1;
    }
    http_server_set_error_handler(server, on_error, NULL);
    r = add_routes(server);
    if (r == 0)
        r = http_server_set_cors(server, cors);
    if (r == 0)
        r = http_server_listen(server, "127.0.0.1", port, false);
    if (r < 0) {
        fprintf(stderr, "test-server: setup: %s\n", strerror(-r));
        http_server_shutdown(server, NULL, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
        http_server_free(server);
        return 1;
    }
    uv_signal_init(loop, &sigterm_handle);
    uv_signal_start(&sigterm_handle, on_signal, SIGTERM);
    uv_signal_init(loop, &sigint_handle);
    uv_signal_start(&sigint_handle, on_signal, SIGINT);
    printf("%d\n", http_server_port(server));
    fflush(stdout);

    uv_run(loop, UV_RUN_DEFAULT);

    struct http_server_stats st;
    http_server_stats(server, &st);
    fprintf(stderr, "test-server: exiting: %" PRIu64 " requests, %" PRIu64 " connections, "
            "%u open\n", st.requests, st.connections_total, st.connections_open);
    http_server_free(server);
    r = uv_loop_close(loop);
    if (r < 0) {
        fprintf(stderr, "test-server: uv_loop_close: %s\n", uv_strerror(r));
        return 1;
    }
    return st.connections_open == 0 ? 0 : 1;
}
