/* An image fetcher (struct img_fetcher) that downloads base images from
 * nimbus-image: GET <image_url>/v2/images/{id}/file.
 *
 * Interim authentication: nimbus-image accepts user tokens only, so the
 * fetcher gets a project-scoped Keystone token with a password from the
 * agent's configuration ([agent] image_username, image_password,
 * image_project) and keeps it for reuse, asking for a new one after 30
 * minutes or after a 401.  The lasting design (node credentials accepted by
 * nimbus-image for the images of the node's instances, or a short-lived
 * token in the desired state) is in docs/agent-channel.md. */
#ifndef NIMBUS_AGENT_IMAGE_FETCH_HTTP_H
#define NIMBUS_AGENT_IMAGE_FETCH_HTTP_H

#include <stddef.h>

#include "instance.h"

struct img_http_config {
    const char *image_url;     /* e.g. http://127.0.0.1:9292 (no /v2). */
    const char *auth_url;      /* Keystone v3 base, e.g. http://127.0.0.1:5000/v3. */
    const char *username;
    const char *password;
    const char *project;
    const char *domain;        /* User and project domain name ("Default"). */
};

struct img_http;

/* Copies 'cfg'.  Returns 0 or -ENOMEM / -EINVAL (missing URL or user). The
 * caller owns *out and frees it with img_http_free(). */
int img_http_new(const struct img_http_config *cfg, struct img_http **out)
    __attribute__((warn_unused_result));
void img_http_free(struct img_http *h);

/* The img_fetcher function ('ctx' is a struct img_http).  Safe to call from
 * several threads at once.  Writes the image to 'dest'; a body longer than
 * img->size (when known) is refused.  Returns 0 or -errno with 'err'. */
int img_fetch_http(void *ctx, const struct inst_image *img, const char *dest,
                   char *err, size_t errlen);

/* The authentication header of the fetcher's token ("X-Auth-Token: ..."),
 * asking Keystone for one when needed, for other calls to nimbus-image
 * (snapshot uploads).  Returns 0 or -errno with 'err'. */
int img_http_auth_header(struct img_http *h, char *out, size_t len, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* The header from img_http_auth_header() was refused (401): forget it. */
void img_http_auth_failed(struct img_http *h, const char *header);

#endif
