/* The configuration options of nimbus-api and nimbus-manage: one table,
 * which also produces etc/nimbus.conf.example. */
#ifndef NIMBUS_API_OPTIONS_H
#define NIMBUS_API_OPTIONS_H

#include <stddef.h>

#include "conf.h"

extern const struct conf_option api_options[];
extern const size_t api_options_count;
extern const char *const conf_foreign_sections[];

#define API_DEFAULT_CONFIG "/etc/nimbus/nimbus.conf"

/* Loads the configuration: defaults, then 'path' (or the default path when
 * NULL; a missing default file is not an error, a missing explicit one is).
 * On error prints a message naming the bad option to stderr and returns
 * NULL.  The caller owns the result. */
struct conf *api_config_load(const char *path);

#endif
