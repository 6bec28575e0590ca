/* Internal entry points of the HTTP server, for its unit tests and fuzzers
 * only.  Daemons use lib/http.h. */
#ifndef NIMBUS_HTTP_INTERNAL_H
#define NIMBUS_HTTP_INTERNAL_H

#include "http.h"

#include <stddef.h>

struct arena;

/* The outcome of routing one (method, path) pair. */
struct http_route_match {
    int status;                    /* 0 when a route matched, else 400, 404 or 405. */
    http_handler_fn fn;            /* The matched route's handler and data. */
    void *data;
    const char *pattern;           /* The matched route's template. */
    const char *allow;             /* For 405: the Allow header value. */
    size_t nparams;                /* Captures, percent-decoded, in template order. */
    const char **names;
    const char **values;
};

/* Routes 'method' and raw 'path' (no query string) exactly as the server
 * does for a request.  Strings in 'out' are allocated from 'a' or owned by
 * the server.  Returns 0 (the outcome is in out->status) or -EINVAL. */
int http_router_match(const http_server *s, const char *method, const char *path,
                      struct arena *a, struct http_route_match *out)
    __attribute__((warn_unused_result));

/* Serves one already-connected AF_UNIX stream socket 'fd' as if it had been
 * accepted; the server takes ownership of 'fd' on success.  Used by the
 * fuzzer to drive the real connection code over a socketpair. */
int http_server_adopt_fd(http_server *s, int fd) __attribute__((warn_unused_result));

/* Caps the number of bytes read from a socket at once (default 65536), so
 * that tests and fuzzers exercise requests split across many reads. */
void http_server_set_read_size(http_server *s, size_t n);

#endif
