/* Image data: PUT /v2/images/{id}/file (streamed upload) and
 * GET /v2/images/{id}/file (streamed download, Range requests).
 *
 * Upload.  The image is claimed in one conditional UPDATE (queued → saving
 * with a random upload token), so of two concurrent uploads exactly one
 * wins and the other gets 409.  The body is received straight into a ring
 * of four 4 MiB buffers (http_req_set_body_buffer(): no copy, and one
 * read from the socket may fill what is left of a buffer).  Each full
 * buffer goes through three stages, each a job on libuv's thread pool:
 * writing to the store (O_DIRECT, from the buffer), MD5 and SHA-512.  The
 * stages run in parallel with each other and with the loop, which keeps
 * receiving into the next buffer; each stage takes the buffers in order,
 * so one may run a few buffers behind another.  When the ring is full,
 * reading from the socket pauses (back-pressure), so memory stays constant
 * whatever the size.  The first bytes are kept for the disk format check (img_format.h).  At the end the
 * store commits (fsync, rename) and the row becomes active with size,
 * checksum, os_hash_value and virtual_size, in an UPDATE that names the
 * upload token: if the image was deleted meanwhile the data is removed and
 * the client gets 410.  Any failure (client gone, size limit, quota, format
 * check, I/O) removes the temporary data and returns the image to queued,
 * as Glance does, so the client can retry.
 *
 * Download.  When the store's data is a local file (the filesystem store),
 * the answer is sent with http_respond_file(): sendfile(2) moves the bytes
 * from the page cache to the socket, with no copy through user space, each
 * call on the thread pool so that a cold disk never stalls the loop.  Other
 * stores are read in 256 KiB pieces on the thread pool, one read in flight
 * while the previous piece is being written to the socket.  Whole answers
 * and Range (206) answers take the same path. */
#include "img_api.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "auth_policy.h"
#include "img_format.h"
#include "img_hash.h"
#include "img_store.h"
#include "log.h"
#include "util.h"

/* Per buffer, each stage costs a thread-pool job and a wake-up, and the
 * store one direct write: 4 MiB buffers took a third of the kernel time of
 * 1 MiB ones per GiB uploaded. */
#define UP_BATCH (4u << 20)
#define UP_RING 4u             /* Buffers in the ring: 16 MiB per upload. */
#define UP_MIN_READ (64u * 1024u)  /* Smallest read into the ring. */
#define DL_CHUNK (256u * 1024u)

/* The three things done to every buffer, each on its own thread-pool job
 * so that they run in parallel; each stage takes the buffers in order. */
enum up_stage { UP_WRITE, UP_MD5, UP_SHA512, UP_STAGES };

struct upload;

struct up_job {
    uv_work_t work;
    struct upload *up;
    enum up_stage stage;
    uint64_t seq;              /* Buffer being processed. */
    bool busy;
};

struct upload {
    http_request *req;
    struct img_ctx *ctx;
    char id[37];
    char nonce[33];
    char disk_format[32];
    struct img_store_writer *w;
    struct img_hash *md5, *sha;
    struct img_format_probe probe;
    uint64_t received;
    uint64_t cap;
    bool cap_is_quota;
    bool stage;                /* PUT .../stage: ends in 'uploading', not 'active'. */
    /* Ring of buffers.  Buffer number n (counted from 0 over the whole
     * upload) lives in buf[n % UP_RING]; 'filled' buffers were handed to
     * the stages, buffer 'filled' is being filled by the loop.  A stage
     * has done the buffers below its done[] count; a buffer is reused once
     * every stage is past it, and reading from the socket pauses while
     * the ring is full, so memory stays bounded whatever the size.
     * A stage job goes on with the next buffer by itself when it is
     * already handed over ('avail'), rather than going back through the
     * loop for each (a wake-up of the loop and one of a worker, which on
     * a busy machine left the digests idle).  It publishes its progress in
     * done[] after each buffer, wakes the loop ('wake') when reading is
     * paused ('want_wake') so that it can resume as soon as there is
     * room, and stops after the current buffer on a failure ('stop'). */
    char *buf[UP_RING];
    size_t len[UP_RING];       /* Set when a buffer is handed over. */
    size_t fill_len;           /* Bytes in the buffer being filled. */
    uint64_t filled;
    _Atomic uint64_t avail;    /* 'filled', published to the stage jobs. */
    _Atomic uint64_t done[UP_STAGES];
    atomic_bool want_wake;
    atomic_bool stop;
    uv_async_t wake;
    bool wake_open;
    struct up_job job[UP_STAGES];
    int inflight;              /* Stage jobs running. */
    int io_err;                /* Store write error (worker thread). */
    bool paused;
    bool body_ended;
    bool finishing;
    int body_status;
    int fail_status;           /* HTTP status to answer on failure. */
    char fail_msg[256];
    uv_work_t job_commit;
    int commit_rc;
    char md5hex[IMG_MD5_HEX_SIZE];
    char shahex[IMG_SHA512_HEX_SIZE];
    int64_t virtual_size;
};

static void upload_pump(struct upload *up);

/* A stage made progress while reading was paused. */
static void
upload_wake(uv_async_t *a)
{
    upload_pump(a->data);
}

static void
upload_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Frees the upload once no stage job runs (the memory itself after the
 * wake handle is closed). */
static void
upload_free(struct upload *up)
{
    if (!up)
        return;
    if (up->w)
        up->ctx->store->ops->abort(up->w);
    img_hash_free(up->md5);
    img_hash_free(up->sha);
    for (unsigned i = 0; i < UP_RING; i++)
        free(up->buf[i]);
    up->ctx->uploads_active--;
    if (up->wake_open)
        uv_close((uv_handle_t *)&up->wake, upload_closed);
    else
        free(up);
}

static void
upload_fail(struct upload *up, int status, const char *msg)
{
    if (up->fail_status)
        return;
    up->fail_status = status;
    snprintf(up->fail_msg, sizeof up->fail_msg, "%s", msg);
    atomic_store(&up->stop, true);
}

/* ---- The stages (thread pool).  A stage job reads the buffers handed
 * over and its own state only; the loop does not touch a buffer until
 * every stage is past it. */

static void
stage_run(uv_work_t *w)
{
    struct up_job *j = w->data;
    struct upload *up = j->up;
    for (uint64_t seq = j->seq;;) {
        unsigned slot = (unsigned)(seq % UP_RING);
        const char *b = up->buf[slot];
        size_t n = up->len[slot];
        switch (j->stage) {
        case UP_WRITE: {
            int rc = up->ctx->store->ops->write(up->w, b, n);
            if (rc < 0)
                up->io_err = rc;
            break;
        }
        case UP_MD5:
            img_hash_update(up->md5, b, n);
            break;
        case UP_SHA512:
            img_hash_update(up->sha, b, n);
            break;
        case UP_STAGES:
            break;
        }
        seq++;
        atomic_store_explicit(&up->done[j->stage], seq, memory_order_release);
        if (up->io_err || atomic_load_explicit(&up->stop, memory_order_relaxed))
            break;
        if (atomic_load_explicit(&up->want_wake, memory_order_relaxed))
            uv_async_send(&up->wake);
        if (seq >= atomic_load_explicit(&up->avail, memory_order_acquire))
            break;
    }
}

static void
stage_done(uv_work_t *w, int status)
{
    struct up_job *j = w->data;
    struct upload *up = j->up;
    j->busy = false;
    up->inflight--;
    if (up->io_err)
        upload_fail(up, 500, "Writing the image data to the store failed.");
    upload_pump(up);
}

/* The oldest buffer some stage still needs. */
static uint64_t
ring_tail(struct upload *up)
{
    uint64_t t = atomic_load_explicit(&up->done[0], memory_order_acquire);
    for (int s = 1; s < UP_STAGES; s++) {
        uint64_t d = atomic_load_explicit(&up->done[s], memory_order_acquire);
        if (d < t)
            t = d;
    }
    return t;
}

/* Hands the buffer being filled to the stages. */
static void
ring_hand_over(struct upload *up)
{
    up->len[up->filled % UP_RING] = up->fill_len;
    up->fill_len = 0;
    up->filled++;
    atomic_store_explicit(&up->avail, up->filled, memory_order_release);
}

/* Starts every idle stage on its next filled buffer.  After a failure no
 * new job starts (the write stage must not touch an aborted writer). */
static void
stages_kick(struct upload *up)
{
    if (up->fail_status)
        return;
    for (int s = 0; s < UP_STAGES; s++) {
        struct up_job *j = &up->job[s];
        uint64_t done = atomic_load_explicit(&up->done[s], memory_order_acquire);
        if (j->busy || done >= up->filled)
            continue;
        j->busy = true;
        j->seq = done;
        up->inflight++;
        uv_queue_work(up->ctx->loop, &j->work, stage_run, stage_done);
    }
}

/* ---- Ending an upload. */

static void
reset_done(int status, db_result *res, const struct db_error *err, void *arg)
{
    struct upload *up = arg;
    if (status < 0)
        log_warn("image", "image %s: cannot return it to queued after a failed upload: %s",
                 up->id, err && err->message ? err->message : strerror(-status));
    img_error(up->req, up->fail_status, "%s", up->fail_msg);
    upload_free(up);
}

/* Removes the temporary data, returns the image to queued and answers. */
static void
upload_abandon(struct upload *up)
{
    struct img_ctx *ctx = up->ctx;
    if (up->w) {
        ctx->store->ops->abort(up->w);
        up->w = NULL;
    }
    if (!up->fail_status)
        upload_fail(up, 400, "The upload was interrupted.");
    if (up->fail_status == 413 || up->fail_status == 400)
        ctx->counters.uploads_rejected++;
    else
        ctx->counters.uploads_failed++;
    log_info("image", "image %s: upload failed after %" PRIu64 " bytes (%d: %s)",
             up->id, up->received, up->fail_status, up->fail_msg);
    const char *p[2] = { up->id, up->nonce };
    if (db_query(ctx->db, "UPDATE images SET status = 'queued', upload_token = NULL, "
                 "updated_at = now() WHERE id = $1 AND upload_token = $2",
                 2, p, reset_done, up) < 0)
        reset_done(-ENOTCONN, NULL, NULL, up);
}

static void
activated(int status, db_result *res, const struct db_error *err, void *arg)
{
    struct upload *up = arg;
    struct img_ctx *ctx = up->ctx;
    if (status < 0 || db_rows(res) == 0) {
        /* Deleted during the upload (or the database failed): the data
         * must not stay behind. */
        int rc = ctx->store->ops->remove(ctx->store, up->id);
        if (rc < 0)
            log_warn("image", "image %s: cannot remove its data: %s", up->id, strerror(-rc));
        ctx->counters.uploads_failed++;
        if (status < 0) {
            img_db_error(up->req, status, err);
        } else {
            log_info("image", "image %s was deleted during its upload", up->id);
            img_error(up->req, 410, "Image %s could not be found after upload. The image "
                      "may have been deleted during the upload.", up->id);
        }
        upload_free(up);
        return;
    }
    ctx->counters.uploads_completed++;
    log_info("image", "image %s: %" PRIu64 " bytes %s, md5 %s", up->id, up->received,
             up->stage ? "staged" : "stored", up->md5hex);
    (void)http_respond(up->req, 204, NULL, NULL, 0);
    upload_free(up);
}

static void
job_commit_run(uv_work_t *w)
{
    struct upload *up = w->data;
    up->commit_rc = up->ctx->store->ops->commit(up->w);
}

static void
job_commit_done(uv_work_t *w, int status)
{
    struct upload *up = w->data;
    up->w = NULL;              /* commit() freed the writer either way. */
    if (up->commit_rc < 0) {
        log_error("image", "image %s: cannot commit the data: %s", up->id,
                  strerror(-up->commit_rc));
        upload_fail(up, 500, "Storing the image data failed.");
        upload_abandon(up);
        return;
    }
    char size[24], vsize[24];
    snprintf(size, sizeof size, "%" PRIu64, up->received);
    snprintf(vsize, sizeof vsize, "%" PRId64, up->virtual_size);
    const char *p[7] = { up->id, up->nonce, size, up->virtual_size >= 0 ? vsize : NULL,
                         up->md5hex, up->shahex, up->stage ? "uploading" : "active" };
    if (db_query(up->ctx->db, "UPDATE images SET status = $7, size = $3, "
                 "virtual_size = $4, checksum = $5, os_hash_algo = 'sha512', "
                 "os_hash_value = $6, upload_token = NULL, updated_at = now() "
                 "WHERE id = $1 AND upload_token = $2 RETURNING id",
                 7, p, activated, up) < 0)
        activated(-ENOTCONN, NULL, NULL, up);
}

static void
upload_finish(struct upload *up)
{
    if (up->finishing)
        return;
    up->finishing = true;
    if (up->body_status < 0 && !up->fail_status) {
        if (up->body_status == -ETIMEDOUT)
            upload_fail(up, 408, "The upload stalled.");
        else
            upload_fail(up, 400, "The upload was interrupted.");
    }
    if (up->fail_status) {
        upload_abandon(up);
        return;
    }
    img_hash_final_hex(up->md5, up->md5hex, sizeof up->md5hex);
    img_hash_final_hex(up->sha, up->shahex, sizeof up->shahex);
    const char *why = NULL;
    if (img_format_check(&up->probe, up->disk_format, up->received, &up->virtual_size,
                         &why) < 0) {
        upload_fail(up, 400, why);
        upload_abandon(up);
        return;
    }
    up->job_commit.data = up;
    uv_queue_work(up->ctx->loop, &up->job_commit, job_commit_run, job_commit_done);
}

/* Hands a full buffer (or the last one) to the stages, resumes reading
 * when the ring has room again, and ends the upload once the body is in
 * and every stage is idle. */
static void
upload_pump(struct upload *up)
{
    if (!up->fail_status) {
        if (up->body_ended && up->fill_len > 0)
            ring_hand_over(up);
        stages_kick(up);
    }
    bool room = up->filled - ring_tail(up) < UP_RING - 1;
    if (up->paused && (room || up->fail_status)) {
        up->paused = false;
        atomic_store(&up->want_wake, false);
        http_req_resume(up->req);
    }
    if (up->body_ended && up->inflight == 0 &&
        (up->fail_status || (ring_tail(up) == up->filled && up->fill_len == 0)))
        upload_finish(up);
}

/* Where the next read from the socket goes: the free part of the buffer
 * being filled, so that the bytes need no copy and one read may be as large
 * as that part.  NULL (the HTTP layer's own buffer, whose bytes on_data()
 * copies) after a failure, while that buffer is still used by a stage, or
 * when little of it is left: a chunked body's framing takes room too, so
 * the last bytes of a buffer would otherwise come in ever smaller reads. */
static char *
body_buffer(http_request *req, size_t *len, void *arg)
{
    struct upload *up = arg;
    if (up->fail_status || up->filled - ring_tail(up) >= UP_RING - 1 ||
        UP_BATCH - up->fill_len < UP_MIN_READ)
        return NULL;
    size_t room = UP_BATCH - up->fill_len;
    if (*len > room)
        *len = room;
    return up->buf[up->filled % UP_RING] + up->fill_len;
}

static int
on_data(http_request *req, const char *data, size_t len, void *arg)
{
    struct upload *up = arg;
    if (up->fail_status)
        return -ECANCELED;
    if (up->received + len > up->cap) {
        if (up->cap_is_quota)
            upload_fail(up, 413, "The image would exceed the project's image storage quota.");
        else
            upload_fail(up, 413, "The image is larger than the maximum image size.");
        return -EFBIG;
    }
    up->received += len;
    up->ctx->counters.bytes_uploaded += len;
    img_format_feed(&up->probe, data, len);
    while (len > 0) {
        /* Reading pauses one buffer before the ring is full, and after a
         * pause the HTTP layer delivers at most one read (into the ring:
         * at most the rest of the buffer being filled; into its own
         * buffer: 64 KiB), so the buffer being filled is never one a
         * stage still reads. */
        if (up->filled - ring_tail(up) >= UP_RING) {
            upload_fail(up, 500, "The upload buffers overflowed.");
            return -ENOBUFS;
        }
        unsigned slot = (unsigned)(up->filled % UP_RING);
        size_t take = UP_BATCH - up->fill_len;
        if (take > len)
            take = len;
        /* Bytes received into the ring (body_buffer()) are in place
         * already, or a little further on after chunk framing. */
        char *dst = up->buf[slot] + up->fill_len;
        if (dst != data)
            memmove(dst, data, take);
        up->fill_len += take;
        data += take;
        len -= take;
        if (up->fill_len == UP_BATCH) {
            ring_hand_over(up);
            stages_kick(up);
            if (up->filled - ring_tail(up) >= UP_RING - 1 && !up->paused) {
                up->paused = true;
                atomic_store(&up->want_wake, true);
                http_req_pause(req);
            }
        }
    }
    return 0;
}

static void
on_end(http_request *req, int status, void *arg)
{
    struct upload *up = arg;
    up->body_ended = true;
    up->body_status = status;
    upload_pump(up);
}

static void
claimed(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    struct upload *up = arg;
    struct img_ctx *ctx = ir->ctx;
    if (db_rows(res) == 0) {
        ctx->counters.upload_conflicts++;
        img_error(req, 409, "Image %s is not queued for upload: another upload is in "
                  "progress or it already has data.", up->id);
        upload_free(up);
        return;
    }
    int rc = ctx->store->ops->open_write(ctx->store, up->id, up->nonce, &up->w);
    if (rc == 0)
        rc = http_req_read_body(req, on_data, on_end, up);
    if (rc == 0)
        http_req_set_body_buffer(req, body_buffer);
    if (rc < 0) {
        log_error("image", "image %s: cannot start the upload: %s", up->id, strerror(-rc));
        upload_fail(up, 500, "The image store is unavailable.");
        up->finishing = true;
        upload_abandon(up);
        return;
    }
    ctx->counters.uploads_started++;
}

static void
claim_done(int status, db_result *res, const struct db_error *err, void *arg)
{
    struct upload *up = arg;
    if (status < 0) {
        img_db_error(up->req, status, err);
        upload_free(up);
        return;
    }
    claimed(up->req, img_req(up->req), res, up);
}

static void
upload_loaded(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    struct img_ctx *ctx = ir->ctx;
    bool stage = arg != NULL;
    if (db_rows(res) == 0) {
        img_error(req, 404, "No image found with ID %s", http_req_param(req, "id"));
        return;
    }
    const char *owner = db_getn(res, 0, "owner");
    if (ir->node && strcmp(db_getn(res, 0, "node_may"), "t")) {
        img_error(req, 403, "A node credential may only upload the snapshot it was asked "
                  "to take.");
        return;
    }
    if (!ir->node && (!img_may_modify(ir, owner) ||
        auth_policy_check("image:upload", ir->tok, ir->admin ? NULL : owner, NULL) < 0)) {
        img_error(req, 403, "You are not permitted to upload data to this image.");
        return;
    }
    const char *status = db_getn(res, 0, "status");
    if (strcmp(status, "queued")) {
        ctx->counters.upload_conflicts++;
        img_error(req, 409, "Image status transition from %s to %s is not allowed.", status,
                  stage ? "uploading" : "saving");
        return;
    }
    const char *df = db_getn(res, 0, "disk_format"), *cf = db_getn(res, 0, "container_format");
    if (!df || !cf) {
        img_error(req, 400, "Properties disk_format, container_format must be set prior to "
                  "saving data.");
        return;
    }
    uint64_t cap = (uint64_t)ctx->max_image_size;
    bool quota = false;
    if (ctx->project_quota > 0) {
        int64_t used = strtoll(db_getn(res, 0, "used"), NULL, 10);
        int64_t left = ctx->project_quota - used;
        if (left < 0)
            left = 0;
        if ((uint64_t)left < cap) {
            cap = (uint64_t)left;
            quota = true;
        }
    }
    int64_t cl = http_req_content_length(req);
    if (cl >= 0 && (uint64_t)cl > cap) {
        ctx->counters.uploads_rejected++;
        img_error(req, 413, quota ? "The image would exceed the project's image storage quota."
                                  : "The image is larger than the maximum image size.");
        return;
    }
    struct upload *up = calloc(1, sizeof *up);
    bool bufs = up != NULL;
    if (up) {
        up->ctx = ctx;
        up->wake_open = uv_async_init(ctx->loop, &up->wake, upload_wake) == 0;
        up->wake.data = up;
    }
    /* Aligned so that the store can write them without copying. */
    for (unsigned i = 0; up && i < UP_RING; i++)
        bufs = posix_memalign((void **)&up->buf[i], IMG_STORE_ALIGN, UP_BATCH) == 0 && bufs;
    if (!up || !bufs || !up->wake_open || img_hash_new(IMG_HASH_MD5, &up->md5) < 0 ||
        img_hash_new(IMG_HASH_SHA512, &up->sha) < 0) {
        if (up) {
            ctx->uploads_active++;
            upload_free(up);
        }
        img_error(req, 500, "Out of memory.");
        return;
    }
    ctx->uploads_active++;
    up->req = req;
    up->ctx = ctx;
    for (int st = 0; st < UP_STAGES; st++) {
        up->job[st].up = up;
        up->job[st].stage = (enum up_stage)st;
        up->job[st].work.data = &up->job[st];
    }
    up->cap = cap;
    up->cap_is_quota = quota;
    up->stage = stage;
    snprintf(up->id, sizeof up->id, "%s", db_getn(res, 0, "id"));
    snprintf(up->disk_format, sizeof up->disk_format, "%s", df);
    char rnd[33];
    util_uuid4_hex(rnd);
    snprintf(up->nonce, sizeof up->nonce, "%s%.16s", ctx->instance, rnd);
    const char *p[3] = { up->id, up->nonce, stage ? "uploading" : "saving" };
    int rc = db_query(ctx->db, "UPDATE images SET status = $3, upload_token = $2, "
                      "updated_at = now() WHERE id = $1 AND status = 'queued' RETURNING id",
                      3, p, claim_done, up);
    if (rc < 0) {
        img_db_error(req, rc, NULL);
        upload_free(up);
    }
}

/* PUT /v2/images/{id}/file ('stage' false) and PUT /v2/images/{id}/stage
 * (the first step of glance-direct import): the same streamed upload and
 * checks; staged data waits in 'uploading' for POST .../import. */
static void
upload_start(http_request *req, struct img_req *ir, bool stage)
{
    static const char staging = 1;
    void *arg = stage ? (void *)&staging : NULL;
    const char *id = http_req_param(req, "id");
    if (ir->node) {
        /* A compute node uploads only the snapshot it was asked to take:
         * the image an instance on that node names in its pending
         * snapshot action (createImage), never staged data. */
        if (stage) {
            img_error(req, 403, "A node credential may only upload snapshots.");
            return;
        }
        if (!id || !util_is_uuid(id)) {
            img_error(req, 404, "No image found with ID %s", id ? id : "");
            return;
        }
        const char **np = arena_zalloc(http_req_arena(req), 2 * sizeof *np);
        np[0] = id;
        np[1] = ir->node;
        img_query(req, "SELECT " IMG_COLUMNS ", (SELECT coalesce(sum(o.size), 0) FROM images o "
                  "WHERE o.owner = i.owner AND o.id <> i.id) AS used, EXISTS (SELECT 1 FROM "
                  "instances s WHERE s.node = $2 AND NOT s.deleted AND "
                  "s.agent_snapshot->>'image_id' = i.id::text) AS node_may FROM images i "
                  "WHERE i.id = $1", 2, np, upload_loaded, arg);
        return;
    }
    if (auth_policy_check("image:upload", ir->tok, NULL, NULL) < 0 && !ir->admin) {
        img_error(req, 403, "You are not authorized to upload image data.");
        return;
    }
    img_load_visible(req, ir, id, "SELECT " IMG_COLUMNS ", (SELECT coalesce(sum(o.size), 0)"
                     " FROM images o WHERE o.owner = i.owner AND o.id <> i.id) AS used"
                     " FROM images i", upload_loaded, arg);
}

static void
image_upload(http_request *req, struct img_req *ir)
{
    upload_start(req, ir, false);
}

static void
image_stage(http_request *req, struct img_req *ir)
{
    upload_start(req, ir, true);
}

/* ---- Download. */

struct download;

struct dl_slot {
    struct download *dl;
    char *buf;
    bool busy;             /* Being read into or written from. */
};

struct download {
    http_request *req;
    struct img_ctx *ctx;
    struct img_store_reader *r;
    uint64_t off, end;     /* Next byte to read, end of the range. */
    struct dl_slot slot[2];
    int writing;           /* Writes in flight. */
    bool reading;          /* A read job is in flight (at most one). */
    uv_work_t rd;
    struct dl_slot *rd_slot;
    size_t rd_want;
    ssize_t rd_n;
    bool failed;
    bool ended;
};

static void
download_end(struct download *dl)
{
    if (dl->ended)
        return;
    dl->ended = true;
    (void)http_resp_end(dl->req);
    dl->ctx->store->ops->close_read(dl->r);
    dl->ctx->downloads_active--;
    free(dl->slot[0].buf);
    free(dl->slot[1].buf);
    free(dl);
}

static void download_pump(struct download *dl);

/* The end of an answer sent from the store's file. */
static void
dl_file_done(http_request *req, int status, uint64_t sent, void *arg)
{
    struct download *dl = arg;
    dl->ctx->counters.bytes_downloaded += sent;
    if (status < 0 && status != -ECONNRESET && status != -ETIMEDOUT)
        log_error("image", "%s: image data ends early or cannot be read (%s)",
                  http_req_path(req), strerror(-status));
    dl->ctx->store->ops->close_read(dl->r);
    dl->ctx->downloads_active--;
    free(dl);
}

static void
dl_written(http_request *req, int status, void *arg)
{
    struct dl_slot *s = arg;
    struct download *dl = s->dl;
    s->busy = false;
    dl->writing--;
    if (status < 0)
        dl->failed = true;
    download_pump(dl);
}

static void
dl_read_job(uv_work_t *w)
{
    struct download *dl = w->data;
    dl->rd_n = dl->ctx->store->ops->read(dl->r, dl->rd_slot->buf, dl->rd_want, dl->off);
}

static void
dl_read_done(uv_work_t *w, int status)
{
    struct download *dl = w->data;
    struct dl_slot *s = dl->rd_slot;
    dl->reading = false;
    if (dl->rd_n <= 0) {
        if (!dl->failed)
            log_error("image", "%s: image data ends early or cannot be read (%zd)",
                      http_req_path(dl->req), dl->rd_n);
        s->busy = false;
        dl->failed = true;
    } else if (!dl->failed) {
        dl->off += (uint64_t)dl->rd_n;
        dl->ctx->counters.bytes_downloaded += (uint64_t)dl->rd_n;
        dl->writing++;
        if (http_resp_write(dl->req, s->buf, (size_t)dl->rd_n, dl_written, s) < 0) {
            s->busy = false;
            dl->writing--;
            dl->failed = true;
        }
    } else {
        s->busy = false;
    }
    download_pump(dl);
}

/* Reads the next piece on the thread pool while a buffer is free (one read
 * at a time, so pieces are written in order, while the previous piece is
 * being written); ends the answer once all is sent or the client went
 * away. */
static void
download_pump(struct download *dl)
{
    if (!dl->failed && !dl->reading && dl->off < dl->end) {
        struct dl_slot *s = !dl->slot[0].busy ? &dl->slot[0] :
                            !dl->slot[1].busy ? &dl->slot[1] : NULL;
        if (s) {
            uint64_t want = dl->end - dl->off;
            s->busy = true;
            dl->rd_slot = s;
            dl->rd_want = want > DL_CHUNK ? DL_CHUNK : (size_t)want;
            dl->rd.data = dl;
            dl->reading = true;
            uv_queue_work(dl->ctx->loop, &dl->rd, dl_read_job, dl_read_done);
        }
    }
    if (dl->writing == 0 && !dl->reading && (dl->failed || dl->off >= dl->end))
        download_end(dl);
}

/* Parses a single "bytes=a-b", "bytes=a-" or "bytes=-n" range.  Returns 1
 * with [*from, *to) set, 0 to ignore the header, -1 when unsatisfiable. */
static int
parse_range(const char *h, uint64_t size, uint64_t *from, uint64_t *to)
{
    if (!h || strncmp(h, "bytes=", 6) || strchr(h, ','))
        return 0;
    const char *s = h + 6;
    char *end;
    if (*s == '-') {
        unsigned long long n = strtoull(s + 1, &end, 10);
        if (end == s + 1 || *end)
            return 0;
        if (n == 0 || size == 0)
            return -1;
        *from = n >= size ? 0 : size - n;
        *to = size;
        return 1;
    }
    unsigned long long a = strtoull(s, &end, 10);
    if (end == s || *end != '-')
        return 0;
    s = end + 1;
    unsigned long long b = size ? size - 1 : 0;
    if (*s) {
        b = strtoull(s, &end, 10);
        if (*end || b < a)
            return 0;
        if (b >= size)
            b = size - 1;
    }
    if (a >= size)
        return -1;
    *from = a;
    *to = b + 1;
    return 1;
}

static void
download_loaded(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    struct img_ctx *ctx = ir->ctx;
    if (db_rows(res) == 0) {
        img_error(req, 404, "No image found with ID %s", http_req_param(req, "id"));
        return;
    }
    const char *owner = db_getn(res, 0, "owner");
    const char *vis = db_getn(res, 0, "visibility");
    const char *target = (!strcmp(vis, "public") || !strcmp(vis, "community") ||
                          strcmp(owner, ir->project)) ? NULL : owner;
    if (!ir->node && auth_policy_check("image:download", ir->tok, target, NULL) < 0) {
        img_error(req, 403, "You are not authorized to download this image.");
        return;
    }
    const char *status = db_getn(res, 0, "status");
    if (!strcmp(status, "deactivated") && !ir->admin) {
        img_error(req, 403, "The requested image has been deactivated. Image data download "
                  "is forbidden.");
        return;
    }
    if (strcmp(status, "active") && strcmp(status, "deactivated")) {
        (void)http_respond(req, 204, NULL, NULL, 0);
        return;
    }
    const char *id = db_getn(res, 0, "id");
    struct img_store_reader *r = NULL;
    uint64_t size = 0;
    int rc = ctx->store->ops->open_read(ctx->store, id, &r, &size);
    if (rc < 0) {
        log_error("image", "image %s is %s but its data cannot be opened: %s", id, status,
                  strerror(-rc));
        img_error(req, rc == -ENOENT ? 404 : 500, "The image data is not available.");
        return;
    }
    uint64_t from = 0, to = size;
    int rr = parse_range(http_req_header(req, "range"), size, &from, &to);
    struct arena *mem = http_req_arena(req);
    if (rr < 0) {
        ctx->store->ops->close_read(r);
        http_resp_header(req, "Content-Range", arena_printf(mem, "bytes */%" PRIu64, size));
        img_error(req, 416, "The requested range is not satisfiable.");
        return;
    }
    int fd = ctx->store->ops->read_fd ? ctx->store->ops->read_fd(r) : -ENOTSUP;
    struct download *dl = calloc(1, sizeof *dl);
    if (dl && fd < 0) {
        dl->slot[0].buf = malloc(DL_CHUNK);
        dl->slot[1].buf = malloc(DL_CHUNK);
    }
    if (!dl || (fd < 0 && (!dl->slot[0].buf || !dl->slot[1].buf))) {
        if (dl) {
            free(dl->slot[0].buf);
            free(dl->slot[1].buf);
            free(dl);
        }
        ctx->store->ops->close_read(r);
        img_error(req, 500, "Out of memory.");
        return;
    }
    dl->req = req;
    dl->ctx = ctx;
    dl->r = r;
    dl->off = from;
    dl->end = to;
    dl->slot[0].dl = dl->slot[1].dl = dl;
    ctx->downloads_active++;
    ctx->counters.downloads++;
    const char *checksum = db_getn(res, 0, "checksum");
    if (checksum && rr == 0)
        http_resp_header(req, "Content-MD5", checksum);
    if (rr > 0)
        http_resp_header(req, "Content-Range", arena_printf(mem, "bytes %" PRIu64 "-%" PRIu64
                                                              "/%" PRIu64, from, to - 1, size));
    http_resp_header(req, "Accept-Ranges", "bytes");
    if (fd >= 0) {
        rc = http_respond_file(req, rr > 0 ? 206 : 200, "application/octet-stream", fd, from,
                               to - from, dl_file_done, dl);
        if (rc < 0) {
            ctx->store->ops->close_read(r);
            ctx->downloads_active--;
            free(dl);
            img_error(req, 500, "Cannot start the answer.");
        }
        return;
    }
    if (http_resp_start(req, rr > 0 ? 206 : 200, "application/octet-stream",
                        (int64_t)(to - from)) < 0) {
        ctx->store->ops->close_read(r);
        ctx->downloads_active--;
        free(dl->slot[0].buf);
        free(dl->slot[1].buf);
        free(dl);
        img_error(req, 500, "Cannot start the answer.");
        return;
    }
    if (!strcmp(http_req_method(req), "HEAD"))
        dl->failed = true;     /* Headers only: nothing to read. */
    download_pump(dl);
}

static void
image_download(http_request *req, struct img_req *ir)
{
    img_load_visible(req, ir, http_req_param(req, "id"), NULL, download_loaded, NULL);
}

void
img_data_register(struct img_ctx *ctx)
{
    struct http_route_opts stream = { .flags = HTTP_ROUTE_STREAM, .max_body_bytes = 0 };
    img_route(ctx, "PUT", "/v2/images/{id}/file", image_upload,
              IMG_AUTH_TOKEN | IMG_AUTH_NODE, &stream);
    img_route(ctx, "PUT", "/v2/images/{id}/stage", image_stage, IMG_AUTH_TOKEN, &stream);
    img_route(ctx, "GET", "/v2/images/{id}/file", image_download,
              IMG_AUTH_TOKEN | IMG_AUTH_NODE, NULL);
}
