/* The few qcow2 facts the image cache needs, without starting qemu-img:
 * an image's virtual size and backing file from its header, and a new
 * empty overlay on a backing file written directly, byte for byte what
 * `qemu-img create -f qcow2 -b BASE -F FMT PATH SIZE` (QEMU 7.2) writes:
 * version 3, 64 KiB clusters, 16-bit refcounts, the header with its
 * backing-format and feature-name extensions in cluster 0, the refcount
 * table in cluster 1, its one refcount block in cluster 2, the L1 table
 * from cluster 3 (all zero: every read goes to the backing file). */
#ifndef NIMBUS_AGENT_QCOW2_H
#define NIMBUS_AGENT_QCOW2_H

#include <stddef.h>
#include <stdint.h>

/* The virtual size of image 'path' in format 'fmt' ("raw": the file's
 * size; "qcow2": the header's).  0 or -errno (-EINVAL: not a qcow2, or
 * another format). */
int qcow2_virtual_size(const char *path, const char *fmt, uint64_t *size)
    __attribute__((warn_unused_result));

/* The backing file name (into 'backing', "" when none) and virtual size of
 * the qcow2 image 'path'.  0 or -errno. */
int qcow2_info(const char *path, char *backing, size_t len, uint64_t *size)
    __attribute__((warn_unused_result));

/* Writes a new overlay at 'path' (created, must not exist) of 'size' bytes
 * (rounded up to 512) on 'backing' of format 'backing_fmt' ("raw" or
 * "qcow2"), fsynced.  0 or -errno with a message in 'err'. */
int qcow2_create_overlay(const char *path, const char *backing, const char *backing_fmt,
                         uint64_t size, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
