/* The filesystem image store: one file per image, named by its id, in one
 * directory.  An upload goes to ".upload-<id>-<nonce>" in the same
 * directory, is fsynced and renamed over the final name only when complete,
 * so a reader never sees partial data and a crash leaves only temporary
 * files, which sweep() removes at start-up.
 *
 * Uploads are written with O_DIRECT where the filesystem allows it: the
 * bytes go from the caller's buffer to the disk without being copied into
 * the page cache, which on this kind of machine cost more CPU than the
 * copy itself suggests (filling fresh page-cache pages was 40% of
 * nimbus-image's profile during an upload), and the final fsync has
 * nothing left to flush.  Direct writes need the buffer, the length and
 * the file offset aligned (IMG_STORE_ALIGN); the first write that is not
 * (the last, short piece of an upload) switches the file to ordinary
 * buffered writes for the rest.  Without O_DIRECT, writeback is started
 * every few MiB (sync_file_range) so that commit()'s fsync is short. */
#include "img_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMP_PREFIX ".upload-"
/* Buffered writes: start writing back every this many bytes. */
#define WRITEBACK_STEP (8u << 20)

struct fs_store {
    struct img_store base;
    char *dir;
    int dirfd;
};

struct img_store_writer {
    struct fs_store *s;
    int fd;
    uint64_t off;
    uint64_t flushed;          /* Buffered: writeback started below this. */
    bool direct;               /* The file is open with O_DIRECT. */
    char tmp[PATH_MAX];
    char final[PATH_MAX];
};

struct img_store_reader {
    int fd;
};

static bool
safe_name(const char *s)
{
    if (!*s || strlen(s) > 128)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') ||
              (*s >= 'A' && *s <= 'Z') || *s == '-'))
            return false;
    return true;
}

static int
fs_open_write(struct img_store *base, const char *image_id, const char *nonce,
              struct img_store_writer **out)
{
    struct fs_store *s = (struct fs_store *)base;
    if (!safe_name(image_id) || !safe_name(nonce))
        return -EINVAL;
    struct img_store_writer *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->s = s;
    snprintf(w->tmp, sizeof w->tmp, TMP_PREFIX "%s-%s", image_id, nonce);
    snprintf(w->final, sizeof w->final, "%s", image_id);
    w->fd = openat(s->dirfd, w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (w->fd < 0) {
        int e = errno;
        free(w);
        return -e;
    }
    /* Filesystems without direct I/O (tmpfs) refuse the flag: then the
     * writes are buffered. */
    int fl = fcntl(w->fd, F_GETFL);
    w->direct = fl >= 0 && fcntl(w->fd, F_SETFL, fl | O_DIRECT) == 0;
    *out = w;
    return 0;
}

/* Switches the file to buffered writes for good. */
static int
writer_buffered(struct img_store_writer *w)
{
    int fl = fcntl(w->fd, F_GETFL);
    if (fl < 0 || fcntl(w->fd, F_SETFL, fl & ~O_DIRECT) < 0)
        return -errno;
    w->direct = false;
    w->flushed = w->off & ~(uint64_t)(IMG_STORE_ALIGN - 1);
    return 0;
}

static int
fs_write(struct img_store_writer *w, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        if (w->direct && (((uintptr_t)p | len | w->off) & (IMG_STORE_ALIGN - 1))) {
            int rc = writer_buffered(w);
            if (rc < 0)
                return rc;
        }
        ssize_t n = pwrite(w->fd, p, len, (off_t)w->off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* A device whose blocks are larger than IMG_STORE_ALIGN. */
            if (errno == EINVAL && w->direct) {
                int rc = writer_buffered(w);
                if (rc < 0)
                    return rc;
                continue;
            }
            return -errno;
        }
        p += n;
        len -= (size_t)n;
        w->off += (uint64_t)n;
    }
    if (!w->direct && w->off - w->flushed >= WRITEBACK_STEP) {
        /* Only starts the writeback (no waiting); commit() waits. */
        (void)sync_file_range(w->fd, (off_t)w->flushed, (off_t)(w->off - w->flushed),
                              SYNC_FILE_RANGE_WRITE);
        w->flushed = w->off;
    }
    return 0;
}

static void
fs_abort(struct img_store_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    unlinkat(w->s->dirfd, w->tmp, 0);
    free(w);
}

static int
fs_commit(struct img_store_writer *w)
{
    int rc = 0;
    if (fdatasync(w->fd) < 0)
        rc = -errno;
    if (close(w->fd) < 0 && !rc)
        rc = -errno;
    w->fd = -1;
    if (!rc && renameat(w->s->dirfd, w->tmp, w->s->dirfd, w->final) < 0)
        rc = -errno;
    if (!rc && fsync(w->s->dirfd) < 0)
        rc = -errno;
    if (rc) {
        fs_abort(w);
        return rc;
    }
    free(w);
    return 0;
}

static int
fs_open_read(struct img_store *base, const char *image_id,
             struct img_store_reader **out, uint64_t *size)
{
    struct fs_store *s = (struct fs_store *)base;
    if (!safe_name(image_id))
        return -EINVAL;
    int fd = openat(s->dirfd, image_id, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    struct img_store_reader *r = malloc(sizeof *r);
    if (!r) {
        close(fd);
        return -ENOMEM;
    }
    r->fd = fd;
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    *size = (uint64_t)st.st_size;
    *out = r;
    return 0;
}

static ssize_t
fs_read(struct img_store_reader *r, void *buf, size_t len, uint64_t off)
{
    for (;;) {
        ssize_t n = pread(r->fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 ? -errno : n;
    }
}

static int
fs_read_fd(struct img_store_reader *r)
{
    return r->fd;
}

static void
fs_close_read(struct img_store_reader *r)
{
    if (!r)
        return;
    close(r->fd);
    free(r);
}

static int
fs_remove(struct img_store *base, const char *image_id)
{
    struct fs_store *s = (struct fs_store *)base;
    if (!safe_name(image_id))
        return -EINVAL;
    if (unlinkat(s->dirfd, image_id, 0) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

static int
fs_sweep(struct img_store *base)
{
    struct fs_store *s = (struct fs_store *)base;
    int fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return -e;
    }
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) &&
            unlinkat(s->dirfd, de->d_name, 0) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static void
fs_free(struct img_store *base)
{
    struct fs_store *s = (struct fs_store *)base;
    if (!s)
        return;
    if (s->dirfd >= 0)
        close(s->dirfd);
    free(s->dir);
    free(s);
}

static const struct img_store_ops fs_ops = {
    .name = "filesystem",
    .open_write = fs_open_write,
    .write = fs_write,
    .commit = fs_commit,
    .abort = fs_abort,
    .open_read = fs_open_read,
    .read = fs_read,
    .read_fd = fs_read_fd,
    .close_read = fs_close_read,
    .remove = fs_remove,
    .sweep = fs_sweep,
    .free = fs_free,
};

int
img_store_fs_new(const char *dir, struct img_store **out)
{
    if (!dir || !*dir)
        return -EINVAL;
    if (mkdir(dir, 0750) < 0 && errno != EEXIST)
        return -errno;
    struct fs_store *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->base.ops = &fs_ops;
    s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    s->dir = strdup(dir);
    if (s->dirfd < 0 || !s->dir) {
        int e = s->dirfd < 0 ? errno : ENOMEM;
        fs_free(&s->base);
        return -e;
    }
    *out = &s->base;
    return 0;
}
