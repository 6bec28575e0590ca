/* The HTTP source: the agent channel to nimbus-api (docs/agent-channel.md)
 * with libcurl.  Two threads, each with its own connection: the poller
 * registers the node and long-polls the desired state; the reporter sends
 * inventory heartbeats, the latest observed state and queued events.  Both
 * reconnect with exponential backoff (0.5 s doubling to 30 s, jittered) and
 * register again after 401/404.  Desired states reach the event loop
 * through a uv_async, in order, the latest winning. */
#ifndef NIMBUS_AGENT_CHANNEL_H
#define NIMBUS_AGENT_CHANNEL_H

#include <stdint.h>
#include <uv.h>

#include "instance.h"

struct chan_config {
    const char *api_url;         /* e.g. http://127.0.0.1:8774/agent/v1 */
    const char *node;
    const char *token;           /* Node credential. */
    unsigned wait_s;             /* Long-poll wait asked of the API (default 30). */
    unsigned heartbeat_ms;       /* Inventory period (default 5000). */
    const char *register_json;   /* Body of the register call (facts about the node). */
    const char *inventory_json;  /* Body of the inventory heartbeat. */
};

/* Called on the loop's thread with a new desired state, whose ownership
 * passes to the callee. */
typedef void (*chan_desired_fn)(void *arg, struct desired_set *ds);

struct chan;

struct chan_stats {
    uint64_t registrations, polls, desired_received, reports, events_sent,
             events_dropped, errors;
    /* Observed documents are numbered 1, 2... in the order they are queued
     * (chan_report_observed); the number of the last one delivered.  A
     * document is only ever replaced by a later one, so everything a
     * document up to this one said has reached nimbus-api or was said
     * again by a later one. */
    uint64_t observed_delivered;
};

/* Starts the threads.  Strings in 'cfg' are copied.  The caller owns the
 * channel and must chan_stop() it before closing the loop. */
int chan_start(uv_loop_t *loop, const struct chan_config *cfg, chan_desired_fn fn,
               void *arg, struct chan **out) __attribute__((warn_unused_result));

/* Queues the observed-state document (copied; a newer one replaces an
 * unsent older one).  Thread-safe. */
void chan_report_observed(struct chan *c, const char *json);
/* Queues one event object (copied; up to 1000 unsent, the oldest dropped
 * beyond).  Thread-safe. */
void chan_report_event(struct chan *c, const char *json);

void chan_stats(struct chan *c, struct chan_stats *out);

/* Stops the threads (aborting a long poll in flight), closes the async
 * handle and frees the channel.  Accepts NULL. */
void chan_stop(struct chan *c);

#endif
