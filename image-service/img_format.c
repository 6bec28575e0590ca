#include "img_format.h"

#include <errno.h>
#include <string.h>

#define QCOW2_MAGIC "QFI\xfb"
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)

static uint64_t
be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t
be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void
img_format_feed(struct img_format_probe *p, const void *data, size_t len)
{
    if (p->len >= IMG_FORMAT_HEAD)
        return;
    size_t n = IMG_FORMAT_HEAD - p->len;
    if (n > len)
        n = len;
    memcpy(p->head + p->len, data, n);
    p->len += n;
}

static int
is_qcow2(const struct img_format_probe *p)
{
    return p->len >= 4 && !memcmp(p->head, QCOW2_MAGIC, 4);
}

static int
check_qcow2(const struct img_format_probe *p, int64_t *virtual_size,
            const char **why)
{
    if (!is_qcow2(p) || p->len < 72) {
        *why = "The image data is not in the declared disk format qcow2.";
        return -EINVAL;
    }
    uint32_t version = be32(p->head + 4);
    if (version != 2 && version != 3) {
        *why = "Unsupported qcow2 version.";
        return -EINVAL;
    }
    if (be64(p->head + 8) != 0 || be32(p->head + 16) != 0) {
        *why = "A qcow2 image with a backing file is not allowed.";
        return -EINVAL;
    }
    uint32_t cluster_bits = be32(p->head + 20);
    if (cluster_bits < 9 || cluster_bits > 21) {
        *why = "The qcow2 header is malformed (cluster size).";
        return -EINVAL;
    }
    if (version == 3) {
        if (p->len < 104) {
            *why = "The qcow2 header is truncated.";
            return -EINVAL;
        }
        if (be64(p->head + 72) & QCOW2_INCOMPAT_DATA_FILE) {
            *why = "A qcow2 image with an external data file is not allowed.";
            return -EINVAL;
        }
    }
    uint64_t vs = be64(p->head + 24);
    if (vs > (uint64_t)INT64_MAX) {
        *why = "The qcow2 header is malformed (virtual size).";
        return -EINVAL;
    }
    *virtual_size = (int64_t)vs;
    return 0;
}

int
img_format_check(const struct img_format_probe *p, const char *disk_format,
                 uint64_t size, int64_t *virtual_size, const char **why)
{
    *virtual_size = -1;
    *why = NULL;
    if (!disk_format)
        return 0;
    if (!strcmp(disk_format, "qcow2"))
        return check_qcow2(p, virtual_size, why);
    if (!strcmp(disk_format, "raw")) {
        if (is_qcow2(p)) {
            *why = "The image is declared raw but its data is qcow2.";
            return -EINVAL;
        }
        *virtual_size = (int64_t)size;
    }
    return 0;
}
