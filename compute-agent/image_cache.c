#include "image_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "proc.h"
#include "qcow2.h"
#include "strbuf.h"

/* A file verified once is trusted while its size and mtime stay the same;
 * anything that rewrites it (corruption by a person or a test) changes
 * them. */
struct verified {
    char id[64];
    off_t size;
    struct timespec mtime;
};

/* An image some thread is fetching (or unpacking): others wanting the same
 * one wait for it instead of writing the same temporary file. */
struct claim {
    char key[72];
    struct claim *next;
};

struct img_cache {
    char dir[PATH_MAX - 128];
    struct img_fetcher fetcher;
    pthread_mutex_t mu;           /* Stats, the verified memo and the claims. */
    pthread_cond_t released;      /* A claim was released. */
    struct claim *claims;
    struct verified *ver;
    size_t n_ver, cap_ver;
    struct img_cache_stats st;
};

/* Image ids become file names: only [A-Za-z0-9._-], not starting with '.'. */
static bool
id_ok(const char *id)
{
    if (!id[0] || id[0] == '.')
        return false;
    for (const char *p = id; *p; p++)
        if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') ||
              ('0' <= *p && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
            return false;
    return true;
}

static int
mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    bfmt(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
                return -errno;
            *p = '/';
        }
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int
img_fetch_dir(void *dir, const struct inst_image *img, const char *dest,
              char *err, size_t errlen)
{
    char src[PATH_MAX];
    bfmt(src, sizeof src, "%s/%s", (const char *)dir, img->id);
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        int e = errno;
        bfmt(err, errlen, "image %s: %s: %s", img->id, src, strerror(e));
        return -e;
    }
    int out = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        int e = errno;
        close(in);
        bfmt(err, errlen, "%s: %s", dest, strerror(e));
        return -e;
    }
    char buf[1 << 16];
    ssize_t n;
    int r = 0;
    while ((n = read(in, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0) {
                r = -errno;
                break;
            }
            off += w;
        }
        if (r)
            break;
    }
    if (n < 0)
        r = -errno;
    if (close(out) < 0 && !r)
        r = -errno;
    close(in);
    if (r)
        bfmt(err, errlen, "copying %s: %s", src, strerror(-r));
    return r;
}

int
img_cache_new(const char *dir, struct img_fetcher fetcher, struct img_cache **out)
{
    struct img_cache *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    bfmt(c->dir, sizeof c->dir, "%s", dir);
    c->fetcher = fetcher;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->released, NULL);
    char p[PATH_MAX];
    int r = mkdir_p(dir);
    bfmt(p, sizeof p, "%s/base", dir);
    if (!r)
        r = mkdir_p(p);
    bfmt(p, sizeof p, "%s/layers", dir);
    if (!r)
        r = mkdir_p(p);
    if (r) {
        img_cache_free(c);
        return r;
    }
    *out = c;
    return 0;
}

void
img_cache_free(struct img_cache *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->released);
    free(c->ver);
    free(c);
}

void
img_cache_stats(const struct img_cache *c, struct img_cache_stats *out)
{
    pthread_mutex_lock((pthread_mutex_t *)&c->mu);
    *out = c->st;
    pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
}

int
img_sha512_file(const char *path, char hex[129])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha512(), NULL)) {
        EVP_MD_CTX_free(ctx);
        close(fd);
        return -ENOMEM;
    }
    unsigned char buf[1 << 16];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        EVP_DigestUpdate(ctx, buf, (size_t)n);
    int r = n < 0 ? -errno : 0;
    close(fd);
    unsigned char md[64];
    unsigned mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    for (unsigned i = 0; i < 64; i++)
        bfmt(hex + 2 * i, 3, "%02x", md[i]);
    return r;
}

static bool
memo_ok(struct img_cache *c, const char *id, const struct stat *st)
{
    bool ok = false;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n_ver; i++)
        if (!strcmp(c->ver[i].id, id)) {
            ok = c->ver[i].size == st->st_size &&
                 c->ver[i].mtime.tv_sec == st->st_mtim.tv_sec &&
                 c->ver[i].mtime.tv_nsec == st->st_mtim.tv_nsec;
            break;
        }
    pthread_mutex_unlock(&c->mu);
    return ok;
}

static void
memo_set(struct img_cache *c, const char *id, const struct stat *st)
{
    pthread_mutex_lock(&c->mu);
    struct verified *v = NULL;
    for (size_t i = 0; i < c->n_ver; i++)
        if (!strcmp(c->ver[i].id, id))
            v = &c->ver[i];
    if (!v) {
        if (c->n_ver == c->cap_ver) {
            size_t cap = c->cap_ver ? c->cap_ver * 2 : 16;
            struct verified *nv = realloc(c->ver, cap * sizeof *nv);
            if (!nv) {
                pthread_mutex_unlock(&c->mu);
                return;
            }
            c->ver = nv;
            c->cap_ver = cap;
        }
        v = &c->ver[c->n_ver++];
        bfmt(v->id, sizeof v->id, "%s", id);
    }
    v->size = st->st_size;
    v->mtime = st->st_mtim;
    pthread_mutex_unlock(&c->mu);
}

static void
count(struct img_cache *c, uint64_t *field)
{
    pthread_mutex_lock(&c->mu);
    (*field)++;
    pthread_mutex_unlock(&c->mu);
}

/* Claims 'kind'/'id' for the calling thread ('cl' is the caller's, until
 * release()), after waiting for the thread that holds it, if any, to
 * release it: the file may be there then, the caller looks again. */
static void
claim(struct img_cache *c, const char *kind, const char *id, struct claim *cl)
{
    bfmt(cl->key, sizeof cl->key, "%s/%s", kind, id);
    pthread_mutex_lock(&c->mu);
    for (;;) {
        struct claim *o = c->claims;
        while (o && strcmp(o->key, cl->key))
            o = o->next;
        if (!o)
            break;
        pthread_cond_wait(&c->released, &c->mu);
    }
    cl->next = c->claims;
    c->claims = cl;
    pthread_mutex_unlock(&c->mu);
}

static void
release(struct img_cache *c, struct claim *cl)
{
    pthread_mutex_lock(&c->mu);
    for (struct claim **p = &c->claims; *p; p = &(*p)->next)
        if (*p == cl) {
            *p = cl->next;
            break;
        }
    pthread_cond_broadcast(&c->released);
    pthread_mutex_unlock(&c->mu);
}

static void
touch_used(const char *base)
{
    char p[PATH_MAX];
    bfmt(p, sizeof p, "%s.used", base);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        futimens(fd, NULL);
        close(fd);
    }
}

/* Checks a cached file against its expected hash (no hash: trusted). */
static int
verify(struct img_cache *c, const struct inst_image *img, const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    if (!img->sha512[0] || memo_ok(c, img->id, &st))
        return 0;
    char hex[129];
    int r = img_sha512_file(path, hex);
    if (r)
        return r;
    if (strcasecmp(hex, img->sha512))
        return -EBADMSG;
    memo_set(c, img->id, &st);
    return 0;
}

static int fetch_base(struct img_cache *c, const struct inst_image *img, const char *path,
                      char *err, size_t errlen);

int
img_cache_base(struct img_cache *c, const struct inst_image *img,
               char path[PATH_MAX], char *err, size_t errlen)
{
    if (!id_ok(img->id)) {
        bfmt(err, errlen, "invalid image id '%s'", img->id);
        return -EINVAL;
    }
    bfmt(path, PATH_MAX, "%s/base/%s", c->dir, img->id);
    int r = verify(c, img, path);
    if (r == 0) {
        count(c, &c->st.hits);
        touch_used(path);
        return 0;
    }
    /* Fetched by one thread at a time; another wanting it meanwhile
     * waits, then finds it (or fetches it itself if that failed). */
    struct claim cl;
    claim(c, "base", img->id, &cl);
    r = fetch_base(c, img, path, err, errlen);
    release(c, &cl);
    return r;
}

/* img_cache_base() with the image's claim held: checks again (another
 * thread may have fetched it), else fetches it. */
static int
fetch_base(struct img_cache *c, const struct inst_image *img, const char *path,
           char *err, size_t errlen)
{
    int r = verify(c, img, path);
    if (r == 0) {
        count(c, &c->st.hits);
        touch_used(path);
        return 0;
    }
    if (r == -EBADMSG) {
        /* Corrupted in the cache: drop it and fetch again. */
        count(c, &c->st.hash_failures);
        unlink(path);
    } else if (r != -ENOENT) {
        bfmt(err, errlen, "image %s: %s: %s", img->id, path, strerror(-r));
        return r;
    }

    char tmp[PATH_MAX];
    bfmt(tmp, sizeof tmp, "%s/base/.%s.part", c->dir, img->id);
    unlink(tmp);
    r = c->fetcher.fetch(c->fetcher.ctx, img, tmp, err, errlen);
    if (r) {
        unlink(tmp);
        return r;
    }
    count(c, &c->st.fetches);
    if (img->sha512[0]) {
        char hex[129];
        r = img_sha512_file(tmp, hex);
        if (!r && strcasecmp(hex, img->sha512)) {
            count(c, &c->st.hash_failures);
            bfmt(err, errlen, "image %s: sha512 mismatch after download (got %.16s..., want %.16s...)",
                     img->id, hex, img->sha512);
            r = -EBADMSG;
        }
        if (r) {
            if (r != -EBADMSG)
                bfmt(err, errlen, "image %s: hashing: %s", img->id, strerror(-r));
            unlink(tmp);
            return r;
        }
    }
    if (chmod(tmp, 0444) < 0 || rename(tmp, path) < 0) {
        r = -errno;
        bfmt(err, errlen, "image %s: storing %s: %s", img->id, path, strerror(-r));
        unlink(tmp);
        return r;
    }
    struct stat st;
    if (img->sha512[0] && stat(path, &st) == 0)
        memo_set(c, img->id, &st);
    touch_used(path);
    return 0;
}

/* The backing file and virtual size of a qcow2 overlay, from qemu-img info. */
int
img_cache_overlay(struct img_cache *c, const char *base, const char *base_fmt,
                  const char *overlay, unsigned size_gb, char *err, size_t errlen)
{
    char backing[PATH_MAX];
    uint64_t vsize = 0, want = (uint64_t)size_gb << 30;
    struct stat st;

    if (stat(overlay, &st) == 0 &&
        qcow2_info(overlay, backing, sizeof backing, &vsize) == 0 &&
        !strcmp(backing, base) && (vsize >= want))
        return 0;   /* Already there (a restart after a crash). */

    /* Never smaller than the base; both read from headers, and the
     * overlay written directly (qcow2.h), so that a create starts no
     * qemu-img. */
    uint64_t base_size = 0;
    int r = qcow2_virtual_size(base, base_fmt, &base_size);
    if (r) {
        bfmt(err, errlen, "base %s (%s): %s", base, base_fmt,
             r == -EINVAL ? "not an image of that format" : strerror(-r));
        return r;
    }
    if (want < base_size)
        want = base_size;
    char tmp[PATH_MAX];
    bfmt(tmp, sizeof tmp, "%s.tmp", overlay);
    unlink(tmp);
    if ((r = qcow2_create_overlay(tmp, base, base_fmt, want, err, errlen)))
        return r;
    if (rename(tmp, overlay) < 0) {
        r = -errno;
        bfmt(err, errlen, "overlay %s: %s", overlay, strerror(-r));
        unlink(tmp);
        return r;
    }
    count(c, &c->st.overlays_created);
    return 0;
}

/* Applies an OCI image layout unpacked in 'layout' (index.json, blobs/) to
 * 'root': the first manifest's layers, in order. */
static int
apply_oci_layout(const char *layout, const char *root, char *err, size_t errlen)
{
    char p[PATH_MAX];
    bfmt(p, sizeof p, "%s/index.json", layout);
    json_t *idx = json_load_file(p, 0, NULL);
    json_t *m = json_array_get(json_object_get(idx, "manifests"), 0);
    const char *digest = json_string_value(json_object_get(m, "digest"));
    int r = 0;
    json_t *man = NULL;
    if (!digest || strncmp(digest, "sha256:", 7)) {
        bfmt(err, errlen, "OCI layout without a manifest");
        r = -EINVAL;
        goto out;
    }
    bfmt(p, sizeof p, "%s/blobs/sha256/%s", layout, digest + 7);
    man = json_load_file(p, 0, NULL);
    json_t *layers = json_object_get(man, "layers");
    if (!json_is_array(layers)) {
        bfmt(err, errlen, "OCI manifest without layers");
        r = -EINVAL;
        goto out;
    }
    size_t i;
    json_t *l;
    json_array_foreach(layers, i, l) {
        const char *d = json_string_value(json_object_get(l, "digest"));
        if (!d || strncmp(d, "sha256:", 7) || strchr(d + 7, '/')) {
            bfmt(err, errlen, "OCI layer without a sha256 digest");
            r = -EINVAL;
            goto out;
        }
        bfmt(p, sizeof p, "%s/blobs/sha256/%s", layout, d + 7);
        const char *argv[] = { "tar", "-xf", p, "-C", (char *)root, "--no-same-owner", NULL };
        if ((r = proc_run(argv, NULL, 0, err, errlen)))
            goto out;
    }
out:
    json_decref(man);
    json_decref(idx);
    return r;
}

static void
rm_rf(const char *path)
{
    const char *argv[] = { "rm", "-rf", "--one-file-system", (char *)path, NULL };
    char e[64];
    if (proc_run(argv, NULL, 0, e, sizeof e)) {
        /* Nothing more to do: the next clean or unpack tries again. */
    }
}

static int unpack_layer(struct img_cache *c, const struct inst_image *img, const char *base,
                        const char *final, char *err, size_t errlen);

int
img_cache_layer(struct img_cache *c, const struct inst_image *img,
                char path[PATH_MAX], char *err, size_t errlen)
{
    char base[PATH_MAX];
    int r = img_cache_base(c, img, base, err, errlen);
    if (r)
        return r;
    char final[PATH_MAX];
    bfmt(final, sizeof final, "%s/layers/%s", c->dir, img->id);
    bfmt(path, PATH_MAX, "%s/rootfs", final);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    /* Unpacked by one thread at a time, like fetches. */
    struct claim cl;
    claim(c, "layer", img->id, &cl);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        r = 0;
    else
        r = unpack_layer(c, img, base, final, err, errlen);
    release(c, &cl);
    return r;
}

/* Unpacks cached base 'base' of image 'img' into directory 'final', with
 * the layer's claim held. */
static int
unpack_layer(struct img_cache *c, const struct inst_image *img, const char *base,
             const char *final, char *err, size_t errlen)
{
    int r;
    char tmp[PATH_MAX], root[PATH_MAX], probe[PATH_MAX];
    bfmt(tmp, sizeof tmp, "%s/layers/.%s.tmp", c->dir, img->id);
    rm_rf(tmp);
    bfmt(root, sizeof root, "%s/rootfs", tmp);
    if ((r = mkdir_p(root))) {
        bfmt(err, errlen, "%s: %s", root, strerror(-r));
        return r;
    }
    /* A plain rootfs tarball, or a tarball of an OCI image layout. */
    const char *argv[] = { "tar", "-xf", base, "-C", root, "--numeric-owner", NULL };
    if ((r = proc_run(argv, NULL, 0, err, errlen)))
        goto fail;
    bfmt(probe, sizeof probe, "%s/oci-layout", root);
    if (access(probe, F_OK) == 0) {
        char layout[PATH_MAX];
        bfmt(layout, sizeof layout, "%s/layout", tmp);
        if (rename(root, layout) < 0 || mkdir(root, 0755) < 0) {
            r = -errno;
            bfmt(err, errlen, "%s: %s", root, strerror(-r));
            goto fail;
        }
        if ((r = apply_oci_layout(layout, root, err, errlen)))
            goto fail;
        rm_rf(layout);
    }
    if (rename(tmp, final) < 0) {
        r = -errno;
        bfmt(err, errlen, "%s: %s", final, strerror(-r));
        goto fail;
    }
    count(c, &c->st.layers_unpacked);
    return 0;
fail:
    rm_rf(tmp);
    return r;
}

int
img_cache_clean(struct img_cache *c, const char *const *in_use, size_t n,
                time_t max_age, time_t now)
{
    char d[PATH_MAX];
    bfmt(d, sizeof d, "%s/base", c->dir);
    DIR *dir = opendir(d);
    if (!dir)
        return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        const char *id = e->d_name;
        if (id[0] == '.' || strstr(id, ".used"))
            continue;
        bool used = false;
        for (size_t i = 0; i < n && !used; i++)
            used = in_use[i] && !strcmp(in_use[i], id);
        if (used)
            continue;
        char p[PATH_MAX], u[PATH_MAX + 8];
        bfmt(p, sizeof p, "%s/%s", d, id);
        bfmt(u, sizeof u, "%s.used", p);
        struct stat st;
        time_t last = 0;
        if (stat(u, &st) == 0)
            last = st.st_mtim.tv_sec;
        else if (stat(p, &st) == 0)
            last = st.st_mtim.tv_sec;
        if (now - last < max_age)
            continue;
        unlink(p);
        unlink(u);
        char l[PATH_MAX];
        bfmt(l, sizeof l, "%s/layers/%s", c->dir, id);
        rm_rf(l);
        removed++;
        count(c, &c->st.cleaned);
    }
    closedir(dir);
    return removed;
}
