#include "image_fetch_http.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "strbuf.h"

/* Longest token accepted from Keystone, and the reuse period of one. */
#define HTTP_TOKEN_MAX 1024
#define HTTP_TOKEN_REUSE_S (30 * 60)
/* Cap on an image of unknown size. */
#define HTTP_IMAGE_MAX ((curl_off_t)256 << 30)

struct img_http {
    char *image_url, *auth_url, *username, *password, *project, *domain;
    pthread_mutex_t mu;
    char token[HTTP_TOKEN_MAX + 1];   /* "" when none. */
    time_t token_time;
};

static char *
dup_trim(const char *s)
{
    char *d = strdup(s ? s : "");
    size_t n = d ? strlen(d) : 0;
    while (n && d[n - 1] == '/')
        d[--n] = 0;
    return d;
}

int
img_http_new(const struct img_http_config *cfg, struct img_http **out)
{
    if (!cfg->image_url || !cfg->image_url[0] || !cfg->auth_url || !cfg->auth_url[0] ||
        !cfg->username || !cfg->username[0])
        return -EINVAL;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct img_http *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->image_url = dup_trim(cfg->image_url);
    h->auth_url = dup_trim(cfg->auth_url);
    h->username = dup_trim(cfg->username);
    h->password = strdup(cfg->password ? cfg->password : "");
    h->project = strdup(cfg->project && cfg->project[0] ? cfg->project : "admin");
    h->domain = strdup(cfg->domain && cfg->domain[0] ? cfg->domain : "Default");
    pthread_mutex_init(&h->mu, NULL);
    if (!h->image_url || !h->auth_url || !h->username || !h->password || !h->project ||
        !h->domain) {
        img_http_free(h);
        return -ENOMEM;
    }
    *out = h;
    return 0;
}

void
img_http_free(struct img_http *h)
{
    if (!h)
        return;
    free(h->image_url);
    free(h->auth_url);
    free(h->username);
    free(h->password);
    free(h->project);
    free(h->domain);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* ---- Keystone token. */

struct token_hdr {
    char token[HTTP_TOKEN_MAX + 1];
};

static size_t
on_header(char *buf, size_t size, size_t n, void *ud)
{
    struct token_hdr *t = ud;
    size_t len = size * n;
    static const char name[] = "X-Subject-Token:";
    if (len > sizeof name - 1 && !strncasecmp(buf, name, sizeof name - 1)) {
        const char *v = buf + sizeof name - 1;
        size_t vl = len - (sizeof name - 1);
        while (vl && (*v == ' ' || *v == '\t')) {
            v++;
            vl--;
        }
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        if (vl && vl <= HTTP_TOKEN_MAX) {
            memcpy(t->token, v, vl);
            t->token[vl] = 0;
        }
    }
    return len;
}

static size_t
discard(char *buf, size_t size, size_t n, void *ud)
{
    (void)buf;
    (void)ud;
    return size * n;
}

/* Asks Keystone for a token into h->token (called with h->mu held). */
static int
get_token(struct img_http *h, char *err, size_t errlen)
{
    json_t *body = json_pack("{s:{s:{s:[s], s:{s:{s:s, s:s, s:{s:s}}}}, s:{s:{s:s, s:{s:s}}}}}",
        "auth", "identity", "methods", "password", "password", "user", "name", h->username,
        "password", h->password, "domain", "name", h->domain,
        "scope", "project", "name", h->project, "domain", "name", h->domain);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        bfmt(err, errlen, "image fetch: out of memory");
        return -ENOMEM;
    }
    char url[1024];
    bfmt(url, sizeof url, "%s/auth/tokens", h->auth_url);
    CURL *c = curl_easy_init();
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    struct token_hdr t = { .token = "" };
    long status = 0;
    CURLcode rc = CURLE_FAILED_INIT;
    if (c && hdr) {
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    free(text);
    if (rc != CURLE_OK || status != 201 || !t.token[0]) {
        bfmt(err, errlen, "image fetch: token from %s: %s", url,
             rc != CURLE_OK ? curl_easy_strerror(rc) : status != 201 ? "refused" : "no token");
        return -EACCES;
    }
    memcpy(h->token, t.token, sizeof h->token);
    h->token_time = time(NULL);
    return 0;
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
download(struct img_http *h, const char *token, const struct inst_image *img,
         const char *dest, char *err, size_t errlen)
{
    int fd = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        bfmt(err, errlen, "%s: %s", dest, strerror(errno));
        return -1;
    }
    char url[1024], auth[HTTP_TOKEN_MAX + 32];
    bfmt(url, sizeof url, "%s/v2/images/%s/file", h->image_url, img->id);
    bfmt(auth, sizeof auth, "X-Auth-Token: %s", token);
    struct sink s = { .fd = fd, .max = img->size ? (curl_off_t)img->size : HTTP_IMAGE_MAX };
    CURL *c = curl_easy_init();
    struct curl_slist *hdr = curl_slist_append(NULL, auth);
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
    for (int attempt = 0; attempt < 2; attempt++) {
        char token[HTTP_TOKEN_MAX + 1];
        pthread_mutex_lock(&h->mu);
        int r = 0;
        if (!h->token[0] || time(NULL) - h->token_time > HTTP_TOKEN_REUSE_S)
            r = get_token(h, err, errlen);
        memcpy(token, h->token, sizeof token);
        pthread_mutex_unlock(&h->mu);
        if (r)
            return r;
        long status = download(h, token, img, dest, err, errlen);
        if (status == 200)
            return 0;
        if (status == 401) {
            /* Expired or revoked: forget it (unless another thread already
             * replaced it) and try once more with a new one. */
            pthread_mutex_lock(&h->mu);
            if (!strcmp(h->token, token))
                h->token[0] = 0;
            pthread_mutex_unlock(&h->mu);
            continue;
        }
        unlink(dest);
        return status == 404 ? -ENOENT : -EIO;
    }
    unlink(dest);
    return -EACCES;
}

int
img_http_auth_header(struct img_http *h, char *out, size_t len, char *err, size_t errlen)
{
    pthread_mutex_lock(&h->mu);
    int r = 0;
    if (!h->token[0] || time(NULL) - h->token_time > HTTP_TOKEN_REUSE_S)
        r = get_token(h, err, errlen);
    if (!r)
        bfmt(out, len, "X-Auth-Token: %s", h->token);
    pthread_mutex_unlock(&h->mu);
    return r;
}

void
img_http_auth_failed(struct img_http *h, const char *header)
{
    pthread_mutex_lock(&h->mu);
    if (!strncmp(header, "X-Auth-Token: ", 14) && !strcmp(h->token, header + 14))
        h->token[0] = 0;
    pthread_mutex_unlock(&h->mu);
}
