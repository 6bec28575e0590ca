/* Console logs in the observed state (docs/agent-channel.md, section 4):
 * the agent pushes the tail of each instance's console log to nimbus-api,
 * which keeps it for os-getConsoleOutput ("openstack console log show"),
 * so nimbus-api never has to reach into a node.
 *
 * A tail is the last CONSOLE_TAIL_BYTES of the log, cut at a line start,
 * made valid UTF-8 without control characters other than newline and tab.
 * A changed log (size, modification time or inode) is sent in every
 * report until a report that carries it is delivered (documents are
 * numbered in the order they are queued, see chan_stats), so a report
 * replaced before it was sent loses nothing; and every log again every
 * CONSOLE_RESEND_MS.  One report carries at most CONSOLE_REPORT_BUDGET
 * bytes of tails (less when the rest of the document is large: the whole
 * stays under nimbus-api's 1 MiB), the others wait for the next report. */
#ifndef NIMBUS_AGENT_CONSOLE_REPORT_H
#define NIMBUS_AGENT_CONSOLE_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "storage.h"

#define CONSOLE_TAIL_BYTES (64u << 10)
#define CONSOLE_REPORT_BUDGET (512u << 10)
#define CONSOLE_RESEND_MS 60000u

struct console_report;

/* 'st' must outlive the report. */
int console_report_new(const struct storage *st, struct console_report **out)
    __attribute__((warn_unused_result));
/* Accepts NULL. */
void console_report_free(struct console_report *cr);

/* The observed document 'json', the next one queued, with "console" added
 * to the entries whose log changed and is not known delivered, malloc'd;
 * NULL when nothing was added (or on error: the caller sends 'json' as it
 * is).  'delivered' is the number of the last document delivered
 * (UINT64_MAX when every document counts as delivered). */
char *console_report_add(struct console_report *cr, const char *json, uint64_t now_ms,
                         uint64_t delivered);

/* The tail of 'path' as described above, malloc'd and NUL-terminated;
 * NULL when it cannot be read.  Exposed for tests. */
char *console_tail(const char *path, size_t max_bytes);

#endif
