#include "image_fetch_http.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "strbuf.h"

/* Longest node credential sent (nimbus-manage makes 64 characters). */
#define HTTP_CRED_MAX 256
/* Cap on an image of unknown size. */
#define HTTP_IMAGE_MAX ((curl_off_t)256 << 30)

struct img_http {
    char *image_url;
    char auth[HTTP_CRED_MAX + 32];    /* "Authorization: Bearer <credential>". */
};

int
img_http_new(const struct img_http_config *cfg, struct img_http **out)
{
    if (!cfg->image_url || !cfg->image_url[0] || !cfg->node_token || !cfg->node_token[0])
        return -EINVAL;
    if (strlen(cfg->node_token) > HTTP_CRED_MAX || strpbrk(cfg->node_token, "\r\n"))
        return -EINVAL;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct img_http *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->image_url = strdup(cfg->image_url);
    if (!h->image_url) {
        img_http_free(h);
        return -ENOMEM;
    }
    size_t n = strlen(h->image_url);
    while (n && h->image_url[n - 1] == '/')
        h->image_url[--n] = 0;
    bfmt(h->auth, sizeof h->auth, "Authorization: Bearer %s", cfg->node_token);
    *out = h;
    return 0;
}

void
img_http_free(struct img_http *h)
{
    if (!h)
        return;
    free(h->image_url);
    explicit_bzero(h->auth, sizeof h->auth);
    free(h);
}

/* ---- Download. */

struct sink {
    int fd;
    curl_off_t written, max;
    int error;
};

static size_t
on_data(char *buf, size_t size, size_t n, void *ud)
{
    struct sink *s = ud;
    size_t len = size * n;
    if (s->written + (curl_off_t)len > s->max) {
        s->error = EFBIG;
        return 0;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(s->fd, buf + off, len - off);
        if (w < 0) {
            s->error = errno;
            return 0;
        }
        off += (size_t)w;
    }
    s->written += (curl_off_t)len;
    return len;
}

/* One GET; returns the HTTP status or -1 (with 'err') when there was none. */
static long
download(struct img_http *h, const struct inst_image *img, const char *dest,
         char *err, size_t errlen)
{
    int fd = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        bfmt(err, errlen, "%s: %s", dest, strerror(errno));
        return -1;
    }
    char url[1024];
    bfmt(url, sizeof url, "%s/v2/images/%s/file", h->image_url, img->id);
    struct sink s = { .fd = fd, .max = img->size ? (curl_off_t)img->size : HTTP_IMAGE_MAX };
    CURL *c = curl_easy_init();
    struct curl_slist *hdr = curl_slist_append(NULL, h->auth);
    long status = -1;
    CURLcode rc = CURLE_FAILED_INIT;
    if (c && hdr) {
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
        /* A stalled transfer (under 1 KiB/s for a minute) is abandoned. */
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_FAILONERROR, 0L);
        rc = curl_easy_perform(c);
        if (rc == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    bool closed = close(fd) == 0;
    if (s.error) {
        bfmt(err, errlen, "image %s: %s", img->id,
             s.error == EFBIG ? "larger than its recorded size" : strerror(s.error));
        return -1;
    }
    if (rc != CURLE_OK || !closed) {
        bfmt(err, errlen, "image %s: GET %s: %s", img->id, url,
             rc != CURLE_OK ? curl_easy_strerror(rc) : "close failed");
        return -1;
    }
    if (status != 200)
        bfmt(err, errlen, "image %s: GET %s answered %ld", img->id, url, status);
    return status;
}

int
img_fetch_http(void *ctx, const struct inst_image *img, const char *dest,
               char *err, size_t errlen)
{
    struct img_http *h = ctx;
    long status = download(h, img, dest, err, errlen);
    if (status == 200)
        return 0;
    unlink(dest);
    if (status == 401 || status == 403)
        return -EACCES;
    return status == 404 ? -ENOENT : -EIO;
}

int
img_http_auth_header(struct img_http *h, char *out, size_t len, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    bfmt(out, len, "%s", h->auth);
    return 0;
}

void
img_http_auth_failed(struct img_http *h, const char *header)
{
    /* A node credential is not renewed by the agent: a refusal means it was
     * revoked or rotated, which the operator fixes. */
    (void)h;
    (void)header;
}
