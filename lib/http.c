/* HTTP/1.1 server on libuv and http-parser.
 *
 * Structure.  A connection (struct http_conn) owns a socket, one timer and
 * an http_parser.  Requests on a connection are handled strictly one at a
 * time: the request being parsed or handled is 'cur', and parsing of the
 * next one only resumes once 'cur' has been answered (its answer may still
 * be in the socket's write queue: answers are written in order anyway).
 * Bytes that arrive meanwhile are kept in the connection's pending buffer,
 * at most max_pipeline_bytes of them; reading stops beyond that.
 *
 * Reads go into one buffer shared by every connection of the server and are
 * parsed in place; only bytes that cannot be parsed yet are copied into the
 * connection's own pending buffer.  The parser is paused in
 * on_headers_complete and on_message_complete so that the connection code,
 * not a parser callback, decides what happens next.
 *
 * Lifetimes are reference counts.  A connection stays allocated while its
 * handles are open or a request refers to it; a request stays allocated
 * while it is the connection's current request, while its handler has not
 * answered, while it has writes in flight, or while a deferred callback
 * refers to it.  Callbacks into the handler that could otherwise happen
 * inside one of the handler's own calls (on_end, the 'done' of a dropped
 * write, parsing the next pipelined request after an asynchronous answer)
 * are deferred to a uv_idle callback, so no handler code is ever re-entered.
 *
 * File answers (http_respond_file) keep their request current until the
 * whole body has been sent with sendfile(2) from thread-pool jobs; see
 * "Answers from a file" below.
 */
#include "http.h"
#include "http_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "util.h"

#define HTTP_READ_SIZE 65536u
#define HTTP_BODY_READ_MAX (16u << 20)  /* One read into a handler's buffer. */
#define HTTP_MAX_SEGMENTS 32u
#define HTTP_ARENA_FIRST_BLOCK 4096u
#define HTTP_ARENA_POOL_MAX 256u
#define HTTP_LINGER_MS 2000u
#define HTTP_CLOSE_FLUSH_MS 10000u
#define HTTP_PENDING_KEEP 16384u
#define HTTP_FILE_JOB_MAX (16u << 20)   /* Bytes one sendfile job sends at most... */
#define HTTP_FILE_JOB_NS 20000000u      /* ...and for how long (20 ms). */
#define HTTP_CORS_MAX_ORIGINS 32u
#define HTTP_CORS_ORIGIN_MAX 255u
#define HTTP_CORS_ALLOW_HEADERS "Content-Type, X-Auth-Token, X-Subject-Token, Authorization, " \
    "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
#define HTTP_FILE_WAIT_MS 5             /* A job waits this long for a full socket. */

/* The struct that embeds 'ptr' as 'member' (through void * so that the
 * cast carries no alignment claim of its own). */
#define CONTAINER_OF(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* ---- Deferred work, run from a uv_idle callback. */

struct defer_node {
    struct defer_node *next;
    void (*fn)(struct defer_node *n);
};

/* The idle handle lives apart from the server so that the server can be
 * freed from the shutdown callback, which runs from this handle's close
 * callback. */
struct http_async {
    uv_idle_t idle;
    struct http_server *srv;
    void (*done)(void *arg);
    void *done_arg;
};

/* ---- Router. */

struct http_route {
    char *method;
    char *pattern;
    char **segs;          /* Literal text, or the capture name. */
    bool *is_cap;
    size_t nsegs;
    http_handler_fn fn;
    void *data;
    unsigned flags;
    size_t max_body;
};

struct http_server {
    uv_loop_t *loop;
    struct http_server_config cfg;
    struct http_route **routes;
    size_t nroutes;
    http_error_fn error_fn;
    void *error_data;

    uv_tcp_t *listener;             /* NULL when not listening. */
    bool listener_closing;
    int port;

    struct http_async *async;       /* NULL until first needed. */
    bool idle_active;
    struct defer_node *defer_head;
    struct defer_node *defer_tail;

    struct http_conn *conns;        /* Every allocated connection. */
    size_t nconns;
    size_t nreqs;                   /* Allocated requests. */

    bool shutting_down;
    bool done_called;
    void (*done)(void *arg);
    void *done_arg;

    char *rbuf;                     /* The shared read buffer. */
    size_t read_size;

    struct arena *arena_pool[HTTP_ARENA_POOL_MAX];
    size_t narena_pool;

    uint64_t date_sec;
    char date_line[64];             /* "Date: ...\r\n" */
    size_t date_len;

    struct http_server_stats stats;

    char **cors_origins;            /* Allowed cross-origin callers (copies). */
    size_t ncors;
};

enum conn_timer_mode { TM_NONE, TM_HEADER, TM_IDLE, TM_BODY, TM_SEND, TM_CLOSE };

/* What a paused parser stopped for. */
enum conn_event { EV_NONE, EV_HEAD, EV_MESSAGE };

/* Why a parser callback failed. */
enum conn_cb_err { CBE_NONE, CBE_STOP, CBE_413, CBE_431 };

struct http_conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    struct http_server *srv;
    struct http_conn *prev, *next;
    http_parser parser;
    struct http_request *cur;
    unsigned refs;

    char *pbuf;                     /* Pending, not yet parsed bytes [poff, plen). */
    size_t poff, plen, pcap;

    size_t head_bytes;              /* Bytes of the current request head so far. */
    uint64_t nreq;                  /* Requests completed on this connection. */
    uint64_t accept_ms;
    uint64_t last_done_ms;
    uint64_t last_body_ms;
    uint64_t last_send_ms;          /* Last progress of a file body. */
    uint64_t close_deadline;
    uint64_t timer_at;

    enum conn_event event;
    enum conn_cb_err cb_err;
    struct defer_node defer;

    bool timer_armed;
    bool reading;
    bool eof;
    bool closing;                   /* Graceful close started. */
    bool shutdown_done;
    bool dead;                      /* uv_close() called. */
    bool parser_dead;
    bool in_process;
    bool defer_queued;
    bool no_linger;
    char peer[64];
};

enum req_phase {
    PH_HEAD,        /* Head being parsed. */
    PH_BODY,        /* Body being collected; dispatched at message end. */
    PH_WAIT,        /* Parsing blocked: the handler has the request. */
    PH_STREAM,      /* Streamed body delivered to the handler. */
};

struct resp_header {
    const char *name;
    const char *value;
    struct resp_header *next;
};

struct hpiece {
    uint32_t name_off, name_len, value_off, value_len;
};

struct http_header {
    const char *name;
    const char *value;
};

struct http_write {
    uv_write_t w;
    struct http_request *req;
    void (*done)(http_request *req, int status, void *arg);
    void *arg;
    void *copy;
    struct defer_node defer;
    int status;
    struct http_write *next_free;
    char chunk_head[24];
};

/* A body being sent from a file (http_respond_file).  The states: the head
 * is being written (FS_HEAD), a sendfile job runs on the thread pool
 * (FS_JOB), the socket is full and the loop waits for it to become
 * writable (FS_POLL), the answer is over and 'done' is queued (FS_DONE).
 * The job writes to its own duplicate of the socket descriptor, which this
 * struct owns, so that closing the connection while a job runs can never
 * make the job write to a reused descriptor. */
enum file_state { FS_HEAD, FS_JOB, FS_POLL, FS_DONE };

struct http_file_send {
    uv_work_t work;
    uv_poll_t poll;
    struct http_request *req;
    int fd;                         /* The caller's file. */
    int sock;                       /* Our duplicate of the socket. */
    uint64_t off, remaining, sent;
    uint64_t job_sent;              /* Set by the job. */
    int job_err;                    /* Set by the job; 0 when the socket was full. */
    bool job_more;                  /* Set by the job: it stopped at its limits. */
    int conn_err;                   /* Why the connection was closed under us. */
    int status;
    enum file_state state;
    http_file_done_fn done;
    void *arg;
    struct defer_node defer;
};

struct http_request {
    struct arena *arena;
    struct http_conn *conn;
    struct http_server *srv;
    unsigned refs;
    enum req_phase phase;

    const char *method;
    char *path;
    char *query;
    struct http_header *headers;
    size_t nheaders;
    const char **pnames, **pvalues;
    size_t nparams;
    char *body;
    size_t body_len, body_cap, body_max;
    int64_t content_length;
    uint64_t body_seen;
    uint64_t head_start_ms;
    uint64_t start_ns;
    char *id;
    void *user_data;
    const struct http_route *route;
    int pending_error;
    const char *pending_msg;
    const char *allow;

    /* Head being parsed: strings are appended to hbuf, separated by NULs. */
    char *hbuf;
    size_t hlen, hcap;
    struct hpiece *hp;
    size_t nhp, hpcap;
    uint32_t url_off, url_len;
    int last_cb;

    http_body_data_fn on_data;
    http_body_end_fn on_end;
    http_body_buf_fn body_buf;
    void *body_arg;
    int end_status;
    struct defer_node end_defer;

    struct resp_header *rh_head, *rh_tail;
    struct http_write *free_writes;
    unsigned writes_pending;
    int64_t resp_remaining;         /* For a streamed answer of known length. */
    struct http_file_send *fs;      /* For a file answer. */
    int status;

    unsigned short http_major, http_minor;
    bool dispatched;
    bool answered;
    bool resp_started;
    bool resp_chunked;
    bool msg_complete;
    bool has_body;
    bool stream_route;
    bool body_reading;              /* http_req_read_body() called. */
    bool body_ended;                /* on_end delivered or queued. */
    bool paused;
    bool aborted;
    bool is_head;
    bool suppress_body;
    bool keep_alive;
    bool close_after;
    bool expect_continue;
    bool preflight;                 /* A CORS preflight the server answers. */
    const char *cors_origin;        /* Allowed Origin of the request, or NULL. */
};

static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";

static void conn_abort(struct http_conn *c);
static void conn_finish(struct http_conn *c);
static void conn_unref(struct http_conn *c);
static void conn_after_io(struct http_conn *c);
static void conn_schedule(struct http_conn *c);
static void conn_update_timer(struct http_conn *c);
static void conn_update_reading(struct http_conn *c);
static void req_unref(http_request *req);
static void file_conn_gone(struct http_file_send *fs);
static void server_check_done(http_server *s);
static void dispatch_error(struct http_conn *c, http_request *req, int status,
                           const char *msg, bool close);

/* ---- Small helpers. */

const char *
http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: break;
    }
    if (status >= 100 && status < 200)
        return "Informational";
    if (status >= 200 && status < 300)
        return "Success";
    if (status >= 300 && status < 400)
        return "Redirection";
    if (status >= 400 && status < 500)
        return "Client Error";
    return "Server Error";
}

/* Writes 'v' in decimal at 'p' and returns the end. */
static char *
put_u64(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *
put_str(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUT_LIT(p, lit) put_str((p), (lit), sizeof(lit) - 1)

static bool
has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* ---- Deferred work. */

static void
async_idle_cb(uv_idle_t *h)
{
    struct http_async *as = h->data;
    http_server *s = as->srv;
    struct defer_node *n = s->defer_head;
    s->defer_head = s->defer_tail = NULL;
    while (n) {
        struct defer_node *next = n->next;
        n->next = NULL;
        n->fn(n);
        n = next;
    }
    /* 's' may have finished its shutdown above, but it is not freed before
     * the idle handle's close callback, so it is still valid here. */
    if (!s->defer_head && s->idle_active && !s->done_called) {
        uv_idle_stop(&as->idle);
        s->idle_active = false;
    }
}

static void
async_ensure(http_server *s)
{
    if (s->async)
        return;
    struct http_async *as = calloc(1, sizeof *as);
    if (!as) {
        fputs("nimbus: out of memory\n", stderr);
        abort();
    }
    as->srv = s;
    uv_idle_init(s->loop, &as->idle);
    as->idle.data = as;
    s->async = as;
}

static void
defer(http_server *s, struct defer_node *n, void (*fn)(struct defer_node *n))
{
    async_ensure(s);
    n->fn = fn;
    n->next = NULL;
    if (s->defer_tail)
        s->defer_tail->next = n;
    else
        s->defer_head = n;
    s->defer_tail = n;
    if (!s->idle_active) {
        uv_idle_start(&s->async->idle, async_idle_cb);
        s->idle_active = true;
    }
}

static void
async_close_cb(uv_handle_t *h)
{
    struct http_async *as = h->data;
    void (*done)(void *arg) = as->done;
    void *arg = as->done_arg;
    free(as);
    if (done)
        done(arg);
}

/* Calls the shutdown callback once nothing is left.  The callback runs from
 * a close callback, so no server code is on the stack when it runs. */
static void
server_check_done(http_server *s)
{
    if (!s->shutting_down || s->done_called || s->nconns || s->nreqs ||
        s->listener || s->listener_closing)
        return;
    s->done_called = true;
    async_ensure(s);
    struct http_async *as = s->async;
    s->async = NULL;
    s->idle_active = false;
    as->done = s->done;
    as->done_arg = s->done_arg;
    uv_close((uv_handle_t *)&as->idle, async_close_cb);
}

/* ---- Arena pool. */

static struct arena *
arena_get(http_server *s)
{
    if (s->narena_pool)
        return s->arena_pool[--s->narena_pool];
    return arena_new(HTTP_ARENA_FIRST_BLOCK);
}

static void
arena_put(http_server *s, struct arena *a)
{
    if (s->narena_pool < HTTP_ARENA_POOL_MAX) {
        arena_reset(a);
        s->arena_pool[s->narena_pool++] = a;
    } else {
        arena_free(a);
    }
}

/* ---- Router. */

struct seg {
    const char *p;
    size_t n;
};

/* Splits 'path' into segments; a trailing slash is ignored.  Returns the
 * number of segments, or -1 when there are more than 'max'. */
static int
split_path(const char *path, struct seg *segs, size_t max)
{
    size_t n = 0;
    const char *p = path;
    if (*p == '/')
        p++;
    if (!*p)
        return 0;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (!e && len == 0)
            break;
        if (n == max)
            return -1;
        segs[n].p = p;
        segs[n].n = len;
        n++;
        if (!e)
            break;
        p = e + 1;
        if (!*p)
            break;
    }
    return (int)n;
}

static void
route_free(struct http_route *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nsegs; i++)
        free(r->segs[i]);
    free(r->segs);
    free(r->is_cap);
    free(r->method);
    free(r->pattern);
    free(r);
}

int
http_server_route(http_server *s, const char *method, const char *pattern,
                  http_handler_fn fn, void *data, const struct http_route_opts *opts)
{
    struct seg segs[HTTP_MAX_SEGMENTS];
    if (!s || !method || !*method || !pattern || pattern[0] != '/' || !fn)
        return -EINVAL;
    int n = split_path(pattern, segs, HTTP_MAX_SEGMENTS);
    if (n < 0)
        return -EINVAL;
    struct http_route *r = calloc(1, sizeof *r);
    struct http_route **nr = NULL;
    int ret = -ENOMEM;
    if (!r)
        goto out;
    r->method = strdup(method);
    r->pattern = strdup(pattern);
    r->segs = calloc((size_t)n + 1, sizeof *r->segs);
    r->is_cap = calloc((size_t)n + 1, sizeof *r->is_cap);
    if (!r->method || !r->pattern || !r->segs || !r->is_cap)
        goto out;
    for (int i = 0; i < n; i++) {
        const char *p = segs[i].p;
        size_t len = segs[i].n;
        bool cap = len >= 2 && p[0] == '{' && p[len - 1] == '}';
        if (cap) {
            p++;
            len -= 2;
            if (len == 0 || memchr(p, '{', len) || memchr(p, '}', len)) {
                ret = -EINVAL;
                goto out;
            }
        } else if (memchr(p, '{', len) || memchr(p, '}', len)) {
            ret = -EINVAL;
            goto out;
        }
        r->segs[i] = strndup(p, len);
        if (!r->segs[i])
            goto out;
        r->is_cap[i] = cap;
        r->nsegs = (size_t)i + 1;
    }
    r->nsegs = (size_t)n;
    r->fn = fn;
    r->data = data;
    r->flags = opts ? opts->flags : 0;
    r->max_body = opts ? opts->max_body_bytes : 0;
    nr = realloc(s->routes, (s->nroutes + 1) * sizeof *nr);
    if (!nr)
        goto out;
    s->routes = nr;
    s->routes[s->nroutes++] = r;
    r = NULL;
    ret = 0;
out:
    route_free(r);
    return ret;
}

static bool
route_matches_path(const struct http_route *r, const struct seg *segs, size_t n)
{
    if (r->nsegs != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (r->is_cap[i]) {
            if (segs[i].n == 0)
                return false;
        } else if (strlen(r->segs[i]) != segs[i].n ||
                   memcmp(r->segs[i], segs[i].p, segs[i].n) != 0) {
            return false;
        }
    }
    return true;
}

/* True when 'a' is more specific than 'b': at the first segment where one
 * has a literal and the other a capture, the literal wins. */
static bool
route_more_specific(const struct http_route *a, const struct http_route *b)
{
    for (size_t i = 0; i < a->nsegs; i++)
        if (a->is_cap[i] != b->is_cap[i])
            return !a->is_cap[i];
    return false;
}

static const struct http_route *
route_find(const http_server *s, const char *method, const struct seg *segs,
           size_t n, bool *path_found)
{
    const struct http_route *best = NULL;
    for (size_t i = 0; i < s->nroutes; i++) {
        const struct http_route *r = s->routes[i];
        if (!route_matches_path(r, segs, n))
            continue;
        *path_found = true;
        if (strcmp(r->method, method) != 0)
            continue;
        if (!best || route_more_specific(r, best))
            best = r;
    }
    return best;
}

/* Builds the Allow header for a path that matched no route of the method. */
static const char *
route_allow(const http_server *s, const struct seg *segs, size_t n, struct arena *a)
{
    size_t cap = 64, len = 0;
    bool get = false, head = false;
    for (size_t i = 0; i < s->nroutes; i++)
        cap += strlen(s->routes[i]->method) + 2;
    char *out = arena_alloc(a, cap);
    out[0] = '\0';
    for (size_t i = 0; i < s->nroutes; i++) {
        const struct http_route *r = s->routes[i];
        if (!route_matches_path(r, segs, n))
            continue;
        bool dup = false;
        for (size_t j = 0; j < i; j++)
            if (route_matches_path(s->routes[j], segs, n) &&
                strcmp(s->routes[j]->method, r->method) == 0)
                dup = true;
        if (dup)
            continue;
        get |= strcmp(r->method, "GET") == 0;
        head |= strcmp(r->method, "HEAD") == 0;
        len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? ", " : "", r->method);
    }
    if (get && !head)
        snprintf(out + len, cap - len, "%s", len ? ", HEAD" : "HEAD");
    return out;
}

int
http_router_match(const http_server *s, const char *method, const char *path,
                  struct arena *a, struct http_route_match *out)
{
    struct seg segs[HTTP_MAX_SEGMENTS];
    memset(out, 0, sizeof *out);
    if (!s || !method || !path || !a)
        return -EINVAL;
    int n = split_path(path, segs, HTTP_MAX_SEGMENTS);
    if (n < 0) {
        out->status = 404;
        return 0;
    }
    bool found = false;
    const struct http_route *r = route_find(s, method, segs, (size_t)n, &found);
    if (!r && strcmp(method, "HEAD") == 0)
        r = route_find(s, "GET", segs, (size_t)n, &found);
    if (!r) {
        out->status = found ? 405 : 404;
        if (found)
            out->allow = route_allow(s, segs, (size_t)n, a);
        return 0;
    }
    size_t ncap = 0;
    for (size_t i = 0; i < r->nsegs; i++)
        ncap += r->is_cap[i];
    if (ncap) {
        out->names = arena_alloc(a, ncap * sizeof *out->names);
        out->values = arena_alloc(a, ncap * sizeof *out->values);
        for (size_t i = 0; i < r->nsegs; i++) {
            if (!r->is_cap[i])
                continue;
            char *v = arena_alloc(a, segs[i].n + 1);
            long len = util_percent_decode(segs[i].p, segs[i].n, v, false);
            if (len < 0) {
                out->status = 400;
                out->nparams = 0;
                return 0;
            }
            v[len] = '\0';
            out->names[out->nparams] = r->segs[i];
            out->values[out->nparams] = v;
            out->nparams++;
        }
    }
    out->fn = r->fn;
    out->data = r->data;
    out->pattern = r->pattern;
    return 0;
}

/* Finds the route object behind a match (each route owns its pattern
 * string), to read its flags and limit. */
static const struct http_route *
router_route_of(const http_server *s, const char *pattern)
{
    for (size_t i = 0; i < s->nroutes; i++)
        if (s->routes[i]->pattern == pattern)
            return s->routes[i];
    return NULL;
}

/* ---- Server. */

void
http_server_config_defaults(struct http_server_config *cfg)
{
    cfg->max_header_bytes = 16384;
    cfg->max_body_bytes = 1024 * 1024;
    cfg->max_connections = 10000;
    cfg->header_timeout_ms = 10000;
    cfg->idle_timeout_ms = 60000;
    cfg->body_timeout_ms = 60000;
    cfg->max_pipeline_bytes = 65536;
    cfg->send_timeout_ms = 60000;
}

static void
default_error_handler(http_request *req, int status, const char *message, void *data)
{
    char body[256];
    int n = snprintf(body, sizeof body, "%d %s: %s\n", status,
                     http_status_text(status), message ? message : "");
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof body)
        n = (int)sizeof body - 1;
    if (http_respond(req, status, "text/plain; charset=utf-8", body, (size_t)n) < 0)
        return;
}

int
http_server_new(uv_loop_t *loop, const struct http_server_config *cfg, http_server **out)
{
    struct http_server_config def;
    http_server_config_defaults(&def);
    if (!loop || !out)
        return -EINVAL;
    http_server *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    s->cfg = def;
    if (cfg) {
        s->cfg = *cfg;
        if (!s->cfg.max_header_bytes)
            s->cfg.max_header_bytes = def.max_header_bytes;
        if (!s->cfg.max_body_bytes)
            s->cfg.max_body_bytes = def.max_body_bytes;
        if (!s->cfg.max_connections)
            s->cfg.max_connections = def.max_connections;
        if (!s->cfg.header_timeout_ms)
            s->cfg.header_timeout_ms = def.header_timeout_ms;
        if (!s->cfg.idle_timeout_ms)
            s->cfg.idle_timeout_ms = def.idle_timeout_ms;
        if (!s->cfg.body_timeout_ms)
            s->cfg.body_timeout_ms = def.body_timeout_ms;
        if (!s->cfg.max_pipeline_bytes)
            s->cfg.max_pipeline_bytes = def.max_pipeline_bytes;
        if (!s->cfg.send_timeout_ms)
            s->cfg.send_timeout_ms = def.send_timeout_ms;
    }
    s->read_size = HTTP_READ_SIZE;
    s->rbuf = malloc(s->read_size);
    if (!s->rbuf) {
        free(s);
        return -ENOMEM;
    }
    s->error_fn = default_error_handler;
    s->port = -1;
    *out = s;
    return 0;
}

void
http_server_set_read_size(http_server *s, size_t n)
{
    if (n == 0 || n > HTTP_READ_SIZE)
        n = HTTP_READ_SIZE;
    s->read_size = n;
}

void
http_server_set_error_handler(http_server *s, http_error_fn fn, void *data)
{
    s->error_fn = fn ? fn : default_error_handler;
    s->error_data = fn ? data : NULL;
}

/* An origin is "scheme://host[:port]": no path, no spaces, no controls. */
static bool
cors_origin_valid(const char *o, size_t n)
{
    if (n < 8 || n > HTTP_CORS_ORIGIN_MAX)
        return false;
    if (strncmp(o, "http://", 7) != 0 && strncmp(o, "https://", 8) != 0)
        return false;
    const char *host = o + (o[4] == 's' ? 8 : 7);
    if (host >= o + n)
        return false;
    for (const char *p = host; p < o + n; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= 0x20 || ch >= 0x7f || ch == '/' || ch == '?' || ch == '#' ||
            ch == '"' || ch == '\\' || ch == ',')
            return false;
    }
    return true;
}

int
http_server_set_cors(http_server *s, const char *origins)
{
    char **list = NULL;
    size_t n = 0;
    const char *p = origins ? origins : "";
    while (*p) {
        p += strspn(p, ", \t");
        size_t len = strcspn(p, ", \t");
        if (!len)
            break;
        if (!cors_origin_valid(p, len) || n >= HTTP_CORS_MAX_ORIGINS)
            goto invalid;
        char **grown = realloc(list, (n + 1) * sizeof *list);
        if (!grown)
            goto nomem;
        list = grown;
        list[n] = strndup(p, len);
        if (!list[n])
            goto nomem;
        n++;
        p += len;
    }
    for (size_t i = 0; i < s->ncors; i++)
        free(s->cors_origins[i]);
    free(s->cors_origins);
    s->cors_origins = list;
    s->ncors = n;
    return 0;
invalid:
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
    return -EINVAL;
nomem:
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
    return -ENOMEM;
}

/* The configured copy of the request's Origin when it is allowed. */
static const char *
cors_match(const http_server *s, const char *origin)
{
    if (!origin)
        return NULL;
    for (size_t i = 0; i < s->ncors; i++)
        if (strcmp(s->cors_origins[i], origin) == 0)
            return s->cors_origins[i];
    return NULL;
}

void
http_server_free(http_server *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nroutes; i++)
        route_free(s->routes[i]);
    free(s->routes);
    for (size_t i = 0; i < s->narena_pool; i++)
        arena_free(s->arena_pool[i]);
    for (size_t i = 0; i < s->ncors; i++)
        free(s->cors_origins[i]);
    free(s->cors_origins);
    free(s->rbuf);
    free(s);
}

void
http_server_stats(const http_server *s, struct http_server_stats *out)
{
    *out = s->stats;
}

int
http_server_port(const http_server *s)
{
    return s->port;
}

static void
refused_close_cb(uv_handle_t *h)
{
    free(h);
}

static void
listener_close_cb(uv_handle_t *h)
{
    http_server *s = h->data;
    free(h);
    if (s) {
        s->listener_closing = false;
        server_check_done(s);
    }
}

static int conn_start(http_server *s, struct http_conn *c);

static void
on_connection(uv_stream_t *server, int status)
{
    http_server *s = server->data;
    if (status < 0 || s->shutting_down)
        return;
    if (s->stats.connections_open >= s->cfg.max_connections) {
        uv_tcp_t *t = malloc(sizeof *t);
        if (!t)
            return;
        uv_tcp_init(s->loop, t);
        if (uv_accept(server, (uv_stream_t *)t) == 0)
            s->stats.connections_refused++;
        uv_close((uv_handle_t *)t, refused_close_cb);
        return;
    }
    struct http_conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    uv_tcp_init(s->loop, &c->h.tcp);
    if (uv_accept(server, &c->h.stream) != 0) {
        c->h.handle.data = NULL;
        uv_close(&c->h.handle, refused_close_cb);
        return;
    }
    uv_tcp_nodelay(&c->h.tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    c->peer[0] = '\0';
    if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
        else
            uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
    }
    if (conn_start(s, c) < 0) {
        c->h.handle.data = NULL;
        uv_close(&c->h.handle, refused_close_cb);
    }
}

int
http_server_listen(http_server *s, const char *host, int port, bool reuseport)
{
    struct sockaddr_storage ss;
    int ret;
    if (!s || !host || port < 0 || port > 65535 || s->listener || s->shutting_down)
        return -EINVAL;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
        return -EINVAL;
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t)
        return -ENOMEM;
    ret = uv_tcp_init_ex(s->loop, t, ss.ss_family);
    if (ret < 0) {
        free(t);
        return ret;
    }
    t->data = NULL;
    if (reuseport) {
        uv_os_fd_t fd;
        int one = 1;
        ret = uv_fileno((uv_handle_t *)t, &fd);
        if (ret == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
            ret = -errno;
        if (ret < 0)
            goto fail;
    }
    ret = uv_tcp_bind(t, (const struct sockaddr *)&ss, 0);
    if (ret < 0)
        goto fail;
    t->data = s;
    ret = uv_listen((uv_stream_t *)t, 4096, on_connection);
    if (ret < 0)
        goto fail;
    int len = sizeof ss;
    ret = uv_tcp_getsockname(t, (struct sockaddr *)&ss, &len);
    if (ret < 0)
        goto fail;
    s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    s->listener = t;
    async_ensure(s);
    return 0;
fail:
    /* The handle's memory is released by its close callback, which does
     * not touch the server. */
    t->data = NULL;
    uv_close((uv_handle_t *)t, listener_close_cb);
    return ret;
}

/* ---- Connection lifetime. */

static void
conn_ref(struct http_conn *c)
{
    c->refs++;
}

static void
conn_unref(struct http_conn *c)
{
    if (--c->refs)
        return;
    http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->pbuf);
    free(c);
    s->nconns--;
    server_check_done(s);
}

static void
conn_handle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

/* Ends the body of a streaming request with 'status', once. */
static void
body_end_cb(struct defer_node *n)
{
    http_request *req = CONTAINER_OF(n, http_request, end_defer);
    if (req->on_end)
        req->on_end(req, req->end_status, req->body_arg);
    req_unref(req);
}

static void
req_body_end(http_request *req, int status)
{
    if (req->body_ended || !req->body_reading)
        return;
    req->body_ended = true;
    req->end_status = status;
    req->refs++;
    defer(req->srv, &req->end_defer, body_end_cb);
}

/* The body of a dispatched streaming request cannot continue: on_end gets
 * 'status', parsing stops, and the connection closes after the answer. */
static void
req_body_fail(http_request *req, int status)
{
    struct http_conn *c = req->conn;
    req->phase = PH_WAIT;
    if (c && c->cur == req)
        c->parser_dead = true;
    if (req->body_reading)
        req_body_end(req, status);
    else
        req->end_status = status;
}

/* Detaches the current request from a connection that is going away. */
static void
conn_drop_cur(struct http_conn *c, int status)
{
    http_request *req = c->cur;
    if (!req)
        return;
    c->cur = NULL;
    if (req->dispatched) {
        req->aborted = true;
        if (!req->msg_complete)
            req_body_end(req, status);
    }
    if (req->fs)
        file_conn_gone(req->fs);
    req_unref(req);
}

static void
conn_abort(struct http_conn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    c->reading = false;
    c->srv->stats.connections_open--;
    uv_close(&c->h.handle, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    conn_drop_cur(c, -ECONNRESET);
}

static void
conn_shutdown_cb(uv_shutdown_t *sr, int status)
{
    struct http_conn *c = sr->data;
    c->shutdown_done = true;
    if (!c->dead && (status < 0 || c->eof || c->no_linger)) {
        conn_abort(c);
    } else if (!c->dead) {
        /* Lingering close: read and drop what the client still sends, so
         * that closing does not reset the connection before the client
         * has read the answer. */
        c->close_deadline = uv_now(c->srv->loop) + HTTP_LINGER_MS;
        conn_update_reading(c);
        conn_update_timer(c);
    }
    conn_unref(c);
}

/* Closes gracefully: the answers already queued are written first. */
static void
conn_finish(struct http_conn *c)
{
    if (c->closing || c->dead)
        return;
    c->closing = true;
    c->parser_dead = true;
    conn_drop_cur(c, -ECONNRESET);
    c->close_deadline = uv_now(c->srv->loop) + HTTP_CLOSE_FLUSH_MS;
    c->shutdown_req.data = c;
    conn_ref(c);
    if (uv_shutdown(&c->shutdown_req, &c->h.stream, conn_shutdown_cb) < 0) {
        conn_unref(c);
        conn_abort(c);
        return;
    }
    conn_update_reading(c);
    conn_update_timer(c);
}

static size_t
conn_pending(const struct http_conn *c)
{
    return c->plen - c->poff;
}

static bool
conn_can_parse(const struct http_conn *c)
{
    if (c->dead || c->closing || c->parser_dead)
        return false;
    if (!c->cur)
        return !c->srv->shutting_down;
    switch (c->cur->phase) {
    case PH_HEAD:
    case PH_BODY:
        return true;
    case PH_STREAM:
        return !c->cur->paused;
    case PH_WAIT:
        return false;
    }
    return false;
}

/* ---- Timers. */

static enum conn_timer_mode
conn_deadline(const struct http_conn *c, uint64_t *deadline)
{
    const struct http_server_config *cfg = &c->srv->cfg;
    if (c->closing) {
        *deadline = c->close_deadline;
        return TM_CLOSE;
    }
    if (!c->cur) {
        if (c->nreq == 0) {
            *deadline = c->accept_ms + cfg->header_timeout_ms;
            return TM_HEADER;
        }
        *deadline = c->last_done_ms + cfg->idle_timeout_ms;
        return TM_IDLE;
    }
    switch (c->cur->phase) {
    case PH_HEAD:
        *deadline = (c->nreq == 0 ? c->accept_ms : c->cur->head_start_ms) +
                    cfg->header_timeout_ms;
        return TM_HEADER;
    case PH_BODY:
        *deadline = c->last_body_ms + cfg->body_timeout_ms;
        return TM_BODY;
    case PH_STREAM:
        if (c->cur->paused)
            break;
        *deadline = c->last_body_ms + cfg->body_timeout_ms;
        return TM_BODY;
    case PH_WAIT:
        if (c->cur->fs && c->cur->fs->state != FS_DONE) {
            *deadline = c->last_send_ms + cfg->send_timeout_ms;
            return TM_SEND;
        }
        break;
    }
    return TM_NONE;
}

static void conn_timer_cb(uv_timer_t *t);

/* Arms the connection's one timer for the current state.  A timer armed
 * for a later deadline is left alone: when it fires it re-checks, which
 * keeps the common keep-alive cycle free of timer operations. */
static void
conn_update_timer(struct http_conn *c)
{
    uint64_t deadline = 0;
    if (c->dead)
        return;
    if (conn_deadline(c, &deadline) == TM_NONE)
        return;
    if (c->timer_armed && c->timer_at <= deadline)
        return;
    uint64_t now = uv_now(c->srv->loop);
    uv_timer_start(&c->timer, conn_timer_cb, deadline > now ? deadline - now : 0, 0);
    c->timer_at = deadline;
    c->timer_armed = true;
}

static void
conn_timer_cb(uv_timer_t *t)
{
    struct http_conn *c = t->data;
    uint64_t deadline = 0;
    c->timer_armed = false;
    enum conn_timer_mode mode = conn_deadline(c, &deadline);
    if (mode == TM_NONE)
        return;
    if (uv_now(c->srv->loop) < deadline) {
        conn_update_timer(c);
        return;
    }
    switch (mode) {
    case TM_HEADER:
        c->srv->stats.timeouts++;
        conn_abort(c);
        break;
    case TM_IDLE:
    case TM_CLOSE:
        conn_abort(c);
        break;
    case TM_SEND:
        /* The client stopped reading a file body. */
        c->srv->stats.timeouts++;
        if (c->cur && c->cur->fs)
            c->cur->fs->conn_err = -ETIMEDOUT;
        conn_abort(c);
        break;
    case TM_BODY:
        c->srv->stats.timeouts++;
        if (c->cur && c->cur->dispatched) {
            req_body_fail(c->cur, -ETIMEDOUT);
            conn_update_reading(c);
        } else {
            conn_abort(c);
        }
        break;
    case TM_NONE:
        break;
    }
}

/* ---- Reading. */

static void
conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct http_conn *c = h->data;
    http_server *s = c->srv;
    size_t room = s->read_size;
    http_request *req = c->cur;
    if (req && req->body_buf && req->phase == PH_STREAM && !req->paused && !c->closing &&
        !c->in_process && !conn_pending(c)) {
        /* Straight into the handler's memory (http_req_set_body_buffer()). */
        size_t len = HTTP_BODY_READ_MAX;
        char *p = req->body_buf(req, &len, req->body_arg);
        if (p && len) {
            buf->base = p;
            buf->len = len;
            return;
        }
    }
    if (!c->closing && !conn_can_parse(c)) {
        size_t pend = conn_pending(c);
        size_t max = s->cfg.max_pipeline_bytes;
        size_t left = pend < max ? max - pend : 0;
        if (left < room)
            room = left;
    }
    buf->base = s->rbuf;
    buf->len = room;
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void
conn_update_reading(struct http_conn *c)
{
    bool want;
    if (c->dead || c->eof)
        want = false;
    else if (c->closing)
        want = c->shutdown_done;
    else if (c->cur && c->cur->phase == PH_STREAM && c->cur->paused)
        want = false;
    else
        want = conn_can_parse(c) || conn_pending(c) < c->srv->cfg.max_pipeline_bytes;
    if (want == c->reading)
        return;
    if (want) {
        if (uv_read_start(&c->h.stream, conn_alloc_cb, conn_read_cb) == 0)
            c->reading = true;
    } else {
        uv_read_stop(&c->h.stream);
        c->reading = false;
    }
}

static void
pending_append(struct http_conn *c, const char *data, size_t len)
{
    if (!len)
        return;
    if (c->poff && c->poff == c->plen) {
        c->poff = c->plen = 0;
    } else if (c->poff && c->plen + len > c->pcap) {
        memmove(c->pbuf, c->pbuf + c->poff, c->plen - c->poff);
        c->plen -= c->poff;
        c->poff = 0;
    }
    if (c->plen + len > c->pcap) {
        size_t cap = c->pcap ? c->pcap : 4096;
        while (cap < c->plen + len)
            cap *= 2;
        char *nb = realloc(c->pbuf, cap);
        if (!nb) {
            fputs("nimbus: out of memory\n", stderr);
            abort();
        }
        c->pbuf = nb;
        c->pcap = cap;
    }
    memcpy(c->pbuf + c->plen, data, len);
    c->plen += len;
}

static size_t conn_parse(struct http_conn *c, const char *data, size_t len);

static void
conn_process(struct http_conn *c)
{
    if (c->in_process || c->dead)
        return;
    conn_ref(c);
    c->in_process = true;
    if (conn_pending(c)) {
        size_t n = conn_parse(c, c->pbuf + c->poff, conn_pending(c));
        if (!c->dead)
            c->poff += n;
    }
    if (c->poff == c->plen) {
        c->poff = c->plen = 0;
        if (c->pcap > HTTP_PENDING_KEEP) {
            free(c->pbuf);
            c->pbuf = NULL;
            c->pcap = 0;
        }
    }
    c->in_process = false;
    conn_after_io(c);
    conn_unref(c);
}

static void
conn_defer_cb(struct defer_node *n)
{
    struct http_conn *c = CONTAINER_OF(n, struct http_conn, defer);
    c->defer_queued = false;
    conn_process(c);
    conn_unref(c);
}

/* Resumes parsing from the idle callback, not from the caller's stack. */
static void
conn_schedule(struct http_conn *c)
{
    if (c->defer_queued || c->dead)
        return;
    c->defer_queued = true;
    conn_ref(c);
    defer(c->srv, &c->defer, conn_defer_cb);
}

/* Called after anything that may change what the connection waits for. */
static void
conn_after_io(struct http_conn *c)
{
    if (c->dead)
        return;
    if (c->eof && !c->closing) {
        bool pend = conn_pending(c) != 0;
        if (!c->cur) {
            if (!pend || !conn_can_parse(c))
                conn_finish(c);
        } else if (conn_can_parse(c) && !pend) {
            /* The request needs bytes that will never come. */
            if (c->cur->dispatched)
                req_body_fail(c->cur, -ECONNRESET);
            else
                conn_abort(c);
        }
        if (c->dead)
            return;
    }
    if (!c->cur && c->srv->shutting_down && !c->closing) {
        c->no_linger = true;
        conn_finish(c);
    }
    conn_update_reading(c);
    conn_update_timer(c);
}

static void
conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct http_conn *c = st->data;
    if (nread == 0 || c->dead)
        return;
    if (nread == UV_ENOBUFS) {
        uv_read_stop(st);
        c->reading = false;
        conn_update_reading(c);
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF || (c->closing && c->shutdown_done)) {
            conn_abort(c);
            return;
        }
        c->eof = true;
        uv_read_stop(st);
        c->reading = false;
        if (!c->closing)
            conn_process(c);
        return;
    }
    if (c->closing)
        return;
    conn_ref(c);
    if (!conn_pending(c) && !c->in_process) {
        c->in_process = true;
        size_t n = conn_parse(c, buf->base, (size_t)nread);
        c->in_process = false;
        if (!c->dead && !c->closing && n < (size_t)nread)
            pending_append(c, buf->base + n, (size_t)nread - n);
        conn_after_io(c);
    } else {
        pending_append(c, buf->base, (size_t)nread);
        conn_process(c);
    }
    conn_unref(c);
}

/* ---- Requests. */

static http_request *
req_new(struct http_conn *c)
{
    http_server *s = c->srv;
    struct arena *a = arena_get(s);
    http_request *req = arena_zalloc(a, sizeof *req);
    req->arena = a;
    req->conn = c;
    req->srv = s;
    req->refs = 1;
    req->phase = PH_HEAD;
    req->method = "";
    req->path = (char *)"";
    req->content_length = -1;
    req->keep_alive = true;
    req->head_start_ms = uv_now(s->loop);
    conn_ref(c);
    s->nreqs++;
    return req;
}

static void
req_free(http_request *req)
{
    http_server *s = req->srv;
    struct http_conn *c = req->conn;
    arena_put(s, req->arena);
    s->nreqs--;
    conn_unref(c);
    server_check_done(s);
}

static void
req_unref(http_request *req)
{
    if (--req->refs == 0)
        req_free(req);
}

static void
hbuf_append(http_request *req, const char *p, size_t n)
{
    if (req->hlen + n + 1 > req->hcap) {
        size_t cap = req->hcap ? req->hcap * 2 : 512;
        while (cap < req->hlen + n + 1)
            cap *= 2;
        char *nb = arena_alloc(req->arena, cap);
        if (req->hlen)
            memcpy(nb, req->hbuf, req->hlen);
        req->hbuf = nb;
        req->hcap = cap;
    }
    memcpy(req->hbuf + req->hlen, p, n);
    req->hlen += n;
}

static void
hbuf_terminate(http_request *req)
{
    hbuf_append(req, "", 0);
    req->hbuf[req->hlen++] = '\0';
}

enum { CB_NONE, CB_URL, CB_FIELD, CB_VALUE };

static int
on_message_begin(http_parser *p)
{
    struct http_conn *c = p->data;
    if (!c->cur)
        c->cur = req_new(c);
    return 0;
}

static int
on_url(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    http_request *req = c->cur;
    if (req->last_cb != CB_URL) {
        req->url_off = (uint32_t)req->hlen;
        req->last_cb = CB_URL;
    }
    hbuf_append(req, at, len);
    req->url_len += (uint32_t)len;
    return 0;
}

static int
on_header_field(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    http_request *req = c->cur;
    /* Trailers of a chunked body are parsed like headers; they are
     * dropped (the parser bounds their size). */
    if (req->phase != PH_HEAD)
        return 0;
    if (req->last_cb != CB_FIELD) {
        if (req->last_cb != CB_NONE)
            hbuf_terminate(req);
        if (req->nhp == req->hpcap) {
            size_t cap = req->hpcap ? req->hpcap * 2 : 16;
            struct hpiece *n = arena_alloc(req->arena, cap * sizeof *n);
            if (req->nhp)
                memcpy(n, req->hp, req->nhp * sizeof *n);
            req->hp = n;
            req->hpcap = cap;
        }
        struct hpiece *h = &req->hp[req->nhp++];
        h->name_off = (uint32_t)req->hlen;
        h->name_len = 0;
        h->value_off = 0;
        h->value_len = 0;
        req->last_cb = CB_FIELD;
    }
    hbuf_append(req, at, len);
    req->hp[req->nhp - 1].name_len += (uint32_t)len;
    return 0;
}

static int
on_header_value(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    http_request *req = c->cur;
    if (req->phase != PH_HEAD)
        return 0;
    if (!req->nhp)
        return -1;
    struct hpiece *h = &req->hp[req->nhp - 1];
    if (req->last_cb != CB_VALUE) {
        hbuf_terminate(req);
        h->value_off = (uint32_t)req->hlen;
        req->last_cb = CB_VALUE;
    }
    hbuf_append(req, at, len);
    h->value_len += (uint32_t)len;
    return 0;
}

static int
on_headers_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    c->event = EV_HEAD;
    http_parser_pause(p, 1);
    return 0;
}

static int
on_body(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    http_request *req = c->cur;
    if (!req)
        return -1;
    c->last_body_ms = uv_now(c->srv->loop);
    if (req->phase == PH_BODY) {
        if (len > req->body_max - req->body_len) {
            c->cb_err = CBE_413;
            return -1;
        }
        if (req->body_len + len + 1 > req->body_cap) {
            size_t cap = req->body_cap ? req->body_cap : 4096;
            while (cap < req->body_len + len + 1)
                cap *= 2;
            if (cap > req->body_max + 1)
                cap = req->body_max + 1;
            char *nb = arena_alloc(req->arena, cap);
            if (req->body_len)
                memcpy(nb, req->body, req->body_len);
            req->body = nb;
            req->body_cap = cap;
        }
        memcpy(req->body + req->body_len, at, len);
        req->body_len += len;
        return 0;
    }
    if (req->phase != PH_STREAM) {
        c->cb_err = CBE_STOP;
        return -1;
    }
    req->body_seen += len;
    if (req->body_max && req->body_seen > req->body_max) {
        req_body_fail(req, -E2BIG);
        c->cb_err = CBE_STOP;
        return -1;
    }
    req->refs++;
    int r = req->on_data ? req->on_data(req, at, len, req->body_arg) : 0;
    bool still = c->cur == req && req->phase == PH_STREAM;
    req_unref(req);
    if (r < 0 && still) {
        req_body_fail(req, r);
        c->cb_err = CBE_STOP;
        return -1;
    }
    if (!still || c->dead) {
        c->cb_err = CBE_STOP;
        return -1;
    }
    if (req->paused)
        http_parser_pause(p, 1);
    return 0;
}

static int
on_message_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    c->event = EV_MESSAGE;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Turns the offsets collected while parsing the head into strings and
 * splits the request target into path and query. */
static void
req_finish_head(struct http_conn *c, http_request *req)
{
    hbuf_terminate(req);
    req->method = http_method_str((enum http_method)c->parser.method);
    req->http_major = c->parser.http_major;
    req->http_minor = c->parser.http_minor;
    req->headers = arena_alloc(req->arena, (req->nhp ? req->nhp : 1) * sizeof *req->headers);
    for (size_t i = 0; i < req->nhp; i++) {
        req->headers[i].name = req->hbuf + req->hp[i].name_off;
        req->headers[i].value = req->hp[i].value_off ? req->hbuf + req->hp[i].value_off : "";
    }
    req->nheaders = req->nhp;

    char *url = req->url_len ? req->hbuf + req->url_off : (char *)"";
    if (url[0] == '/' || url[0] == '*' || url[0] == '\0') {
        char *hash = strchr(url, '#');
        if (hash)
            *hash = '\0';
        char *q = strchr(url, '?');
        if (q) {
            *q = '\0';
            req->query = q + 1;
        }
        req->path = url;
    } else {
        struct http_parser_url u;
        http_parser_url_init(&u);
        req->path = (char *)"/";
        if (http_parser_parse_url(url, req->url_len, c->parser.method == HTTP_CONNECT, &u) == 0) {
            if (u.field_set & (1 << UF_PATH))
                req->path = arena_strndup(req->arena, url + u.field_data[UF_PATH].off,
                                          u.field_data[UF_PATH].len);
            if (u.field_set & (1 << UF_QUERY))
                req->query = arena_strndup(req->arena, url + u.field_data[UF_QUERY].off,
                                           u.field_data[UF_QUERY].len);
        }
    }
}

static void req_send_buffer(http_request *req, char *buf, size_t len);

static void
send_continue(struct http_conn *c, http_request *req)
{
    if (c->dead || c->closing)
        return;
    c->srv->stats.responses[1]++;
    req_send_buffer(req, (char *)continue_line, sizeof continue_line - 1);
}

static void
dispatch(struct http_conn *c, http_request *req, const struct http_route *r)
{
    http_server *s = c->srv;
    req->phase = PH_WAIT;
    req->dispatched = true;
    req->refs++;
    s->stats.requests++;
    if (!req->start_ns)
        req->start_ns = uv_hrtime();
    r->fn(req, r->data);
}

/* Answers a CORS preflight from an allowed origin: which methods and
 * request headers the APIs accept, cached by the browser for ten minutes. */
static void
preflight_answer(http_request *req, void *data)
{
    (void)data;
    http_resp_header(req, "Access-Control-Allow-Methods",
                     "GET, HEAD, POST, PUT, PATCH, DELETE");
    http_resp_header(req, "Access-Control-Allow-Headers", HTTP_CORS_ALLOW_HEADERS);
    http_resp_header(req, "Access-Control-Max-Age", "600");
    (void)http_respond(req, 204, NULL, NULL, 0);
}

static const struct http_route preflight_route = { .fn = preflight_answer };

static void
dispatch_error(struct http_conn *c, http_request *req, int status, const char *msg, bool close)
{
    http_server *s = c->srv;
    if (!req) {
        req = c->cur = req_new(c);
    }
    if (close) {
        req->close_after = true;
        c->parser_dead = true;
    }
    if (req->allow && status == 405)
        http_resp_header(req, "Allow", req->allow);
    req->phase = PH_WAIT;
    req->dispatched = true;
    req->refs++;
    s->stats.requests++;
    if (!req->start_ns)
        req->start_ns = uv_hrtime();
    s->error_fn(req, status, msg, s->error_data);
}

static const char *
status_message(int status)
{
    switch (status) {
    case 404: return "The resource could not be found.";
    case 405: return "The method is not allowed for the requested URL.";
    case 413: return "Request body too large.";
    case 431: return "Request header fields too large.";
    default: return "Malformed request.";
    }
}

/* The head is complete: route, check limits, and decide when to dispatch. */
static void
conn_on_head(struct http_conn *c)
{
    http_server *s = c->srv;
    http_request *req = c->cur;
    req_finish_head(c, req);
    req->start_ns = uv_hrtime();
    req->keep_alive = http_should_keep_alive(&c->parser) && !c->parser.upgrade;
    bool chunked = (c->parser.flags & F_CHUNKED) != 0;
    bool has_cl = (c->parser.flags & F_CONTENTLENGTH) != 0;
    uint64_t cl = has_cl ? c->parser.content_length : 0;
    req->content_length = (!chunked && has_cl) ? (int64_t)cl : -1;
    req->has_body = chunked || cl > 0;
    req->is_head = strcmp(req->method, "HEAD") == 0;
    req->suppress_body = req->is_head;
    if (req->has_body && req->http_major == 1 && req->http_minor >= 1) {
        const char *e = http_req_header(req, "Expect");
        req->expect_continue = e && strcasecmp(e, "100-continue") == 0;
    }
    c->last_body_ms = uv_now(s->loop);

    req->cors_origin = cors_match(s, http_req_header(req, "Origin"));
    if (req->cors_origin && !req->has_body && !c->parser.upgrade &&
        strcmp(req->method, "OPTIONS") == 0 &&
        http_req_header(req, "Access-Control-Request-Method")) {
        req->route = &preflight_route;
        req->phase = PH_BODY;
        req->body_max = 0;
        return;
    }

    struct http_route_match m;
    const struct http_route *r = NULL;
    if (c->parser.upgrade && c->parser.method == HTTP_CONNECT) {
        m.status = 405;
        m.allow = NULL;
    } else if (http_router_match(s, req->method, req->path, req->arena, &m) < 0) {
        m.status = 400;
    }
    if (m.status == 0) {
        r = router_route_of(s, m.pattern);
        if (!r)
            m.status = 404;
    }
    if (m.status != 0) {
        req->allow = m.allow;
        if (req->has_body || c->parser.upgrade) {
            dispatch_error(c, req, m.status, status_message(m.status), true);
        } else {
            req->pending_error = m.status;
            req->phase = PH_BODY;
            req->body_max = 0;
        }
        return;
    }
    req->route = r;
    req->pnames = m.names;
    req->pvalues = m.values;
    req->nparams = m.nparams;
    req->stream_route = (r->flags & HTTP_ROUTE_STREAM) != 0;
    if (req->stream_route) {
        req->body_max = r->max_body;
        if (has_cl && req->body_max && cl > req->body_max) {
            dispatch_error(c, req, 413, status_message(413), true);
            return;
        }
        if (req->has_body) {
            dispatch(c, req, r);
            return;
        }
        req->phase = PH_BODY;
        req->body_max = 0;
        return;
    }
    req->body_max = r->max_body ? r->max_body : s->cfg.max_body_bytes;
    if (has_cl && cl > req->body_max) {
        dispatch_error(c, req, 413, status_message(413), true);
        return;
    }
    if (has_cl && cl > 0) {
        req->body_cap = (size_t)cl + 1;
        req->body = arena_alloc(req->arena, req->body_cap);
    }
    if (req->expect_continue)
        send_continue(c, req);
    req->phase = PH_BODY;
}

static void
conn_on_message(struct http_conn *c)
{
    http_request *req = c->cur;
    if (!req)
        return;
    req->msg_complete = true;
    if (req->phase == PH_STREAM) {
        req->phase = PH_WAIT;
        req_body_end(req, 0);
        return;
    }
    if (req->phase != PH_BODY)
        return;
    if (req->body)
        req->body[req->body_len] = '\0';
    if (req->pending_error)
        dispatch_error(c, req, req->pending_error, status_message(req->pending_error), false);
    else
        dispatch(c, req, req->route);
}

static void
conn_parse_error(struct http_conn *c, enum http_errno e)
{
    enum conn_cb_err cbe = c->cb_err;
    http_request *req = c->cur;
    c->cb_err = CBE_NONE;
    c->parser_dead = true;
    if (cbe == CBE_STOP)
        return;
    if (req && req->dispatched) {
        /* A streamed body turned out malformed. */
        req_body_fail(req, -EBADMSG);
        return;
    }
    if (cbe == CBE_413)
        dispatch_error(c, req, 413, status_message(413), true);
    else if (cbe == CBE_431 || e == HPE_HEADER_OVERFLOW)
        dispatch_error(c, req, 431, status_message(431), true);
    else
        dispatch_error(c, req, 400, http_errno_description(e), true);
}

/* Parses as much of 'data' as the connection's state allows and returns the
 * number of bytes consumed. */
static size_t
conn_parse(struct http_conn *c, const char *data, size_t len)
{
    size_t off = 0;
    size_t max_head = c->srv->cfg.max_header_bytes;
    while (off < len && conn_can_parse(c)) {
        size_t n = len - off;
        bool in_head = !c->cur || c->cur->phase == PH_HEAD;
        if (in_head) {
            size_t room = c->head_bytes <= max_head ? max_head + 1 - c->head_bytes : 1;
            if (n > room)
                n = room;
        }
        c->event = EV_NONE;
        size_t got = http_parser_execute(&c->parser, &parser_settings, data + off, n);
        off += got;
        if (c->dead)
            break;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (in_head)
            c->head_bytes += got;
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            if (c->event == EV_HEAD) {
                if (c->head_bytes > max_head) {
                    c->parser_dead = true;
                    dispatch_error(c, c->cur, 431, status_message(431), true);
                } else {
                    conn_on_head(c);
                }
            } else if (c->event == EV_MESSAGE) {
                c->head_bytes = 0;
                conn_on_message(c);
            }
            continue;
        }
        if (e != HPE_OK) {
            conn_parse_error(c, e);
            break;
        }
        if (in_head && c->head_bytes > max_head &&
            (!c->cur || c->cur->phase == PH_HEAD)) {
            c->cb_err = CBE_431;
            conn_parse_error(c, HPE_HEADER_OVERFLOW);
            break;
        }
    }
    return off;
}

/* The answer to 'req' is complete (queued for writing). */
static void
req_answer_done(http_request *req)
{
    struct http_conn *c = req->conn;
    http_server *s = req->srv;
    req->answered = true;
    if (req->body_reading && !req->body_ended)
        req_body_end(req, -ECANCELED);
    if (c->cur == req) {
        c->cur = NULL;
        c->nreq++;
        c->head_bytes = 0;
        c->last_done_ms = uv_now(s->loop);
        bool close = req->close_after || !req->keep_alive || !req->msg_complete ||
                     s->shutting_down || c->parser_dead;
        req_unref(req);   /* The connection's reference. */
        if (close) {
            conn_finish(c);
        } else if (!c->in_process) {
            conn_update_reading(c);
            if (conn_pending(c) || c->eof)
                conn_schedule(c);
            else
                conn_update_timer(c);
        }
    }
    req_unref(req);       /* The handler's reference. */
}

/* ---- Request accessors. */

const char *
http_req_method(const http_request *req)
{
    return req->method;
}

const char *
http_req_path(const http_request *req)
{
    return req->path;
}

const char *
http_req_query(const http_request *req)
{
    return req->query;
}

int
http_req_query_each(http_request *req,
                    int (*fn)(const char *name, const char *value, void *arg), void *arg)
{
    const char *q = req->query;
    if (!q)
        return 0;
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len) {
            const char *eq = memchr(q, '=', len);
            size_t nlen = eq ? (size_t)(eq - q) : len;
            size_t vlen = eq ? len - nlen - 1 : 0;
            char *name = arena_alloc(req->arena, nlen + 1);
            char *value = arena_alloc(req->arena, vlen + 1);
            long nl = util_percent_decode(q, nlen, name, true);
            long vl = eq ? util_percent_decode(eq + 1, vlen, value, true) : 0;
            if (nl >= 0 && vl >= 0) {
                name[nl] = '\0';
                value[vl] = '\0';
                int r = fn(name, value, arg);
                if (r)
                    return r;
            }
        }
        if (!amp)
            break;
        q = amp + 1;
    }
    return 0;
}

struct query_find {
    const char *name;
    const char *value;
};

static int
query_find_cb(const char *name, const char *value, void *arg)
{
    struct query_find *f = arg;
    if (strcmp(name, f->name) != 0)
        return 0;
    f->value = value;
    return 1;
}

const char *
http_req_query_param(http_request *req, const char *name)
{
    struct query_find f = { name, NULL };
    if (http_req_query_each(req, query_find_cb, &f) < 0)
        return NULL;
    return f.value;
}

const char *
http_req_param(const http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nparams; i++)
        if (strcmp(req->pnames[i], name) == 0)
            return req->pvalues[i];
    return NULL;
}

const char *
http_req_header(const http_request *req, const char *name)
{
    const char *first = NULL;
    size_t count = 0, total = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, name) != 0)
            continue;
        if (!first)
            first = req->headers[i].value;
        count++;
        total += strlen(req->headers[i].value) + 2;
    }
    if (count <= 1)
        return first;
    char *out = arena_alloc(req->arena, total + 1);
    size_t len = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, name) != 0)
            continue;
        if (len) {
            out[len++] = ',';
            out[len++] = ' ';
        }
        size_t vl = strlen(req->headers[i].value);
        memcpy(out + len, req->headers[i].value, vl);
        len += vl;
    }
    out[len] = '\0';
    return out;
}

const char *
http_req_body(const http_request *req, size_t *len)
{
    if (len)
        *len = req->body ? req->body_len : 0;
    return req->body;
}

const char *
http_req_peer(const http_request *req)
{
    return req->conn->peer;
}

const char *
http_req_id(const http_request *req)
{
    http_request *r = (http_request *)req;
    if (!r->id) {
        char *id = arena_alloc(r->arena, 41);
        memcpy(id, "req-", 4);
        util_uuid4_fast(id + 4);
        r->id = id;
    }
    return r->id;
}

uint64_t
http_req_start_ns(const http_request *req)
{
    return req->start_ns;
}

struct arena *
http_req_arena(http_request *req)
{
    return req->arena;
}

bool
http_req_aborted(const http_request *req)
{
    return req->aborted || req->conn->dead;
}

void
http_req_set_data(http_request *req, void *data)
{
    req->user_data = data;
}

void *
http_req_get_data(const http_request *req)
{
    return req->user_data;
}

int64_t
http_req_content_length(const http_request *req)
{
    return req->content_length;
}

/* ---- Streamed bodies. */

int
http_req_read_body(http_request *req, http_body_data_fn on_data, http_body_end_fn on_end,
                   void *arg)
{
    struct http_conn *c = req->conn;
    if (!req->stream_route || !on_end)
        return -EINVAL;
    if (req->body_reading)
        return -EALREADY;
    if (req->answered)
        return -EINVAL;
    req->body_reading = true;
    req->on_data = on_data;
    req->on_end = on_end;
    req->body_arg = arg;
    if (req->msg_complete) {
        req_body_end(req, 0);
        return 0;
    }
    if (req->aborted || c->dead || c->cur != req || req->end_status) {
        req_body_end(req, req->end_status ? req->end_status : -ECONNRESET);
        return 0;
    }
    if (req->expect_continue)
        send_continue(c, req);
    req->phase = PH_STREAM;
    c->last_body_ms = uv_now(c->srv->loop);
    if (!c->in_process) {
        conn_update_reading(c);
        if (conn_pending(c) || c->eof)
            conn_schedule(c);
        conn_update_timer(c);
    }
    return 0;
}

void
http_req_set_body_buffer(http_request *req, http_body_buf_fn get_buf)
{
    req->body_buf = get_buf;
}

void
http_req_pause(http_request *req)
{
    struct http_conn *c = req->conn;
    if (req->paused)
        return;
    req->paused = true;
    if (c->cur == req && req->phase == PH_STREAM && !c->dead) {
        if (c->in_process && !c->parser_dead &&
            HTTP_PARSER_ERRNO(&c->parser) == HPE_OK)
            http_parser_pause(&c->parser, 1);
        conn_update_reading(c);
    }
}

void
http_req_resume(http_request *req)
{
    struct http_conn *c = req->conn;
    if (!req->paused)
        return;
    req->paused = false;
    if (c->cur == req && !c->dead) {
        c->last_body_ms = uv_now(c->srv->loop);
        conn_update_reading(c);
        if (conn_pending(c) || c->eof)
            conn_schedule(c);
        conn_update_timer(c);
    }
}

/* ---- Answers. */

void
http_resp_header(http_request *req, const char *name, const char *value)
{
    if (req->resp_started || !name || !value || !*name)
        return;
    if (strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Connection") == 0 ||
        strcasecmp(name, "Transfer-Encoding") == 0)
        return;
    if (has_crlf(name) || has_crlf(value) || strchr(name, ':'))
        return;
    struct resp_header *h = arena_alloc(req->arena, sizeof *h);
    h->name = arena_strdup(req->arena, name);
    h->value = arena_strdup(req->arena, value);
    h->next = NULL;
    if (req->rh_tail)
        req->rh_tail->next = h;
    else
        req->rh_head = h;
    req->rh_tail = h;
}

static void
server_update_date(http_server *s)
{
    uint64_t now_ms = uv_now(s->loop);
    uint64_t sec = now_ms / 1000;
    if (s->date_len && sec == s->date_sec)
        return;
    s->date_sec = sec;
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    s->date_len = strftime(s->date_line, sizeof s->date_line,
                           "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

static bool
req_will_close(const http_request *req)
{
    const struct http_conn *c = req->conn;
    return req->close_after || !req->keep_alive || req->srv->shutting_down ||
           c->parser_dead || c->closing || c->dead || !req->msg_complete;
}

/* Sent with every answer to an allowed origin: the answer varies with the
 * Origin, and scripts may read the token and request id headers. */
#define CORS_HEAD_LINES "Vary: Origin\r\n" \
    "Access-Control-Expose-Headers: X-Subject-Token, X-Openstack-Request-Id, Location, " \
    "OpenStack-API-Version\r\n"

/* Builds the status line and headers, followed by 'extra' free bytes, in
 * one arena buffer.  'clen' is the Content-Length, -1 for chunked, -2 for
 * no body at all (1xx, 204, 304). */
static char *
build_head(http_request *req, int status, const char *ctype, int64_t clen, size_t extra,
           size_t *head_len)
{
    http_server *s = req->srv;
    bool close = req_will_close(req);
    if (close)
        req->close_after = true;
    server_update_date(s);
    const char *reason = http_status_text(status);
    size_t rlen = strlen(reason);
    size_t ctlen = ctype ? strlen(ctype) : 0;
    size_t need = 160 + rlen + s->date_len + (ctype ? ctlen + 16 : 0);
    if (req->cors_origin)
        need += strlen(req->cors_origin) + sizeof CORS_HEAD_LINES + 32;
    for (const struct resp_header *h = req->rh_head; h; h = h->next)
        need += strlen(h->name) + strlen(h->value) + 4;
    char *buf = arena_alloc(req->arena, need + extra);
    char *p = buf;
    p = PUT_LIT(p, "HTTP/1.1 ");
    p = put_u64(p, (uint64_t)status);
    *p++ = ' ';
    p = put_str(p, reason, rlen);
    p = PUT_LIT(p, "\r\n");
    p = put_str(p, s->date_line, s->date_len);
    if (ctype) {
        p = PUT_LIT(p, "Content-Type: ");
        p = put_str(p, ctype, ctlen);
        p = PUT_LIT(p, "\r\n");
    }
    for (const struct resp_header *h = req->rh_head; h; h = h->next) {
        size_t nl = strlen(h->name), vl = strlen(h->value);
        p = put_str(p, h->name, nl);
        p = PUT_LIT(p, ": ");
        p = put_str(p, h->value, vl);
        p = PUT_LIT(p, "\r\n");
    }
    if (req->cors_origin) {
        p = PUT_LIT(p, "Access-Control-Allow-Origin: ");
        p = put_str(p, req->cors_origin, strlen(req->cors_origin));
        p = PUT_LIT(p, "\r\n" CORS_HEAD_LINES);
    }
    if (clen >= 0) {
        p = PUT_LIT(p, "Content-Length: ");
        p = put_u64(p, (uint64_t)clen);
        p = PUT_LIT(p, "\r\n");
    } else if (clen == -1) {
        p = PUT_LIT(p, "Transfer-Encoding: chunked\r\n");
    }
    if (close)
        p = PUT_LIT(p, "Connection: close\r\n");
    else if (req->http_major == 1 && req->http_minor == 0)
        p = PUT_LIT(p, "Connection: keep-alive\r\n");
    p = PUT_LIT(p, "\r\n");
    *head_len = (size_t)(p - buf);
    s->stats.responses[status >= 100 && status < 600 ? status / 100 : 5]++;
    return buf;
}

static struct http_write *
write_get(http_request *req)
{
    struct http_write *w = req->free_writes;
    if (w)
        req->free_writes = w->next_free;
    else
        w = arena_alloc(req->arena, sizeof *w);
    memset(w, 0, sizeof *w);
    w->req = req;
    return w;
}

static void
write_put(http_request *req, struct http_write *w)
{
    free(w->copy);
    w->copy = NULL;
    w->next_free = req->free_writes;
    req->free_writes = w;
}

static void
write_finish(struct http_write *w, int status)
{
    http_request *req = w->req;
    if (w->done)
        w->done(req, status, w->arg);
    write_put(req, w);
    req->writes_pending--;
    req_unref(req);
}

static void
write_cb(uv_write_t *uw, int status)
{
    struct http_write *w = uw->data;
    write_finish(w, status < 0 ? -ECONNRESET : 0);
}

static void
write_dropped_cb(struct defer_node *n)
{
    struct http_write *w = CONTAINER_OF(n, struct http_write, defer);
    write_finish(w, w->status);
}

/* Queues 'bufs' on the connection, or drops them (the done callback then
 * runs later with 'drop_status'). */
static void
req_write(http_request *req, struct http_write *w, uv_buf_t *bufs, unsigned n, bool drop,
          int drop_status)
{
    struct http_conn *c = req->conn;
    req->writes_pending++;
    req->refs++;
    if (!drop && !c->dead) {
        w->w.data = w;
        if (uv_write(&w->w, &c->h.stream, bufs, n, write_cb) == 0)
            return;
        conn_abort(c);
        drop_status = -ECONNRESET;
    } else if (!drop) {
        drop_status = -ECONNRESET;
    }
    w->status = drop_status;
    defer(req->srv, &w->defer, write_dropped_cb);
}

/* Writes a complete buffer owned by the request's arena: straight to the
 * socket when possible, the rest through a write request. */
static void
req_send_buffer(http_request *req, char *buf, size_t len)
{
    struct http_conn *c = req->conn;
    if (c->dead || !len)
        return;
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);
    int n = uv_try_write(&c->h.stream, &b, 1);
    if (n == (int)len)
        return;
    if (n > 0) {
        b.base += n;
        b.len -= (size_t)n;
    } else if (n != UV_EAGAIN && n != UV_ENOSYS) {
        conn_abort(c);
        return;
    }
    struct http_write *w = write_get(req);
    req_write(req, w, &b, 1, false, 0);
}

static bool
status_has_body(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

int
http_respond(http_request *req, int status, const char *content_type, const char *body,
             size_t len)
{
    if (req->answered || req->resp_started)
        return -EALREADY;
    if (status < 200 || status > 599 || (len && !body))
        return -EINVAL;
    if (len > UINT32_MAX / 2)
        return -E2BIG;
    req->resp_started = true;
    req->status = status;
    bool with_body = status_has_body(status);
    if (!with_body)
        len = 0;
    bool send_body = with_body && !req->suppress_body;
    size_t head_len;
    char *buf = build_head(req, status, content_type, with_body ? (int64_t)len : -2,
                           send_body ? len : 0, &head_len);
    if (send_body && len)
        memcpy(buf + head_len, body, len);
    req_send_buffer(req, buf, head_len + (send_body ? len : 0));
    req_answer_done(req);
    return 0;
}

int
http_resp_start(http_request *req, int status, const char *content_type,
                int64_t content_length)
{
    if (req->answered || req->resp_started)
        return -EALREADY;
    if (status < 200 || status > 599 || content_length < -1)
        return -EINVAL;
    req->resp_started = true;
    req->status = status;
    bool with_body = status_has_body(status);
    if (!with_body)
        content_length = 0;
    req->resp_chunked = content_length < 0;
    req->resp_remaining = content_length;
    size_t head_len;
    char *buf = build_head(req, status, content_type, with_body ? content_length : -2, 0,
                           &head_len);
    if (!with_body)
        req->suppress_body = true;
    req_send_buffer(req, buf, head_len);
    return 0;
}

int
http_resp_write(http_request *req, const void *data, size_t len,
                void (*done)(http_request *req, int status, void *arg), void *arg)
{
    if (!req->resp_started || req->answered || req->fs)
        return -EINVAL;
    if (!req->resp_chunked && (int64_t)len > req->resp_remaining)
        return -EINVAL;
    if ((len && !data) || len > UINT32_MAX / 2)
        return -EINVAL;
    struct http_write *w = write_get(req);
    w->done = done;
    w->arg = arg;
    if (!req->resp_chunked)
        req->resp_remaining -= (int64_t)len;
    bool drop = req->suppress_body || len == 0;
    const char *p = data;
    if (!done && !drop && !req->conn->dead) {
        w->copy = malloc(len);
        if (!w->copy) {
            write_put(req, w);
            return -ENOMEM;
        }
        memcpy(w->copy, data, len);
        p = w->copy;
    }
    uv_buf_t bufs[3];
    unsigned n = 0;
    if (req->resp_chunked) {
        int hl = snprintf(w->chunk_head, sizeof w->chunk_head, "%zx\r\n", len);
        bufs[n++] = uv_buf_init(w->chunk_head, (unsigned)hl);
    }
    bufs[n++] = uv_buf_init((char *)p, (unsigned)len);
    if (req->resp_chunked)
        bufs[n++] = uv_buf_init((char *)"\r\n", 2);
    req_write(req, w, bufs, n, drop, 0);
    return 0;
}

int
http_resp_end(http_request *req)
{
    if (!req->resp_started || req->answered || req->fs)
        return -EINVAL;
    if (req->resp_chunked && !req->suppress_body && !req->conn->dead) {
        static char last_chunk[] = "0\r\n\r\n";
        struct http_write *w = write_get(req);
        uv_buf_t b = uv_buf_init(last_chunk, sizeof last_chunk - 1);
        req_write(req, w, &b, 1, false, 0);
    } else if (!req->resp_chunked && req->resp_remaining > 0 && !req->suppress_body) {
        /* Fewer bytes than announced: only closing tells the client. */
        req->close_after = true;
    }
    req_answer_done(req);
    return 0;
}

/* ---- Answers from a file.
 *
 * The head goes through the connection's write queue like any answer; once
 * it (and everything queued before it) is written, sendfile jobs move the
 * body from the file to the socket.  The socket is non-blocking, so a job
 * returns when the socket buffer is full; the loop then waits for it to
 * drain with a poll handle on our duplicate of the descriptor (libuv allows
 * one watcher per descriptor, and the connection's stream has its own).
 * The request stays the connection's current one until the body is over,
 * so nothing else is written in between and pipelined requests wait. */

static void file_start_job(struct http_file_send *fs);

static void
file_poll_closed(uv_handle_t *h)
{
    struct http_file_send *fs = h->data;
    http_request *req = fs->req;
    close(fs->sock);
    fs->sock = -1;
    req_unref(req);
}

static void
file_done_cb(struct defer_node *n)
{
    struct http_file_send *fs = CONTAINER_OF(n, struct http_file_send, defer);
    http_request *req = fs->req;
    if (fs->status < 0)
        req->close_after = true;
    if (fs->sock >= 0) {
        /* Uncorking sends the last partial segment at once. */
        int zero = 0;
        (void)setsockopt(fs->sock, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero);
    }
    if (fs->done)
        fs->done(req, fs->status, fs->sent, fs->arg);
    req_answer_done(req);
    /* The reference taken at the start is released here, or once the poll
     * handle is closed. */
    if (fs->sock >= 0)
        uv_close((uv_handle_t *)&fs->poll, file_poll_closed);
    else
        req_unref(req);
}

/* Ends the answer with 'status'; 'done' runs from the idle callback. */
static void
file_finish(struct http_file_send *fs, int status)
{
    if (fs->state == FS_DONE)
        return;
    if (fs->state == FS_POLL)
        uv_poll_stop(&fs->poll);
    fs->state = FS_DONE;
    fs->status = status;
    defer(fs->req->srv, &fs->defer, file_done_cb);
}

/* The connection was closed (client gone, timeout): a job in flight
 * notices when it returns; a wait for writability ends now. */
static void
file_conn_gone(struct http_file_send *fs)
{
    if (!fs->conn_err)
        fs->conn_err = -ECONNRESET;
    if (fs->state == FS_POLL || fs->state == FS_HEAD)
        file_finish(fs, fs->conn_err);
}

/* Thread pool: sends from the file until the body is over, the socket
 * stays full for HTTP_FILE_WAIT_MS, or the job reaches its limits in bytes
 * and time (so that the loop regains control and other work on the pool
 * gets its turn).  Waiting a little for a full socket to drain, as a
 * blocking sendfile would, keeps a fast client's transfer free of loop
 * round trips; a slow client is waited for by the loop instead. */
static void
file_job(uv_work_t *w)
{
    struct http_file_send *fs = w->data;
    uint64_t sent = 0;
    uint64_t t0 = uv_hrtime();
    int err = 0;
    fs->job_more = false;
    while (fs->remaining) {
        if (sent >= HTTP_FILE_JOB_MAX || uv_hrtime() - t0 >= HTTP_FILE_JOB_NS) {
            fs->job_more = true;
            break;
        }
        uint64_t want = fs->remaining;
        if (want > HTTP_FILE_JOB_MAX - sent)
            want = HTTP_FILE_JOB_MAX - sent;
        off_t off = (off_t)fs->off;
        ssize_t n = sendfile(fs->sock, fs->fd, &off, (size_t)want);
        if (n > 0) {
            fs->off += (uint64_t)n;
            fs->remaining -= (uint64_t)n;
            sent += (uint64_t)n;
            continue;
        }
        if (n == 0) {
            err = -ENODATA;        /* The file ends before the announced length. */
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            struct pollfd p = { .fd = fs->sock, .events = POLLOUT };
            int r = poll(&p, 1, HTTP_FILE_WAIT_MS);
            if (r > 0 || (r < 0 && errno == EINTR))
                continue;
            break;
        }
        err = (errno == EPIPE || errno == ECONNRESET) ? -ECONNRESET : -errno;
        break;
    }
    fs->job_sent = sent;
    fs->job_err = err;
}

static void
file_poll_cb(uv_poll_t *h, int status, int events)
{
    struct http_file_send *fs = h->data;
    (void)events;
    uv_poll_stop(h);
    if (status < 0) {
        file_finish(fs, -ECONNRESET);
        return;
    }
    /* Whatever woke us (writable, error, hang-up), the next sendfile call
     * tells. */
    file_start_job(fs);
}

static void
file_job_done(uv_work_t *w, int status)
{
    struct http_file_send *fs = w->data;
    http_request *req = fs->req;
    struct http_conn *c = req->conn;
    bool capped = fs->job_more;
    fs->sent += fs->job_sent;
    if (fs->job_sent && !c->dead)
        c->last_send_ms = uv_now(req->srv->loop);
    if (status < 0)
        file_finish(fs, status);
    else if (c->dead || fs->conn_err)
        file_finish(fs, fs->conn_err ? fs->conn_err : -ECONNRESET);
    else if (!fs->remaining)
        file_finish(fs, 0);
    else if (fs->job_err)
        file_finish(fs, fs->job_err);
    else if (capped)
        file_start_job(fs);
    else {
        fs->state = FS_POLL;
        int r = uv_poll_start(&fs->poll, UV_WRITABLE | UV_DISCONNECT, file_poll_cb);
        if (r < 0)
            file_finish(fs, r);
    }
}

static void
file_start_job(struct http_file_send *fs)
{
    http_request *req = fs->req;
    struct http_conn *c = req->conn;
    if (fs->state == FS_DONE)
        return;
    if (c->dead || fs->conn_err) {
        file_finish(fs, fs->conn_err ? fs->conn_err : -ECONNRESET);
        return;
    }
    if (!fs->remaining) {
        file_finish(fs, 0);
        return;
    }
    fs->state = FS_JOB;
    fs->work.data = fs;
    int r = uv_queue_work(req->srv->loop, &fs->work, file_job, file_job_done);
    if (r < 0)
        file_finish(fs, r);
}

static void
file_head_written(http_request *req, int status, void *arg)
{
    struct http_file_send *fs = arg;
    (void)req;
    if (fs->state != FS_HEAD)
        return;
    if (status < 0)
        file_finish(fs, -ECONNRESET);
    else
        file_start_job(fs);
}

int
http_respond_file(http_request *req, int status, const char *content_type, int fd,
                  uint64_t offset, uint64_t length, http_file_done_fn done, void *arg)
{
    struct http_conn *c = req->conn;
    if (req->answered || req->resp_started)
        return -EALREADY;
    if (status < 200 || status > 599 || fd < 0 || length > INT64_MAX ||
        offset > (uint64_t)INT64_MAX - length)
        return -EINVAL;
    bool with_body = status_has_body(status);
    if (!with_body)
        length = 0;
    /* A request whose connection is closing or gone is answered into the
     * void, like the other answers. */
    bool gone = c->dead || c->closing || c->cur != req || req->aborted;
    bool send_body = with_body && !req->suppress_body && length && !gone;
    struct http_file_send *fs = arena_zalloc(req->arena, sizeof *fs);
    fs->req = req;
    fs->fd = fd;
    fs->sock = -1;
    fs->off = offset;
    fs->remaining = send_body ? length : 0;
    fs->done = done;
    fs->arg = arg;
    fs->state = FS_HEAD;
    if (send_body) {
        uv_os_fd_t sfd;
        int r = uv_fileno(&c->h.handle, &sfd);
        if (r < 0)
            return r;
        fs->sock = fcntl(sfd, F_DUPFD_CLOEXEC, 3);
        if (fs->sock < 0)
            return -errno;
        r = uv_poll_init(req->srv->loop, &fs->poll, fs->sock);
        if (r < 0) {
            close(fs->sock);
            return r;
        }
        fs->poll.data = fs;
        /* Head and body leave in full segments (the connection otherwise
         * has TCP_NODELAY); fails harmlessly on other sockets. */
        int one = 1;
        (void)setsockopt(fs->sock, IPPROTO_TCP, TCP_CORK, &one, sizeof one);
    }
    req->resp_started = true;
    req->status = status;
    req->fs = fs;
    req->refs++;                   /* Released when 'fs' is over. */
    size_t head_len;
    char *head = build_head(req, status, content_type, with_body ? (int64_t)length : -2, 0,
                            &head_len);
    c->last_send_ms = uv_now(req->srv->loop);
    if (gone) {
        file_finish(fs, -ECONNRESET);
        return 0;
    }
    if (!send_body) {
        req_send_buffer(req, head, head_len);
        file_finish(fs, 0);
        return 0;
    }
    /* The head, then the body once the head and every answer queued before
     * it are written. */
    uv_buf_t b = uv_buf_init(head, (unsigned)head_len);
    int n = uv_try_write(&c->h.stream, &b, 1);
    if (n == (int)head_len) {
        file_start_job(fs);
    } else if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS) {
        conn_abort(c);
        file_finish(fs, -ECONNRESET);
    } else {
        if (n > 0) {
            b.base += n;
            b.len -= (size_t)n;
        }
        struct http_write *w = write_get(req);
        w->done = file_head_written;
        w->arg = fs;
        req_write(req, w, &b, 1, false, 0);
    }
    conn_update_timer(c);
    return 0;
}

/* ---- Starting connections and shutting down. */

static int
conn_start(http_server *s, struct http_conn *c)
{
    c->srv = s;
    c->h.handle.data = c;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->refs = 2;   /* The socket and the timer handles. */
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->accept_ms = uv_now(s->loop);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    s->stats.connections_total++;
    s->stats.connections_open++;
    conn_update_reading(c);
    if (!c->reading) {
        conn_abort(c);
        return 0;
    }
    conn_update_timer(c);
    return 0;
}

int
http_server_adopt_fd(http_server *s, int fd)
{
    if (!s || fd < 0 || s->shutting_down)
        return -EINVAL;
    struct http_conn *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    int ret = uv_pipe_init(s->loop, &c->h.pipe, 0);
    if (ret < 0) {
        free(c);
        return ret;
    }
    ret = uv_pipe_open(&c->h.pipe, fd);
    if (ret < 0) {
        c->h.handle.data = NULL;
        uv_close(&c->h.handle, refused_close_cb);
        return ret;
    }
    snprintf(c->peer, sizeof c->peer, "unix");
    async_ensure(s);
    return conn_start(s, c);
}

void
http_server_shutdown(http_server *s, void (*done)(void *arg), void *arg)
{
    if (!s || s->shutting_down)
        return;
    s->shutting_down = true;
    s->done = done;
    s->done_arg = arg;
    if (s->listener) {
        uv_tcp_t *t = s->listener;
        s->listener = NULL;
        s->listener_closing = true;
        uv_close((uv_handle_t *)t, listener_close_cb);
    }
    struct http_conn *next;
    for (struct http_conn *c = s->conns; c; c = next) {
        if (c->dead || c->closing) {
            next = c->next;
            continue;
        }
        /* Idle connections and heads still arriving are closed; requests
         * whose head is complete are let finish. */
        conn_ref(c);
        if (!c->cur || c->cur->phase == PH_HEAD) {
            c->no_linger = true;
            conn_finish(c);
        }
        next = c->next;
        conn_unref(c);
    }
    server_check_done(s);
}
