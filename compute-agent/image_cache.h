/* The node's image cache: base images stored read-only once per node,
 * checked against their sha512 (Glance's os_hash_value), per-instance qcow2
 * overlays on top of them, and unpacked read-only layers for containers.
 *
 * Layout under the cache directory:
 *   base/<image id>          read-only (0444) verified image
 *   base/<image id>.used     touched each time an instance uses the image
 *   layers/<image id>/rootfs unpacked container rootfs (read-only use)
 *
 * Every step writes to a temporary name and renames, so a kill -9 at any
 * point leaves either the old state or the new, never a half file under the
 * final name.  Functions block (hashing, qemu-img, tar): call them from a
 * worker thread. */
#ifndef NIMBUS_AGENT_IMAGE_CACHE_H
#define NIMBUS_AGENT_IMAGE_CACHE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "instance.h"

/* A fetcher writes the bytes of image 'img' to the file 'dest' (created by
 * the fetcher): img_fetch_dir (copy from a directory) or img_fetch_http
 * (nimbus-image, image_fetch_http.h).  Returns 0 or -errno with a message
 * in 'err'. */
struct img_fetcher {
    int (*fetch)(void *ctx, const struct inst_image *img, const char *dest,
                 char *err, size_t errlen);
    void *ctx;
};

/* A fetcher that copies <dir>/<image id> ('dir' must outlive it). */
int img_fetch_dir(void *dir, const struct inst_image *img, const char *dest,
                  char *err, size_t errlen);

struct img_cache;

/* Creates the cache over 'dir' (created if missing).  The caller owns the
 * result. */
int img_cache_new(const char *dir, struct img_fetcher fetcher, struct img_cache **out)
    __attribute__((warn_unused_result));
void img_cache_free(struct img_cache *c);

struct img_cache_stats {
    uint64_t hits, fetches, hash_failures, overlays_created, layers_unpacked, cleaned;
};
void img_cache_stats(const struct img_cache *c, struct img_cache_stats *out);

/* Makes image 'img' present and verified in the cache and writes its path
 * to 'path'.  A cached copy whose hash no longer matches (corruption) is
 * removed and fetched again.  A fetched copy that does not match fails
 * with -EBADMSG. */
int img_cache_base(struct img_cache *c, const struct inst_image *img,
                   char path[PATH_MAX], char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Creates (or keeps, when it already exists with the same backing file)
 * the qcow2 overlay 'overlay' over 'base' of format 'base_fmt' ("qcow2" or
 * "raw"), with virtual size 'size_gb' GiB (the base's size when 0 or
 * smaller).  Runs qemu-img. */
int img_cache_overlay(struct img_cache *c, const char *base, const char *base_fmt,
                      const char *overlay, unsigned size_gb, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Makes the container image 'img' (a rootfs tarball, or an OCI image
 * layout/archive tarball whose layers are applied in order) present as an
 * unpacked directory and writes its path to 'path'. */
int img_cache_layer(struct img_cache *c, const struct inst_image *img,
                    char path[PATH_MAX], char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Removes cached images and layers not in 'in_use' (n ids) whose last use
 * is older than 'max_age' seconds before 'now'.  Returns how many were
 * removed. */
int img_cache_clean(struct img_cache *c, const char *const *in_use, size_t n,
                    time_t max_age, time_t now);

/* Hex sha512 of a file into 'hex' (129 bytes). */
int img_sha512_file(const char *path, char hex[129]) __attribute__((warn_unused_result));

#endif
