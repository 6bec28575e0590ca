/* The agent: wires a desired-state source, the reconciler (run on a worker
 * thread, one pass at a time), the reports and /healthz, /metrics onto one
 * libuv loop.
 *
 * Sources of the desired state:
 *   file  a JSON document (docs/agent-channel.md's "desired state") re-read
 *         when it changes (polled every 500 ms) and on SIGHUP; the observed
 *         state is written atomically to another file after every pass and
 *         events are appended, one JSON object a line, to a third.
 *   http  the agent channel on nimbus-api (docs/agent-channel.md, channel.c):
 *         register, inventory heartbeats, long-poll of the desired state,
 *         observed state and events; built when libcurl is present.
 * Until a source has delivered a desired state, the agent does nothing:
 * it never acts on an unknown desired state. */
#ifndef NIMBUS_AGENT_AGENT_H
#define NIMBUS_AGENT_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "hypervisor.h"
#include "reconcile.h"

struct agent_config {
    const char *node;                 /* This node's name. */
    const char *state_dir;
    const char *image_source_dir;     /* img_fetch_dir's directory. */
    const char *image_fetch;          /* "dir" (default) or "http" (image_fetch_http.h). */
    const char *image_url;            /* http fetcher: nimbus-image (with node_token). */
    unsigned interval_ms;             /* Timer between passes. */
    uint64_t image_max_age_s;         /* Unused cached images older than this go; 0 keeps all. */
    struct rc_config rc;
    struct hv_config hv;
    const char *source;               /* "file" or "http". */
    const char *api_url;              /* http: base URL of the channel. */
    const char *node_token;           /* http source and http fetcher: node credential. */
    unsigned poll_wait_s, heartbeat_ms;
    const char *desired_file;
    const char *observed_file;
    const char *events_file;
    const char *console_listen;       /* Console proxy (http source only); NULL/"": none. */
    int console_port;
    const char *console_public_url;   /* Handed out by nimbus-api; NULL: from listen/port. */
    const char *migration_uri;        /* Libvirt URI other nodes reach; NULL: not registered. */
    const char *listen_host;          /* /healthz and /metrics; NULL: none. */
    int listen_port;
};

struct agent;

/* Creates the agent on 'loop': opens the provider, the image cache and the
 * reconciler, and starts the source, the timer and the listener.  Errors
 * are described in 'err'. */
int agent_start(uv_loop_t *loop, const struct agent_config *cfg, struct agent **out,
                char *err, size_t errlen) __attribute__((warn_unused_result));

/* Stops the timer, the source and the listener; calls 'done' once the pass
 * in flight (if any) has finished and every handle is closed.  Then free
 * with agent_free(). */
void agent_stop(struct agent *a, void (*done)(void *arg), void *arg);
void agent_free(struct agent *a);

/* Re-reads the desired state now (SIGHUP). */
void agent_reload(struct agent *a);

/* The port /healthz listens on (tests pass port 0). */
int agent_port(const struct agent *a);

#endif
