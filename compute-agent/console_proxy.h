/* The console proxy of a node (nova-novncproxy's job, done by
 * nimbus-compute): a WebSocket endpoint that relays a client to the VNC
 * server (or the serial pty) of one instance on this node.
 *
 * A client connects to ws://<proxy>/?token=<token> with a token from
 * nimbus-api (os-getVNCConsole, os-getSerialConsole, remote-consoles).
 * The proxy checks the token with POST <api_url>/nodes/<node>/console-token
 * (node credential; the API uses each token up once and only for this
 * node) and learns the instance and protocol; the hypervisor provider
 * gives the address (VNC on loopback, or the serial console's pty).  Then
 * bytes flow both ways: binary WebSocket frames to the client, the
 * client's (masked) frames unmasked to the console.  noVNC's "binary"
 * subprotocol is accepted.
 *
 * Blocking I/O on threads of its own: one accepts, one per connection (at
 * most max_conns at once).  Tokens are never logged. */
#ifndef NIMBUS_AGENT_CONSOLE_PROXY_H
#define NIMBUS_AGENT_CONSOLE_PROXY_H

#include <stddef.h>

/* Limits on what a client controls. */
#define CPROXY_MAX_HEAD 8192            /* HTTP request head. */
#define CPROXY_MAX_FRAME (1u << 20)     /* One WebSocket frame's payload. */

struct cproxy_config {
    const char *listen_host;     /* e.g. 127.0.0.1 or 0.0.0.0. */
    int port;                    /* 0 picks one. */
    const char *public_url;      /* What nimbus-api hands out; NULL: http://<host>:<port>. */
    const char *api_url;         /* The agent channel, e.g. http://127.0.0.1:8774/agent/v1. */
    const char *node;
    const char *node_token;
    unsigned max_conns;          /* Default 32. */
    /* The storage's instance directories: GET /migration/<uuid>/disk
     * serves overlays exported for a move from there (disk_move.h); NULL:
     * not served. */
    const char *instances_dir;
};

/* Where the console of 'uuid' is: "host:port" for protocol "vnc", a pty
 * path for "serial".  Returns 0 or -errno.  Called on the proxy's threads. */
typedef int (*cproxy_target_fn)(void *ctx, const char *uuid, const char *protocol,
                                char *addr, size_t len);

struct cproxy;

/* Listens and starts the accepting thread.  Strings are copied.  Returns 0
 * or -errno with a message in 'err'. */
int cproxy_start(const struct cproxy_config *cfg, cproxy_target_fn target, void *ctx,
                 struct cproxy **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The URL clients are given (without the token). */
const char *cproxy_url(const struct cproxy *p);

/* Stops accepting, ends the connections (each notices within half a
 * second) and frees.  Accepts NULL. */
void cproxy_stop(struct cproxy *p);

#endif
