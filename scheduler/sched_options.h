/* nimbus-scheduler's options (the [scheduler], [database] and [log]
 * sections of the shared configuration file). */
#ifndef NIMBUS_SCHED_OPTIONS_H
#define NIMBUS_SCHED_OPTIONS_H

#include <stddef.h>

#include "conf.h"

extern const struct conf_option sched_options[];
extern const size_t sched_options_count;

/* Reads the sections of 'path' that the scheduler uses into 'c' and skips
 * the others.  Returns 0, or a negative errno with 'err' naming the file,
 * line and option. */
int sched_config_load(struct conf *c, const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
