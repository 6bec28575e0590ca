/* Running external commands (qemu-img, tar, runc) to completion.  Blocks:
 * call from a worker thread, never from the event loop. */
#ifndef NIMBUS_AGENT_PROC_H
#define NIMBUS_AGENT_PROC_H

#include <stddef.h>

/* Runs argv[0] (searched in PATH) with 'argv' (NULL-terminated), stdin from
 * /dev/null.  Its stdout goes into 'out' (outlen bytes, NUL-terminated,
 * may be NULL to discard); the last bytes of its stderr into 'err' for the
 * error message.  Returns 0 when it exits 0, -ECHILD when it exits non-zero
 * or dies of a signal (the message says which), or another -errno when it
 * cannot be started. */
int proc_run(const char *const argv[], char *out, size_t outlen, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Same, with the command's stdout and stderr appended to the file 'log'
 * (created 0640) instead of captured: for "runc run -d", whose container
 * inherits them and keeps writing there after runc exits. */
int proc_run_logged(const char *const argv[], const char *log, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
