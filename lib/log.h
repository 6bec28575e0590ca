/* Logging to stderr, one line per event, journald-friendly (<N> priority
 * prefixes when stderr is not a terminal is left to systemd; we print a
 * level word).  Library code does not log errors: daemons do, once, where
 * they handle them. */
#ifndef NIMBUS_LOG_H
#define NIMBUS_LOG_H

#include <stdbool.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };

/* Sets the process name printed on each line and the minimum level. */
void log_init(const char *progname, enum log_level min);

/* Parses "debug", "info", "warn" or "error"; returns 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out)
    __attribute__((warn_unused_result));

bool log_enabled(enum log_level lvl);

void log_msg(enum log_level lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(mod, ...) do { if (log_enabled(LOG_LVL_DEBUG)) log_msg(LOG_LVL_DEBUG, mod, __VA_ARGS__); } while (0)
#define log_info(mod, ...) log_msg(LOG_LVL_INFO, mod, __VA_ARGS__)
#define log_warn(mod, ...) log_msg(LOG_LVL_WARN, mod, __VA_ARGS__)
#define log_error(mod, ...) log_msg(LOG_LVL_ERROR, mod, __VA_ARGS__)

#endif
