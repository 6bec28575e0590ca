/* An image fetcher (struct img_fetcher) that downloads base images from
 * nimbus-image: GET <image_url>/v2/images/{id}/file.
 *
 * The agent authenticates with its node credential (the one it speaks the
 * agent channel with, `nimbus-manage node add`) as "Authorization: Bearer";
 * nimbus-image lets a node read the active images of the instances
 * scheduled to it (docs/image.md). */
#ifndef NIMBUS_AGENT_IMAGE_FETCH_HTTP_H
#define NIMBUS_AGENT_IMAGE_FETCH_HTTP_H

#include <stddef.h>

#include "instance.h"

struct img_http_config {
    const char *image_url;     /* e.g. http://127.0.0.1:9292 (no /v2). */
    const char *node_token;    /* The node credential (one line). */
};

struct img_http;

/* Copies 'cfg'.  Returns 0 or -ENOMEM / -EINVAL (missing URL or credential). The
 * caller owns *out and frees it with img_http_free(). */
int img_http_new(const struct img_http_config *cfg, struct img_http **out)
    __attribute__((warn_unused_result));
void img_http_free(struct img_http *h);

/* The img_fetcher function ('ctx' is a struct img_http).  Safe to call from
 * several threads at once.  Writes the image to 'dest'; a body longer than
 * img->size (when known) is refused.  Returns 0 or -errno with 'err'. */
int img_fetch_http(void *ctx, const struct inst_image *img, const char *dest,
                   char *err, size_t errlen);

/* The authentication header of the fetcher ("Authorization: Bearer <node
 * credential>") for other calls to nimbus-image (snapshot uploads).
 * Returns 0 or -errno with 'err'. */
int img_http_auth_header(struct img_http *h, char *out, size_t len, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* The header from img_http_auth_header() was refused (401): forget it. */
void img_http_auth_failed(struct img_http *h, const char *header);

#endif
