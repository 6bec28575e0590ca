/* nimbus-image configuration: the option table and loading.
 *
 * The table is a superset of nimbus-api's ([api], [database], [identity],
 * [log]) plus [image], so that one nimbus.conf serves both daemons:
 * lib/conf.c rejects unknown sections and keys, and either daemon must
 * accept the other's options.  nimbus-api's own table must carry the
 * [image] rows for the same reason (see docs/image.md). */
#ifndef NIMBUS_IMG_OPTIONS_H
#define NIMBUS_IMG_OPTIONS_H

#include <stddef.h>

#include "conf.h"

#define IMG_DEFAULT_CONFIG "/etc/nimbus/nimbus.conf"

extern const struct conf_option img_options[];
extern const size_t img_options_count;

/* Loads 'path' (NULL: IMG_DEFAULT_CONFIG if it exists, else the defaults)
 * and validates it.  Prints the error to stderr and returns NULL on
 * failure.  The caller owns the result (conf_free()). */
struct conf *img_config_load(const char *path);

#endif
