#include "storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proc.h"
#include "qcow2.h"
#include "strbuf.h"
#include "util.h"

struct storage {
    char root[PATH_MAX - 64];
    struct img_cache *cache;
    bool containers;
};

static bool
uuid_ok(const char *u)
{
    if (strlen(u) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        char c = u[i];
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                                (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

int
storage_new(const char *state_dir, struct img_cache *cache, bool containers,
            struct storage **out)
{
    struct storage *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    bfmt(s->root, sizeof s->root, "%s/instances", state_dir);
    s->cache = cache;
    s->containers = containers;
    if (mkdir(state_dir, 0755) < 0 && errno != EEXIST) {
        free(s);
        return -errno;
    }
    if (mkdir(s->root, 0755) < 0 && errno != EEXIST) {
        free(s);
        return -errno;
    }
    *out = s;
    return 0;
}

void
storage_free(struct storage *s)
{
    free(s);
}

void
storage_inst_dir(const struct storage *s, const char *uuid, char out[PATH_MAX])
{
    bfmt(out, PATH_MAX, "%s/%s", s->root, uuid);
}

/* The format of base image 'path', from its header: "qcow2" when it is
 * one (qcow2_info() reads it), "raw" otherwise, as qemu-img would take a
 * file of neither format (an ami).  Reads a few bytes and starts no
 * qemu-img, so that nothing needs remembering between creates. */
static int
probe_format(const char *path, char *fmt, size_t len, char *err, size_t errlen)
{
    uint64_t size;
    int r = qcow2_info(path, NULL, 0, &size);
    if (r && r != -EINVAL) {
        bfmt(err, errlen, "base %s: %s", path, strerror(-r));
        return r;
    }
    bfmt(fmt, len, "%s", r ? "raw" : "qcow2");
    return 0;
}

/* The cached base of image 'img' into 'base' and its format ("qcow2" or
 * "raw") into 'fmt'. */
static int
image_base(struct storage *s, const struct inst_image *img, char base[PATH_MAX],
           char fmt[8], char *err, size_t errlen)
{
    int r = img_cache_base(s->cache, img, base, err, errlen);
    if (r)
        return r;
    if (!strcmp(img->disk_format, "qcow2") || !strcmp(img->disk_format, "raw")) {
        bfmt(fmt, 8, "%s", img->disk_format);
        return 0;
    }
    return probe_format(base, fmt, 8, err, errlen);
}

int
storage_base(struct storage *s, const struct inst_desired *d, char base[PATH_MAX],
             char fmt[8], char *err, size_t errlen)
{
    return image_base(s, &d->image, base, fmt, err, errlen);
}

/* The cached files a disk image 'img' boots from: its kernel and ramdisk
 * ('kernel', 'ramdisk': the image records) into 'kpath'/'rpath' when it
 * names them (left as they are otherwise), the base image into 'base' and
 * its format ("qcow2" or "raw") into 'fmt'. */
static int
prepare_boot(struct storage *s, const struct inst_image *img, const struct inst_image *kernel,
             const struct inst_image *ramdisk, char kpath[PATH_MAX], char rpath[PATH_MAX],
             char base[PATH_MAX], char fmt[8], char *err, size_t errlen)
{
    int r;
    if (img->kernel_id[0]) {
        if ((r = img_cache_base(s->cache, kernel, kpath, err, errlen)))
            return r;
        if (img->ramdisk_id[0] && (r = img_cache_base(s->cache, ramdisk, rpath, err, errlen)))
            return r;
    }
    return image_base(s, img, base, fmt, err, errlen);
}

/* Rescue mode (Nova's libvirt rescue): with d->rescue, the rescue image's
 * kernel and ramdisk replace the instance's in 'p', and a separate overlay
 * of the rescue image, rescue.qcow2 beside disk.qcow2 (of the rescue
 * image's own size), becomes p->rescue_disk; the instance's own overlay is
 * not touched.  Without d->rescue, a rescue overlay left from an earlier
 * rescue is removed (the caller defines the guest without it). */
static int
prepare_rescue(struct storage *s, const struct inst_desired *d, struct rc_prepared *p,
               char *err, size_t errlen)
{
    char path[PATH_MAX], base[PATH_MAX], fmt[8];
    const struct inst_image *img = &d->rescue_image;
    int r;
    bfmt(path, sizeof path, "%s/rescue.qcow2", p->inst_dir);
    p->rescue_disk[0] = 0;
    if (!d->rescue) {
        if (unlink(path) < 0 && errno != ENOENT) {
            r = -errno;
            bfmt(err, errlen, "%s: %s", path, strerror(-r));
            return r;
        }
        return 0;
    }
    if (!strcmp(img->disk_format, "aki") || !strcmp(img->disk_format, "ari") ||
        !strcmp(img->container_format, "docker") || !strcmp(img->container_format, "ociarchive")) {
        bfmt(err, errlen, "rescue image %s is not a disk image", img->id);
        return -EINVAL;
    }
    p->kernel[0] = p->ramdisk[0] = 0;
    if ((r = prepare_boot(s, img, &d->rescue_kernel, &d->rescue_ramdisk, p->kernel, p->ramdisk,
                          base, fmt, err, errlen)))
        return r;
    if ((r = img_cache_overlay(s->cache, base, fmt, path, 0, err, errlen)))
        return r;
    bfmt(p->rescue_disk, sizeof p->rescue_disk, "%s", path);
    return 0;
}

/* The mark that lets the console proxy serve a stopped instance's overlay
 * to a move's destination: <instance dir>/migration.export holding the
 * SHA-256 (hex) of the move's secret and, on a second line, the
 * generation of the export, written whole or not at all. */
static int
st_export(void *ctx, const struct inst_desired *d, char *err, size_t errlen)
{
    struct storage *s = ctx;
    if (!uuid_ok(d->uuid)) {
        bfmt(err, errlen, "invalid uuid '%s'", d->uuid);
        return -EINVAL;
    }
    char dir[PATH_MAX], tmp[PATH_MAX + 32], path[PATH_MAX + 32];
    storage_inst_dir(s, d->uuid, dir);
    bfmt(tmp, sizeof tmp, "%s/" STORAGE_EXPORT_FILE ".tmp", dir);
    bfmt(path, sizeof path, "%s/" STORAGE_EXPORT_FILE, dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        int r = -errno;
        bfmt(err, errlen, "%s: %s", tmp, strerror(-r));
        return r;
    }
    char text[128];
    int n = snprintf(text, sizeof text, "%s\n%llu\n", d->migration_secret,
                     (unsigned long long)d->generation);
    bool ok = n > 0 && write(fd, text, (size_t)n) == n && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) < 0) {
        int r = errno ? -errno : -EIO;
        unlink(tmp);
        bfmt(err, errlen, "%s: %s", path, strerror(-r));
        return r;
    }
    return 0;
}

static uint64_t
st_exported(void *ctx, const char *uuid)
{
    struct storage *s = ctx;
    if (!uuid_ok(uuid))
        return 0;
    char path[PATH_MAX + 32], text[128];
    bfmt(path, sizeof path, "%s/%s/" STORAGE_EXPORT_FILE, s->root, uuid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n < 66)
        return 0;
    text[n] = 0;
    return strtoull(text + 65, NULL, 10);
}

static void
st_unexport(void *ctx, const char *uuid)
{
    struct storage *s = ctx;
    if (!uuid_ok(uuid))
        return;
    char path[PATH_MAX + 32];
    bfmt(path, sizeof path, "%s/%s/" STORAGE_EXPORT_FILE, s->root, uuid);
    unlink(path);
}

static int
prepare(void *ctx, const struct inst_desired *d, struct rc_prepared *p,
        char *err, size_t errlen)
{
    struct storage *s = ctx;
    int r;
    if (!uuid_ok(d->uuid)) {
        bfmt(err, errlen, "invalid uuid '%s'", d->uuid);
        return -EINVAL;
    }
    storage_inst_dir(s, d->uuid, p->inst_dir);
    if (mkdir(p->inst_dir, 0755) < 0 && errno != EEXIST) {
        r = -errno;
        bfmt(err, errlen, "%s: %s", p->inst_dir, strerror(-r));
        return r;
    }
    bfmt(p->console_log, sizeof p->console_log, "%s/console.log", p->inst_dir);
    const struct inst_image *img = &d->image;
    bool container = s->containers || !strcmp(img->container_format, "docker") ||
                     !strcmp(img->container_format, "ociarchive");
    if (container && d->rescue) {
        bfmt(err, errlen, "instance %s is a container: it cannot be rescued", d->uuid);
        return -ENOTSUP;
    }
    if (container)
        return img_cache_layer(s->cache, img, p->rootfs, err, errlen);

    if (!strcmp(img->disk_format, "aki") || !strcmp(img->disk_format, "ari")) {
        bfmt(err, errlen, "image %s is a %s: it cannot boot by itself", img->id, img->disk_format);
        return -EINVAL;
    }
    char base[PATH_MAX], fmt[8];
    if ((r = prepare_boot(s, img, &d->kernel, &d->ramdisk, p->kernel, p->ramdisk, base, fmt,
                          err, errlen)))
        return r;
    bfmt(p->disk, sizeof p->disk, "%s/disk.qcow2", p->inst_dir);
    bfmt(p->disk_format, sizeof p->disk_format, "qcow2");
    uint64_t t0 = util_now_ns();
    r = img_cache_overlay(s->cache, base, fmt, p->disk, d->disk_gb, err, errlen);
    p->overlay_ns = util_now_ns() - t0;
    if (r)
        return r;
    return prepare_rescue(s, d, p, err, errlen);
}

/* prepare() with the figures of the timing event: how many images were
 * fetched, the time spent on the overlay and on the rest (the images). */
static int
st_prepare(void *ctx, const struct inst_desired *d, struct rc_prepared *p,
           char *err, size_t errlen)
{
    struct storage *s = ctx;
    struct img_cache_stats before, after;
    img_cache_stats(s->cache, &before);
    uint64_t t0 = util_now_ns();
    int r = prepare(ctx, d, p, err, errlen);
    p->fetch_ns = util_now_ns() - t0 - p->overlay_ns;
    img_cache_stats(s->cache, &after);
    p->fetched = (unsigned)(after.fetches - before.fetches);
    return r;
}

static int
st_remove(void *ctx, const char *uuid, char *err, size_t errlen)
{
    struct storage *s = ctx;
    if (!uuid_ok(uuid)) {
        bfmt(err, errlen, "invalid uuid '%s'", uuid);
        return -EINVAL;
    }
    char dir[PATH_MAX];
    storage_inst_dir(s, uuid, dir);
    struct stat st;
    if (stat(dir, &st) < 0 && errno == ENOENT)
        return 0;
    /* A container's overlay may still be mounted after a crash. */
    char merged[PATH_MAX + 16];
    bfmt(merged, sizeof merged, "%s/rootfs", dir);
    const char *um[] = { "umount", "-l", merged, NULL };
    char e2[64];
    if (proc_run(um, NULL, 0, e2, sizeof e2)) {
        /* Not mounted: the usual case. */
    }
    const char *argv[] = { "rm", "-rf", "--one-file-system", dir, NULL };
    return proc_run(argv, NULL, 0, err, errlen);
}

static int
st_list(void *ctx, char (**out)[37], size_t *n)
{
    struct storage *s = ctx;
    *out = NULL;
    *n = 0;
    DIR *d = opendir(s->root);
    if (!d)
        return -errno;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!uuid_ok(e->d_name))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 32;
            char (*v)[37] = realloc(*out, cap * sizeof *v);
            if (!v) {
                closedir(d);
                free(*out);
                *out = NULL;
                *n = 0;
                return -ENOMEM;
            }
            *out = v;
        }
        bfmt((*out)[(*n)++], 37, "%s", e->d_name);
    }
    closedir(d);
    return 0;
}

struct rc_storage
storage_interface(struct storage *s)
{
    return (struct rc_storage){ .prepare = st_prepare, .remove = st_remove,
                                .list = st_list, .export_disk = st_export,
                                .exported = st_exported,
                                .unexport_disk = st_unexport, .ctx = s };
}

int
storage_console(const struct storage *s, const char *uuid, unsigned max_lines,
                char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!uuid_ok(uuid))
        return -EINVAL;
    char p[PATH_MAX];
    bfmt(p, sizeof p, "%s/%s/console.log", s->root, uuid);
    FILE *f = fopen(p, "re");
    if (!f)
        return -errno;
    /* Only the tail: a console log grows without bound. */
    const long cap = 1 << 20;
    long start = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        start = size > cap ? size - cap : 0;
    }
    fseek(f, start, SEEK_SET);
    char *buf = malloc((size_t)cap + 1);
    if (!buf) {
        fclose(f);
        return -ENOMEM;
    }
    size_t n = fread(buf, 1, (size_t)cap, f);
    fclose(f);
    buf[n] = 0;
    size_t from = 0;
    if (max_lines) {
        unsigned lines = 0;
        size_t i = n;
        if (i && buf[i - 1] == '\n')
            i--;
        while (i > 0) {
            if (buf[i - 1] == '\n' && ++lines == max_lines)
                break;
            i--;
        }
        from = i;
    }
    memmove(buf, buf + from, n - from + 1);
    *out = buf;
    *len = n - from;
    return 0;
}
