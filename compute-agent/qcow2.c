/* qcow2 headers read and overlays written without qemu-img (qcow2.h). */
#include "qcow2.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define QCOW2_MAGIC 0x514649fbu          /* "QFI\xfb" */
#define CLUSTER_BITS 16
#define CLUSTER ((uint64_t)1 << CLUSTER_BITS)
#define L2_ENTRIES (CLUSTER / 8)          /* One L2 table maps 512 MiB. */
#define HEADER_LENGTH 112
#define EXT_BACKING_FORMAT 0xe2792acau
#define EXT_FEATURE_NAMES 0x6803f857u
#define BACKING_MAX 1023                  /* QEMU's limit for the name. */

static uint32_t
get32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return be32toh(v);
}

static uint64_t
get64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}

static void
put32(unsigned char *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}

static void
put64(unsigned char *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

static void
put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

int
qcow2_info(const char *path, char *backing, size_t len, uint64_t *size)
{
    unsigned char h[72];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = 0;
    if (pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h || get32(h) != QCOW2_MAGIC ||
        (get32(h + 4) != 2 && get32(h + 4) != 3)) {
        r = -EINVAL;
        goto out;
    }
    *size = get64(h + 24);
    uint64_t boff = get64(h + 8);
    uint32_t blen = get32(h + 16);
    if (backing && len)
        backing[0] = 0;
    if (boff && backing) {
        if (blen > BACKING_MAX || blen >= len) {
            r = -ENAMETOOLONG;
            goto out;
        }
        if (pread(fd, backing, blen, (off_t)boff) != (ssize_t)blen) {
            r = -EINVAL;
            goto out;
        }
        backing[blen] = 0;
    }
out:
    close(fd);
    return r;
}

int
qcow2_virtual_size(const char *path, const char *fmt, uint64_t *size)
{
    if (!strcmp(fmt, "qcow2"))
        return qcow2_info(path, NULL, 0, size);
    if (strcmp(fmt, "raw"))
        return -EINVAL;
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

/* The feature-name table QEMU 7.2 writes into every new qcow2 header:
 * (type, bit, name) for incompatible (0), compatible (1) and autoclear (2)
 * features. */
static const struct {
    unsigned char type, bit;
    const char *name;
} feature_names[] = {
    { 0, 0, "dirty bit" },
    { 0, 1, "corrupt bit" },
    { 0, 2, "external data file" },
    { 0, 3, "compression type" },
    { 0, 4, "extended L2 entries" },
    { 1, 0, "lazy refcounts" },
    { 2, 0, "bitmaps" },
    { 2, 1, "raw external data" },
};

#define FEATURE_ENTRY 48

static bool
write_all(int fd, const unsigned char *p, size_t n, off_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return true;
}

int
qcow2_create_overlay(const char *path, const char *backing, const char *backing_fmt,
                     uint64_t size, char *err, size_t errlen)
{
    size_t blen = strlen(backing), flen = strlen(backing_fmt);
    if (!blen || blen > BACKING_MAX || !flen || flen > 16) {
        snprintf(err, errlen, "overlay %s: bad backing file or format", path);
        return -EINVAL;
    }
    size = (size + 511) & ~(uint64_t)511;
    uint64_t l1_size = (size + L2_ENTRIES * CLUSTER - 1) / (L2_ENTRIES * CLUSTER);
    uint64_t l1_clusters = (l1_size * 8 + CLUSTER - 1) / CLUSTER;
    if (!l1_clusters)
        l1_clusters = 1;
    uint64_t clusters = 3 + l1_clusters;     /* header, refcount table, block, L1 */
    if (clusters > CLUSTER / 2) {            /* One refcount block of 32768. */
        snprintf(err, errlen, "overlay %s: %llu bytes is too large", path,
                 (unsigned long long)size);
        return -EFBIG;
    }

    /* Cluster 0: header, extensions, backing file name. */
    unsigned char *c0 = calloc(1, CLUSTER);
    unsigned char *rt = calloc(1, CLUSTER), *rb = calloc(1, CLUSTER);
    int r = -ENOMEM;
    if (!c0 || !rt || !rb)
        goto out;
    size_t o = HEADER_LENGTH;
    put32(c0 + o, EXT_BACKING_FORMAT);
    put32(c0 + o + 4, (uint32_t)flen);
    memcpy(c0 + o + 8, backing_fmt, flen);
    o += 8 + ((flen + 7) & ~(size_t)7);
    size_t n_feat = sizeof feature_names / sizeof *feature_names;
    put32(c0 + o, EXT_FEATURE_NAMES);
    put32(c0 + o + 4, (uint32_t)(n_feat * FEATURE_ENTRY));
    o += 8;
    for (size_t i = 0; i < n_feat; i++, o += FEATURE_ENTRY) {
        c0[o] = feature_names[i].type;
        c0[o + 1] = feature_names[i].bit;
        memcpy(c0 + o + 2, feature_names[i].name, strlen(feature_names[i].name));
    }
    o += 8;                                   /* End of extensions: type 0, length 0. */
    size_t boff = o;
    if (boff + blen > CLUSTER) {
        snprintf(err, errlen, "overlay %s: backing file name too long", path);
        r = -ENAMETOOLONG;
        goto out;
    }
    memcpy(c0 + boff, backing, blen);
    put32(c0, QCOW2_MAGIC);
    put32(c0 + 4, 3);
    put64(c0 + 8, boff);
    put32(c0 + 16, (uint32_t)blen);
    put32(c0 + 20, CLUSTER_BITS);
    put64(c0 + 24, size);
    put32(c0 + 32, 0);                        /* No encryption. */
    put32(c0 + 36, (uint32_t)l1_size);
    put64(c0 + 40, 3 * CLUSTER);              /* L1 table. */
    put64(c0 + 48, CLUSTER);                  /* Refcount table. */
    put32(c0 + 56, 1);                        /* Its clusters. */
    put32(c0 + 96, 4);                        /* refcount_order: 16 bits. */
    put32(c0 + 100, HEADER_LENGTH);
    /* Refcount table -> block in cluster 2, which counts every cluster. */
    put64(rt, 2 * CLUSTER);
    for (uint64_t i = 0; i < clusters; i++)
        put16(rb + 2 * i, 1);

    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        r = -errno;
        snprintf(err, errlen, "overlay %s: %s", path, strerror(-r));
        goto out;
    }
    off_t end = (off_t)(3 * CLUSTER + l1_size * 8);
    bool ok = write_all(fd, c0, boff + blen, 0) && write_all(fd, rt, 8, (off_t)CLUSTER) &&
              write_all(fd, rb, (size_t)(2 * clusters), (off_t)(2 * CLUSTER)) &&
              ftruncate(fd, end) == 0 && fsync(fd) == 0;
    r = ok ? 0 : (errno ? -errno : -EIO);
    if (close(fd) < 0 && !r)
        r = -errno;
    if (r) {
        snprintf(err, errlen, "overlay %s: %s", path, strerror(-r));
        unlink(path);
    }
out:
    free(c0);
    free(rt);
    free(rb);
    return r;
}
