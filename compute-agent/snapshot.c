#include "snapshot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#ifdef NIMBUS_HAVE_CURL
#include <curl/curl.h>
#include "image_fetch_http.h"
#endif
#include "proc.h"
#include "strbuf.h"

/* Largest disk a flavor may ask for (bytes), far above any real flavor. */
#define SNAP_MAX_DISK_GB 65536u

struct snap {
    struct storage *st;
    char *image_url;
    char *node_token;
    struct img_http *auth;
};

int
snap_new(const struct snap_config *cfg, struct storage *st, struct snap **out)
{
    struct snap *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->st = st;
    s->auth = cfg->auth;
    if ((cfg->image_url && !(s->image_url = strdup(cfg->image_url))) ||
        (cfg->node_token && !(s->node_token = strdup(cfg->node_token)))) {
        snap_free(s);
        return -ENOMEM;
    }
    /* Without a trailing slash: paths are appended. */
    if (s->image_url) {
        size_t n = strlen(s->image_url);
        while (n && s->image_url[n - 1] == '/')
            s->image_url[--n] = 0;
    }
    *out = s;
    return 0;
}

void
snap_free(struct snap *s)
{
    if (!s)
        return;
    free(s->image_url);
    if (s->node_token) {
        memset(s->node_token, 0, strlen(s->node_token));
        free(s->node_token);
    }
    free(s);
}

void
snap_attach(struct snap *s, struct rc_storage *rs)
{
    rs->grow = snap_grow;
    rs->snapshot = snap_copy;
    rs->upload = snap_upload;
    rs->wipe = snap_wipe;
    rs->action_ctx = s;
}

/* <instance dir>/<name> into 'out'; -EINVAL for an odd uuid. */
static int
inst_file(struct snap *s, const char *uuid, const char *name, char out[PATH_MAX])
{
    if (strlen(uuid) != 36 || strspn(uuid, "0123456789abcdefABCDEF-") != 36)
        return -EINVAL;
    char dir[PATH_MAX];
    storage_inst_dir(s->st, uuid, dir);
    bfmt(out, PATH_MAX, "%s/%s", dir, name);
    return 0;
}

static int
virtual_size(const char *path, uint64_t *out, char *err, size_t errlen)
{
    char buf[8192];
    const char *argv[] = { "qemu-img", "info", "--output=json", "-U", "-f", "qcow2",
                           path, NULL };
    int r = proc_run(argv, buf, sizeof buf, err, errlen);
    if (r)
        return r;
    json_t *j = json_loads(buf, 0, NULL);
    json_t *v = json_object_get(j, "virtual-size");
    r = json_is_integer(v) ? 0 : -EINVAL;
    if (!r)
        *out = (uint64_t)json_integer_value(v);
    else
        bfmt(err, errlen, "qemu-img info %s: no virtual size", path);
    json_decref(j);
    return r;
}

int
snap_grow(void *ctx, const struct inst_desired *d, char *err, size_t errlen)
{
    struct snap *s = ctx;
    char disk[PATH_MAX];
    struct stat st;
    if (inst_file(s, d->uuid, "disk.qcow2", disk) < 0) {
        bfmt(err, errlen, "invalid uuid '%s'", d->uuid);
        return -EINVAL;
    }
    if (stat(disk, &st) < 0)
        return 0;   /* No disk (a container, or not created yet): nothing to grow. */
    if (d->disk_gb > SNAP_MAX_DISK_GB) {
        bfmt(err, errlen, "disk of %u GiB refused", d->disk_gb);
        return -E2BIG;
    }
    uint64_t have = 0, want = (uint64_t)d->disk_gb << 30;
    int r = virtual_size(disk, &have, err, errlen);
    if (r || have >= want)
        return r;   /* Never shrunk: a disk keeps its data. */
    char sz[32];
    bfmt(sz, sizeof sz, "%llu", (unsigned long long)want);
    const char *argv[] = { "qemu-img", "resize", "-q", "-f", "qcow2", disk, sz, NULL };
    return proc_run(argv, NULL, 0, err, errlen);
}

int
snap_copy(void *ctx, const struct inst_desired *d, char *err, size_t errlen)
{
    struct snap *s = ctx;
    char disk[PATH_MAX], tmp[PATH_MAX], out[PATH_MAX];
    struct stat st;
    if (inst_file(s, d->uuid, "disk.qcow2", disk) < 0 ||
        inst_file(s, d->uuid, "snapshot.qcow2.tmp", tmp) < 0 ||
        inst_file(s, d->uuid, "snapshot.qcow2", out) < 0) {
        bfmt(err, errlen, "invalid uuid '%s'", d->uuid);
        return -EINVAL;
    }
    if (stat(disk, &st) < 0) {
        bfmt(err, errlen, "instance %s has no disk to snapshot (containers cannot be "
             "snapshotted)", d->uuid);
        return -ENOTSUP;
    }
    unlink(tmp);
    /* -U: the running (paused) guest's QEMU holds the image's lock. */
    const char *argv[] = { "qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2",
                           disk, tmp, NULL };
    int r = proc_run(argv, NULL, 0, err, errlen);
    if (!r && rename(tmp, out) < 0) {
        r = -errno;
        bfmt(err, errlen, "%s: %s", out, strerror(-r));
    }
    if (r)
        unlink(tmp);
    return r;
}

#ifdef NIMBUS_HAVE_CURL
static size_t
discard(char *buf, size_t size, size_t n, void *ud)
{
    (void)buf;
    (void)ud;
    return size * n;
}

/* PUT of 'path' with one authentication header; the HTTP status, or -1
 * with 'err' when the request could not be made. */
static long
put_file(const char *url, const char *path, const char *auth, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rbe");
    if (!f) {
        bfmt(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) < 0) {
        fclose(f);
        return -1;
    }
    CURL *c = curl_easy_init();
    if (!c) {
        fclose(f);
        bfmt(err, errlen, "curl_easy_init failed");
        return -1;
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/octet-stream");
    h = curl_slist_append(h, auth);
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READDATA, f);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    CURLcode rc = curl_easy_perform(c);
    long status = -1;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else
        bfmt(err, errlen, "PUT %s: %s", url, curl_easy_strerror(rc));
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    fclose(f);
    return status;
}
#endif

int
snap_upload(void *ctx, const struct inst_desired *d, char *err, size_t errlen)
{
    struct snap *s = ctx;
    char path[PATH_MAX];
    if (inst_file(s, d->uuid, "snapshot.qcow2", path) < 0 || !d->snapshot_image[0]) {
        bfmt(err, errlen, "no snapshot image for '%s'", d->uuid);
        return -EINVAL;
    }
#ifdef NIMBUS_HAVE_CURL
    if (!s->image_url) {
        bfmt(err, errlen, "no image service configured ([agent] image_url)");
        return -ENOTSUP;
    }
    char url[PATH_MAX + 128];
    bfmt(url, sizeof url, "%s/v2/images/%s/file", s->image_url, d->snapshot_image);
    for (int attempt = 0; attempt < 2; attempt++) {
        char auth[2048];
        if (s->auth) {
            int r = img_http_auth_header(s->auth, auth, sizeof auth, err, errlen);
            if (r)
                return r;
        } else if (s->node_token) {
            bfmt(auth, sizeof auth, "Authorization: Bearer %s", s->node_token);
        } else {
            bfmt(err, errlen, "no credential for the image service");
            return -EACCES;
        }
        long status = put_file(url, path, auth, err, errlen);
        if (status == 204 || status == 200 || status == 201 || status == 409) {
            /* 409: the image is no longer queued, i.e. an earlier attempt
             * whose answer was lost already uploaded it. */
            unlink(path);
            return 0;
        }
        if (status == 401 && s->auth) {
            img_http_auth_failed(s->auth, auth);
            continue;
        }
        if (status >= 0)
            bfmt(err, errlen, "upload of snapshot %s: PUT answered %ld", d->snapshot_image,
                 status);
        return status == 404 ? -ENOENT : status == 401 || status == 403 ? -EACCES : -EIO;
    }
    return -EACCES;
#else
    bfmt(err, errlen, "built without libcurl: no snapshot uploads");
    return -ENOTSUP;
#endif
}

int
snap_wipe(void *ctx, const struct inst_desired *d, char *err, size_t errlen)
{
    struct snap *s = ctx;
    char disk[PATH_MAX], tmp[PATH_MAX];
    if (inst_file(s, d->uuid, "disk.qcow2", disk) < 0 ||
        inst_file(s, d->uuid, "disk.qcow2.tmp", tmp) < 0) {
        bfmt(err, errlen, "invalid uuid '%s'", d->uuid);
        return -EINVAL;
    }
    if ((unlink(disk) < 0 && errno != ENOENT) || (unlink(tmp) < 0 && errno != ENOENT)) {
        int r = -errno;
        bfmt(err, errlen, "%s: %s", disk, strerror(-r));
        return r;
    }
    return 0;
}
