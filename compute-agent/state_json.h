/* The JSON shapes of the agent channel (docs/agent-channel.md): the desired
 * state of a node, as nimbus-api serves it and as the file source reads
 * it, and the observed state the agent reports. */
#ifndef NIMBUS_AGENT_STATE_JSON_H
#define NIMBUS_AGENT_STATE_JSON_H

#include <stddef.h>

#include "instance.h"
#include "reconcile.h"

/* Limits on what a peer (or a file) can make the agent allocate. */
#define SJ_MAX_DOC_BYTES (16u << 20)
/* The largest domain definition a live migration's source takes (and nimbus-api
 * keeps for it: 0015_live_migration.sql). */
#define SJ_MAX_MIGRATION_XML 65536u
#define SJ_MAX_INSTANCES 4096

/* Parses a desired-state document into 'out' (which the caller frees with
 * desired_set_free).  On error returns -EINVAL (or -E2BIG over the limits)
 * with a message naming the instance and field in 'err'. */
int sj_parse_desired(const char *text, size_t len, struct desired_set *out,
                     char *err, size_t errlen) __attribute__((warn_unused_result));

/* The observed-state document for 'n' instances of node 'node'; malloc'd. */
char *sj_observed(const char *node, const struct rc_observed *obs, size_t n,
                  uint64_t desired_version);

/* One event as a JSON object on one line (for the events log and the
 * report); malloc'd. */
char *sj_event(const char *node, const char *uuid, const char *event,
               const char *detail, const char *timestamp);

/* Nova's vm_state for a reconciler state. */
const char *sj_vm_state(enum rc_state s);

#endif
