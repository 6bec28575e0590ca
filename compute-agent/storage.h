/* Instance storage for the reconciler (struct rc_storage) on top of the
 * image cache: per-instance directories under <state_dir>/instances/<uuid>
 * holding the qcow2 overlay (disk.qcow2), the console log (console.log)
 * and, for containers, the provider's bundle. */
#ifndef NIMBUS_AGENT_STORAGE_H
#define NIMBUS_AGENT_STORAGE_H

#include "image_cache.h"
#include "reconcile.h"

struct storage;

/* 'cache' must outlive the storage.  'containers': prepare rootfs layers
 * (the oci provider) instead of disks. */
int storage_new(const char *state_dir, struct img_cache *cache, bool containers,
                struct storage **out) __attribute__((warn_unused_result));
void storage_free(struct storage *s);

/* The rc_storage interface over 's'. */
struct rc_storage storage_interface(struct storage *s);

/* The file of an instance directory whose presence lets the console proxy
 * serve the overlay to a move's destination (its content: the SHA-256 of
 * the move's secret, hex). */
#define STORAGE_EXPORT_FILE "migration.export"

/* The cached base image of 'd' (fetched when missing) into 'base' and its
 * format ("qcow2" or "raw") into 'fmt'. */
int storage_base(struct storage *s, const struct inst_desired *d, char base[PATH_MAX],
                 char fmt[8], char *err, size_t errlen) __attribute__((warn_unused_result));

/* The instance directory of 'uuid' into 'out'. */
void storage_inst_dir(const struct storage *s, const char *uuid, char out[PATH_MAX]);

/* The last 'max_lines' lines (0: all, up to 1 MiB) of the instance's
 * console log (the serial console of a VM, stdout and stderr of a
 * container), malloc'd into *out, NUL-terminated.  -ENOENT when the
 * instance has no log. */
int storage_console(const struct storage *s, const char *uuid, unsigned max_lines,
                    char **out, size_t *len) __attribute__((warn_unused_result));

#endif
