/* The scheduler daemon: event loop wiring around sched_cycle().
 *
 * The loop owns a database pool used only for LISTEN (new build requests,
 * compute node changes), a sweep timer, the signal handlers and the
 * optional /healthz and /metrics listener.  Decisions run on one worker
 * thread (uv_queue_work) with a synchronous connection, one cycle chain at
 * a time, so the in-memory host view has a single writer. */
#ifndef NIMBUS_SCHED_DAEMON_H
#define NIMBUS_SCHED_DAEMON_H

#include <stdbool.h>

#include "conf.h"

/* Runs until SIGTERM/SIGINT (or, with 'once', until no build request is
 * left).  Returns the process exit status. */
int sched_daemon_run(const struct conf *c, bool once);

#endif
