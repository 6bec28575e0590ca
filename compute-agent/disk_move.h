/* Moving an instance's disk between nodes for a cold migration
 * (docs/compute-agent.md "Moves between nodes"), shared-nothing: the
 * destination agent pulls the qcow2 overlay from the source agent's HTTP
 * listener (the console proxy), GET /migration/<uuid>/disk, with the
 * move's one-time secret in the X-Nimbus-Migration-Secret header.  The
 * source answers only while the instance is stopped for that move (its
 * storage's export mark is there) and only to that secret, with the size
 * in Content-Length and the overlay's SHA-256 in X-Nimbus-Disk-SHA256; the
 * destination checks both before it uses a byte.  The base image is not
 * sent: the destination has its own in its image cache and points the
 * overlay at it (qemu-img rebase -u). */
#ifndef NIMBUS_AGENT_DISK_MOVE_H
#define NIMBUS_AGENT_DISK_MOVE_H

#include <stddef.h>

#include "instance.h"
#include "storage.h"

/* Largest overlay accepted from a source (bytes). */
#define DMOVE_MAX_DISK (1ull << 40)

/* rc_storage.import_disk over 's' (a struct storage *): pulls the overlay
 * of d (action "migrate_in") into its instance directory unless a complete
 * one is there already, verifies it and rebases it onto this node's cached
 * base (growing it to a larger flavor is the caller's: rc_storage.grow).  -EAGAIN while the source is not
 * ready (or unreachable): the reconciler tries again on its next pass.
 * Idempotent: a half-pulled file is discarded and pulled again. */
int dmove_import(void *s, const struct inst_desired *d, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The source side of GET /migration/<uuid>/disk: checks that the
 * instance 'uuid' under 'instances_dir' is exported for a move and that
 * 'secret' is that move's (compared by SHA-256, in constant time), then
 * opens its overlay: *fd (the caller closes it), its size and SHA-256
 * (hex; the file is read once for it, with a fixed-size buffer).
 * -EINVAL for a bad uuid or secret, -EACCES for another secret, -EAGAIN
 * when the instance is not (or no longer) stopped for a move. */
int dmove_open(const char *instances_dir, const char *uuid, const char *secret, int *fd,
               unsigned long long *size, char sha256_hex[65])
    __attribute__((warn_unused_result));

#endif
