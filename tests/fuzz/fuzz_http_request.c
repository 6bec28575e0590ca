/* libFuzzer target for the HTTP server: arbitrary bytes are sent to a real
 * server connection over a socketpair, so they go through the same parser,
 * limits, router, body handling (buffered, chunked, streamed with pause and
 * resume) and answer code as a TCP client's bytes.
 *
 * The first input byte picks how many bytes the server reads at a time
 * (1..64, or 64 KiB when its top bit is set), so that heads and bodies are
 * split at every possible place; the rest is the client's byte stream,
 * followed by end of file.  After each input every connection must be
 * closed and every request freed. */
#include "http.h"
#include "http_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arena.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void fuzz_http_cleanup(void);

static uv_loop_t *loop;
static http_server *server;

static void
hello(http_request *req, void *data)
{
    const char *id = http_req_param(req, "id");
    const char *q = http_req_query_param(req, "q");
    const char *h = http_req_header(req, "X-Test");
    char *body = arena_printf(http_req_arena(req), "%s %s %s %s\n", http_req_path(req),
                              id ? id : "-", q ? q : "-", h ? h : "-");
    http_resp_header(req, "X-Request-Id", http_req_id(req));
    if (http_respond(req, 200, "text/plain", body, strlen(body)) < 0)
        abort();
}

static void
echo(http_request *req, void *data)
{
    size_t len;
    const char *body = http_req_body(req, &len);
    if (http_respond(req, 200, NULL, body, len) < 0)
        abort();
}

static void
chunked(http_request *req, void *data)
{
    if (http_resp_start(req, 200, "text/plain", -1) < 0 ||
        http_resp_write(req, "a", 1, NULL, NULL) < 0 ||
        http_resp_write(req, "bc", 2, NULL, NULL) < 0 ||
        http_resp_end(req) < 0)
        abort();
}

/* Streamed upload: pauses after every piece and resumes from a timer. */
struct upload {
    http_request *req;
    uv_timer_t timer;
    size_t bytes;
};

static void
upload_free(uv_handle_t *h)
{
    free(h->data);
}

static void
upload_resume(uv_timer_t *t)
{
    struct upload *u = t->data;
    http_req_resume(u->req);
}

static int
upload_data(http_request *req, const char *p, size_t len, void *arg)
{
    struct upload *u = arg;
    u->bytes += len;
    if (u->bytes > 3000)
        return -ECANCELED;
    http_req_pause(req);
    uv_timer_start(&u->timer, upload_resume, 0, 0);
    return 0;
}

static void
upload_end(http_request *req, int status, void *arg)
{
    struct upload *u = arg;
    char *body = arena_printf(http_req_arena(req), "%zu %d\n", u->bytes, status);
    uv_timer_stop(&u->timer);
    if (http_respond(req, status == 0 ? 200 : 400, "text/plain", body, strlen(body)) < 0)
        abort();
    uv_close((uv_handle_t *)&u->timer, upload_free);
}

static void
upload(http_request *req, void *data)
{
    struct upload *u = calloc(1, sizeof *u);
    if (!u)
        abort();
    u->req = req;
    uv_timer_init(loop, &u->timer);
    u->timer.data = u;
    if (http_req_read_body(req, upload_data, upload_end, u) < 0)
        abort();
}

/* File answers (sendfile): the whole file, or "/file/{n}": n bytes from
 * offset 1, which may run past the end of the file (a short file). */
#define FILE_SIZE (300u * 1024u)   /* More than a socketpair buffers. */
static int file_fd = -1;

static void
file_done(http_request *req, int status, uint64_t sent, void *arg)
{
}

static void
file(http_request *req, void *data)
{
    const char *n = http_req_param(req, "n");
    uint64_t off = 0, len = FILE_SIZE;
    if (n) {
        off = 1;
        len = strtoull(n, NULL, 10) % (FILE_SIZE + 64);
    }
    if (http_respond_file(req, 200, "application/octet-stream", file_fd, off, len,
                          file_done, NULL) < 0)
        abort();
}

/* Answers without reading the streamed body. */
static void
refuse(http_request *req, void *data)
{
    if (http_respond(req, 403, "text/plain", "no\n", 3) < 0)
        abort();
}

static void
setup(void)
{
    struct http_server_config cfg;
    struct http_route_opts echo_opts = { .max_body_bytes = 2048 };
    struct http_route_opts up_opts = { .flags = HTTP_ROUTE_STREAM, .max_body_bytes = 4096 };
    http_server_config_defaults(&cfg);
    cfg.max_header_bytes = 1024;
    cfg.max_body_bytes = 1024;
    cfg.max_pipeline_bytes = 512;
    loop = uv_default_loop();
    char tmpl[] = "/tmp/nimbus-fuzz-file-XXXXXX";
    file_fd = mkstemp(tmpl);
    if (file_fd < 0 || unlink(tmpl) < 0)
        abort();
    char block[4096];
    for (size_t i = 0; i < sizeof block; i++)
        block[i] = (char)('a' + i % 26);
    for (size_t done = 0; done < FILE_SIZE; done += sizeof block)
        if (write(file_fd, block, sizeof block) != (ssize_t)sizeof block)
            abort();
    if (http_server_new(loop, &cfg, &server) < 0 ||
        http_server_route(server, "GET", "/hello", hello, NULL, NULL) < 0 ||
        http_server_route(server, "GET", "/v2.1/servers/{id}", hello, NULL, NULL) < 0 ||
        http_server_route(server, "GET", "/v2.1/servers/detail", hello, NULL, NULL) < 0 ||
        http_server_route(server, "POST", "/v2.1/servers/{id}/action", echo, NULL, NULL) < 0 ||
        http_server_route(server, "POST", "/echo", echo, NULL, &echo_opts) < 0 ||
        http_server_route(server, "GET", "/chunked", chunked, NULL, NULL) < 0 ||
        http_server_route(server, "PUT", "/upload", upload, NULL, &up_opts) < 0 ||
        http_server_route(server, "PUT", "/refuse", refuse, NULL, &up_opts) < 0 ||
        http_server_route(server, "GET", "/file", file, NULL, NULL) < 0 ||
        http_server_route(server, "GET", "/file/{n}", file, NULL, NULL) < 0)
        abort();
}

struct client {
    uv_pipe_t pipe;
    uv_write_t write;
    uv_shutdown_t shutdown;
    char buf[4096];
    bool closed;
};

static void
client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    c->closed = true;
}

static void
client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct client *c = h->data;
    *buf = uv_buf_init(c->buf, sizeof c->buf);
}

/* With FUZZ_HTTP_DEBUG set, the server's answers are copied to stderr. */
static int debug = -1;

static void
client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (debug < 0)
        debug = getenv("FUZZ_HTTP_DEBUG") != NULL;
    if (nread > 0 && debug)
        fwrite(buf->base, 1, (size_t)nread, stderr);
    if (nread < 0 && !uv_is_closing((uv_handle_t *)s))
        uv_close((uv_handle_t *)s, client_closed);
}

static void
client_write_done(uv_write_t *w, int status)
{
}

static void
client_shutdown_done(uv_shutdown_t *s, int status)
{
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    struct client c;
    if (size < 1)
        return 0;
    if (!server)
        setup();
    http_server_set_read_size(server, data[0] & 0x80 ? 65536 : 1 + (data[0] & 63));
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    if (http_server_adopt_fd(server, sv[0]) < 0)
        abort();
    memset(&c, 0, sizeof c);
    uv_pipe_init(loop, &c.pipe, 0);
    c.pipe.data = &c;
    if (uv_pipe_open(&c.pipe, sv[1]) < 0)
        abort();
    uv_buf_t b = uv_buf_init((char *)data + 1, (unsigned)(size - 1));
    if (size > 1 && uv_write(&c.write, (uv_stream_t *)&c.pipe, &b, 1, client_write_done) < 0)
        abort();
    if (uv_shutdown(&c.shutdown, (uv_stream_t *)&c.pipe, client_shutdown_done) < 0)
        abort();
    if (uv_read_start((uv_stream_t *)&c.pipe, client_alloc, client_read) < 0)
        abort();
    uv_run(loop, UV_RUN_DEFAULT);

    struct http_server_stats st;
    http_server_stats(server, &st);
    if (!c.closed || st.connections_open != 0) {
        fprintf(stderr, "fuzz: connection left open after the input\n");
        abort();
    }
    return 0;
}

static void
cleanup_done(void *arg)
{
}

/* Shuts the server down and frees it, so leak checkers see a clean exit. */
void
fuzz_http_cleanup(void)
{
    if (!server)
        return;
    http_server_shutdown(server, cleanup_done, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    http_server_free(server);
    server = NULL;
    close(file_fd);
    file_fd = -1;
    uv_loop_close(loop);
}
