/* HTTP/1.1 server on libuv.
 *
 * One http_server listens on one address and dispatches requests through a
 * router of (method, path template) pairs.  Keep-alive and pipelining are
 * supported: requests on one connection are handled strictly one after the
 * other and answered in order.  Request bodies are either buffered (up to
 * the route's limit, 413 beyond) and handed to the handler whole, or, for
 * routes registered with HTTP_ROUTE_STREAM, streamed to the handler piece by
 * piece with back-pressure, so an upload of any size takes constant memory.
 *
 * Ownership rule: every request handed to a handler must be answered exactly
 * once, with http_respond(), with http_resp_start()...http_resp_end(), or
 * with http_respond_file().  If the client goes away first, the request
 * stays valid until it is answered; the answer is then dropped and the
 * request freed.  Handlers may answer
 * synchronously or later from any callback on the same loop.
 *
 * Everything allocated from http_req_arena() lives until the request is
 * freed (after its answer has been written or dropped).
 */
#ifndef NIMBUS_HTTP_H
#define NIMBUS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct arena;
typedef struct http_server http_server;
typedef struct http_request http_request;

struct http_server_config {
    size_t max_header_bytes;       /* Request line + headers; 431 beyond. Default 16384. */
    size_t max_body_bytes;         /* Default limit for buffered routes; 413 beyond. Default 1 MiB. */
    unsigned max_connections;      /* Accepted connections beyond are closed at once. Default 10000. */
    unsigned header_timeout_ms;    /* Whole request head must arrive within this. Default 10000. */
    unsigned idle_timeout_ms;      /* Keep-alive connection with no request in flight. Default 60000. */
    unsigned body_timeout_ms;      /* Max gap between two pieces of a body. Default 60000. */
    unsigned max_pipeline_bytes;   /* Bytes read ahead while a request is in flight. Default 65536. */
    unsigned send_timeout_ms;      /* Max time without progress while a file body is sent. Default 60000. */
};

/* Fills 'cfg' with the defaults above. */
void http_server_config_defaults(struct http_server_config *cfg);

typedef void (*http_handler_fn)(http_request *req, void *data);

/* Called to build the answer for errors the server itself detects (404 no
 * route, 405 wrong method, 400 malformed, 413, 431, 503...), so that each
 * API can use its own error shape.  It must answer 'req' like a handler.
 * 'message' is a short human-readable reason. */
typedef void (*http_error_fn)(http_request *req, int status,
                              const char *message, void *data);

enum http_route_flags {
    HTTP_ROUTE_STREAM = 1 << 0,    /* Body is streamed: see http_req_read_body(). */
};

struct http_route_opts {
    unsigned flags;                /* enum http_route_flags */
    size_t max_body_bytes;         /* 0: the server default.  For streamed routes: total cap, 0 = unlimited. */
};

/* Creates a server on 'loop'.  'cfg' may be NULL for the defaults.  The
 * caller owns the result; free it with http_server_free() after shutdown. */
int http_server_new(uv_loop_t *loop, const struct http_server_config *cfg,
                    http_server **out) __attribute__((warn_unused_result));

/* Adds a route.  'method' is "GET", "POST", ... ("HEAD" requests fall back
 * to the GET route, with the body dropped).  'pattern' is a path template
 * whose segments are literals or "{name}" captures matching one non-empty
 * segment, for example "/v2.1/servers/{id}/action".  A trailing slash in the
 * request path is ignored.  'opts' may be NULL.  Strings are copied. */
int http_server_route(http_server *s, const char *method, const char *pattern,
                      http_handler_fn fn, void *data,
                      const struct http_route_opts *opts)
    __attribute__((warn_unused_result));

/* Sets the error answer builder (default: plain text). */
void http_server_set_error_handler(http_server *s, http_error_fn fn, void *data);

/* Cross-origin calls (CORS) from web pages of other origins, such as the
 * dashboard calling APIs on other ports.  'origins' is a list of exact
 * origins ("http://ctl:5000"), separated by commas or spaces; empty or NULL
 * allows none (the default).  A request whose Origin header is in the list
 * gets Access-Control-Allow-Origin (and the token and request id headers
 * exposed) on its answer, and its preflight (OPTIONS with
 * Access-Control-Request-Method) is answered 204 by the server itself with
 * the methods and headers the APIs take.  Other origins get no CORS headers,
 * so browsers keep them out.  Returns 0, or -EINVAL (an entry that is not
 * "http[s]://host[:port]", or more than 32 entries; the old list is kept)
 * or -ENOMEM.  The strings are copied. */
int http_server_set_cors(http_server *s, const char *origins) __attribute__((warn_unused_result));

/* Binds and listens on host:port (IPv4 or IPv6 literal).  port 0 picks a free
 * port; http_server_port() tells which.  With 'reuseport' several processes
 * may share the port (SO_REUSEPORT). */
int http_server_listen(http_server *s, const char *host, int port, bool reuseport)
    __attribute__((warn_unused_result));
int http_server_port(const http_server *s);

/* Graceful shutdown: stops accepting, closes idle connections, lets
 * in-flight requests finish (their connections then close), and calls
 * 'done' once no connection is left.  Safe to call twice. */
void http_server_shutdown(http_server *s, void (*done)(void *arg), void *arg);

/* Frees the server; call after the shutdown callback ran (or before listen).
 * Accepts NULL. */
void http_server_free(http_server *s);

struct http_server_stats {
    uint64_t requests;             /* Requests dispatched (including errors). */
    uint64_t responses[6];         /* By status class: [1]=1xx ... [5]=5xx. */
    uint64_t connections_total;
    uint64_t connections_refused;  /* Over max_connections. */
    uint64_t timeouts;             /* Header, idle-with-partial-request, body or send timeouts. */
    unsigned connections_open;
};
void http_server_stats(const http_server *s, struct http_server_stats *out);

/* ---- The request. All strings are NUL-terminated and owned by the request. */

const char *http_req_method(const http_request *req);
/* Path without the query string, percent-decoding NOT applied. */
const char *http_req_path(const http_request *req);
/* Raw query string after '?', or NULL. */
const char *http_req_query(const http_request *req);
/* First value of query parameter 'name', percent-decoded ('+' is a space),
 * or NULL.  A parameter given without '=' has the value "". */
const char *http_req_query_param(http_request *req, const char *name);
/* Calls 'fn' for every query parameter in order, decoded. Stops when fn
 * returns non-zero and returns that value. */
int http_req_query_each(http_request *req,
                        int (*fn)(const char *name, const char *value, void *arg),
                        void *arg);
/* The value of path capture "{name}", percent-decoded, or NULL. */
const char *http_req_param(const http_request *req, const char *name);
/* Header value by case-insensitive name; repeated headers are joined with
 * ", ".  NULL when absent. */
const char *http_req_header(const http_request *req, const char *name);
/* Buffered body (always NUL-terminated; 'len' may be NULL). NULL if none. */
const char *http_req_body(const http_request *req, size_t *len);
/* Peer address as text ("127.0.0.1"), for rate limits and logs. */
const char *http_req_peer(const http_request *req);
/* A unique id "req-<uuid>" for logs and x-openstack-request-id. */
const char *http_req_id(const http_request *req);
/* Monotonic time (ns) when the request head was complete. */
uint64_t http_req_start_ns(const http_request *req);
struct arena *http_req_arena(http_request *req);
/* True when the client has gone away; the answer will be dropped. */
bool http_req_aborted(const http_request *req);
/* Free slot for the handler's own per-request state. */
void http_req_set_data(http_request *req, void *data);
void *http_req_get_data(const http_request *req);

/* ---- Streamed bodies (routes with HTTP_ROUTE_STREAM).
 *
 * The handler is called once the head is complete.  It then calls
 * http_req_read_body() to receive the body: 'on_data' gets each piece (the
 * bytes are only valid during the call) and may return a negative errno to
 * stop (the server then answers nothing itself: the handler still answers).
 * 'on_end' is called once: status 0 after the whole body, or negative (for
 * example -ECONNRESET when the client went away, -E2BIG over the route's
 * cap, -ETIMEDOUT) after which no more data arrives.  A handler that answers
 * without reading the body gets the connection closed after the answer.
 * http_req_pause()/http_req_resume() stop and restart reading from the
 * socket (back-pressure while data is written elsewhere). */
typedef int (*http_body_data_fn)(http_request *req, const char *data, size_t len, void *arg);
typedef void (*http_body_end_fn)(http_request *req, int status, void *arg);
int http_req_read_body(http_request *req, http_body_data_fn on_data,
                       http_body_end_fn on_end, void *arg)
    __attribute__((warn_unused_result));
void http_req_pause(http_request *req);
void http_req_resume(http_request *req);
/* Optional, after http_req_read_body(), for handlers that keep the bytes:
 * while the body streams and no earlier bytes wait to be parsed, the next
 * read from the socket goes to the memory 'get_buf' returns (at most
 * '*len' bytes, which it may lower; NULL: the server's own buffer), and is
 * parsed there, so 'on_data' gets pointers into that memory, to the place
 * given for a Content-Length body, at or after it for a chunked one (whose
 * framing is skipped).  Bytes of that read that 'on_data' did not get
 * (framing, a pipelined request, the rest after a pause) are copied out
 * before the read callback returns, so the memory is the handler's again
 * then.  Saves a copy, and lets one read be as large as the handler's
 * buffer. */
typedef char *(*http_body_buf_fn)(http_request *req, size_t *len, void *arg);
void http_req_set_body_buffer(http_request *req, http_body_buf_fn get_buf);
/* Declared Content-Length, or -1 when chunked or absent. */
int64_t http_req_content_length(const http_request *req);

/* ---- Answers. */

/* Adds a response header (copied).  Content-Length, Connection and
 * Transfer-Encoding are set by the server. */
void http_resp_header(http_request *req, const char *name, const char *value);

/* Answers with a whole body (copied; may be NULL with len 0).
 * 'content_type' may be NULL for none.  Returns 0, or a negative errno if the
 * request was already answered. */
int http_respond(http_request *req, int status, const char *content_type,
                 const char *body, size_t len);

/* Streamed answer: start with a known length, or -1 for chunked encoding. */
int http_resp_start(http_request *req, int status, const char *content_type,
                    int64_t content_length);
/* Writes a piece; 'data' must stay valid until 'done' is called (status 0 or
 * negative errno when the client went away).  'done' may be NULL, in which
 * case the data is copied. */
int http_resp_write(http_request *req, const void *data, size_t len,
                    void (*done)(http_request *req, int status, void *arg),
                    void *arg);
/* Finishes a streamed answer; the request is freed once it is written. */
int http_resp_end(http_request *req);

/* Called once when a file answer is over: 'status' is 0 when all 'sent'
 * bytes of the body were handed to the socket, or a negative errno:
 * -ECONNRESET (the client went away), -ETIMEDOUT (it read nothing for
 * send_timeout_ms), -ENODATA (the file is shorter than announced) or the
 * error of reading the file.  On failure the connection is closed, since
 * the announced length cannot be met. */
typedef void (*http_file_done_fn)(http_request *req, int status, uint64_t sent, void *arg);

/* Answers with 'length' bytes of the open file 'fd' from 'offset' as the
 * body (Content-Length: length).  The head is written first, then the
 * kernel sends the file to the socket with sendfile(2), with no copy
 * through user space; each sendfile call runs on libuv's thread pool, so
 * a cold disk never stalls the loop, and the loop waits for the socket to
 * become writable between calls.  The next request on the connection is
 * only answered after the whole body.  HEAD requests and statuses without
 * a body get the head only.
 *
 * 'fd' stays owned by the caller and must stay open until 'done' has been
 * called; 'done' (may be NULL) runs exactly once, never from within this
 * call, and the request is freed after it returns.  Returns 0, or a
 * negative errno when nothing was sent (-EALREADY when already answered,
 * -EINVAL for bad arguments): the request must then be answered otherwise
 * and 'done' is never called. */
int http_respond_file(http_request *req, int status, const char *content_type, int fd,
                      uint64_t offset, uint64_t length, http_file_done_fn done, void *arg)
    __attribute__((warn_unused_result));

/* Reason phrase for a status code ("Not Found"). */
const char *http_status_text(int status);

#endif
