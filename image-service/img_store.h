/* Image stores: where image bytes live.  A store is a small table of
 * function pointers (Open vSwitch's netdev-provider style) so that other
 * backends can be added beside the filesystem one (img_store_fs.c).
 *
 * write(), commit() and read() do blocking I/O and are called from libuv's
 * thread pool.  open_write(), abort(), open_read(), close_read(), remove()
 * and sweep() are called on the event loop: for the filesystem store they
 * are cheap; a remote store would queue them on the pool instead.  One
 * writer or reader is used by one thread at a time. */
#ifndef NIMBUS_IMG_STORE_H
#define NIMBUS_IMG_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Alignment of buffers and lengths that lets a store write directly from
 * the caller's memory (O_DIRECT). */
#define IMG_STORE_ALIGN 4096u

struct img_store;
struct img_store_writer;
struct img_store_reader;

struct img_store_ops {
    const char *name;
    /* Starts writing the data of 'image_id' under a temporary name that
     * includes 'nonce' (so two uploads never share a file).  Cheap: may be
     * called on the loop.  The writer is owned by the caller until
     * commit() or abort(). */
    int (*open_write)(struct img_store *s, const char *image_id,
                      const char *nonce, struct img_store_writer **out);
    /* Appends 'len' bytes; 0 or a negative errno.  Faster when 'data',
     * 'len' and the bytes written so far are multiples of IMG_STORE_ALIGN
     * (the filesystem store then writes without the page cache). */
    int (*write)(struct img_store_writer *w, const void *data, size_t len);
    /* Makes the data durable and visible under the image's name (fsync,
     * rename, fsync of the directory); frees the writer.  On failure the
     * temporary file is removed. */
    int (*commit)(struct img_store_writer *w);
    /* Removes the temporary data and frees the writer.  Accepts NULL. */
    void (*abort)(struct img_store_writer *w);
    /* Opens the data of 'image_id' for reading and tells its size; cheap,
     * may be called on the loop.  -ENOENT when the store has none. */
    int (*open_read)(struct img_store *s, const char *image_id,
                     struct img_store_reader **out, uint64_t *size);
    /* Reads up to 'len' bytes at 'off'; returns the count (0 at the end)
     * or a negative errno. */
    ssize_t (*read)(struct img_store_reader *r, void *buf, size_t len, uint64_t off);
    /* The file descriptor behind 'r', for sending the data with
     * sendfile(2), or -ENOTSUP when the data is not a local file (then
     * read() is the way).  Owned by the reader.  May be NULL. */
    int (*read_fd)(struct img_store_reader *r);
    /* Accepts NULL. */
    void (*close_read)(struct img_store_reader *r);
    /* Deletes the data of 'image_id'; 0 also when there was none. */
    int (*remove)(struct img_store *s, const char *image_id);
    /* Removes temporary data left by a crash; returns how many were
     * removed or a negative errno.  Start-up only. */
    int (*sweep)(struct img_store *s);
    void (*free)(struct img_store *s);
};

/* Every store starts with this. */
struct img_store {
    const struct img_store_ops *ops;
};

/* The filesystem store under 'dir' (created with mode 0750 if missing).
 * The caller owns '*out' (s->ops->free(s)).  Returns 0 or a negative
 * errno. */
int img_store_fs_new(const char *dir, struct img_store **out)
    __attribute__((warn_unused_result));

#endif
