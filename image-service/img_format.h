/* Disk format inspection while the bytes stream: the first bytes of an
 * upload are kept and, once the upload is complete, checked against the
 * declared disk_format, without reading the stored file again.
 *
 * Refused: a declared qcow2 that is not qcow2 (for example raw data), a
 * qcow2 with a backing file or an external data file (either lets the image
 * point the hypervisor at files on the host: a known escape in clouds),
 * qcow2 versions other than 2 and 3, and a declared raw image that is
 * really qcow2 (a hypervisor that probes formats would follow its backing
 * file).  Other formats are accepted as declared. */
#ifndef NIMBUS_IMG_FORMAT_H
#define NIMBUS_IMG_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define IMG_FORMAT_HEAD 512

struct img_format_probe {
    unsigned char head[IMG_FORMAT_HEAD];
    size_t len;
};

/* Keeps whatever part of 'data' falls in the first IMG_FORMAT_HEAD bytes. */
void img_format_feed(struct img_format_probe *p, const void *data, size_t len);

/* Checks the upload ('size' bytes in all) against 'disk_format'.  On
 * success returns 0 and sets '*virtual_size' (-1 when unknown).  Returns
 * -EINVAL with '*why' (a static sentence) for data that must be refused. */
int img_format_check(const struct img_format_probe *p, const char *disk_format,
                     uint64_t size, int64_t *virtual_size, const char **why)
    __attribute__((warn_unused_result));

#endif
