/* Disk work of server actions on a node (the rc_storage grow, snapshot
 * and upload operations of reconcile.h): growing an instance's qcow2
 * overlay for a resize, and snapshots into nimbus-image.
 *
 * A snapshot is the overlay flattened with its base into one qcow2 file
 * (qemu-img convert -U, while the reconciler keeps a running guest
 * paused), <instance dir>/snapshot.qcow2, then uploaded with Glance's
 * PUT <image_url>/v2/images/{id}/file and removed.  The upload carries
 * the node credential (Authorization: Bearer), or, when the agent has the
 * interim image password (image_fetch_http.h), a Keystone token. */
#ifndef NIMBUS_AGENT_SNAPSHOT_H
#define NIMBUS_AGENT_SNAPSHOT_H

#include <stddef.h>

#include "instance.h"
#include "storage.h"

struct img_http;

struct snap_config {
    const char *image_url;       /* nimbus-image, e.g. http://127.0.0.1:9292; NULL: no uploads. */
    const char *node_token;      /* Node credential, or NULL. */
    struct img_http *auth;       /* Keystone token source, or NULL; outlives the snap. */
};

struct snap;

/* 'st' must outlive the snap.  Strings are copied. */
int snap_new(const struct snap_config *cfg, struct storage *st, struct snap **out)
    __attribute__((warn_unused_result));
/* Accepts NULL. */
void snap_free(struct snap *s);

/* Fills the grow, snapshot, upload and wipe members of 'rs'. */
void snap_attach(struct snap *s, struct rc_storage *rs);

/* The operations, with 'ctx' a struct snap (see reconcile.h).  Return 0 or
 * -errno with a message in 'err'. */
int snap_grow(void *ctx, const struct inst_desired *d, char *err, size_t errlen);
int snap_copy(void *ctx, const struct inst_desired *d, char *err, size_t errlen);
int snap_upload(void *ctx, const struct inst_desired *d, char *err, size_t errlen);
/* Rebuild: removes the instance's overlay (define makes a new one). */
int snap_wipe(void *ctx, const struct inst_desired *d, char *err, size_t errlen);

#endif
