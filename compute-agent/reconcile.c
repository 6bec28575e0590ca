#include "reconcile.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "strbuf.h"
#include "util.h"

static const char *const state_names[] = {
#define X(e, s) s,
    RC_STATES(X)
#undef X
};

static const char *const action_names[] = {
#define X(e, s) s,
    RC_ACTIONS(X)
#undef X
};

const char *
rc_state_name(enum rc_state s)
{
    return (unsigned)s < RC_N_STATES ? state_names[s] : "?";
}

const char *
rc_action_name(enum rc_action a)
{
    return (unsigned)a < sizeof action_names / sizeof action_names[0] ? action_names[a] : "?";
}

struct reconciler {
    struct hypervisor *hv;
    struct rc_storage storage;
    struct rc_config cfg;
    rc_event_fn ev;
    void *ev_ctx;
    rc_progress_fn progress;
    /* The entries of 'insts', the array itself (get() may move it, the
     * pass forgets entries) and the pool's queue: whoever reads or writes
     * them holds 'mu', and nobody keeps a pointer into the array across
     * it (entries are found again by uuid). */
    pthread_mutex_t mu;
    struct rc_inst *insts;
    size_t n, cap;

    /* The pool (workers > 1): long-lived threads running the creates the
     * passes hand them, beyond the pass that handed them. */
    pthread_t *threads;
    size_t n_threads;
    struct rc_job *head, **tail;     /* Creates not yet taken. */
    unsigned in_flight;              /* Handed and not yet written back. */
    uint64_t finished;               /* Creates written back so far. */
    bool quit;                       /* rc_free(): finish the queue, then end. */
    pthread_cond_t work_cv;          /* A job was queued, or 'quit'. */
    pthread_cond_t idle_cv;          /* 'in_flight' dropped to 0. */
    struct rc_pass_stats pool_st;    /* Steps of the pool, for the next pass's stats. */
    pthread_mutex_t wake_mu;         /* 'wake': set and called under it. */
    rc_wake_fn wake;
};

/* One create handed to the pool: a copy of its desired instance (the
 * desired state may be replaced while it runs). */
struct rc_job {
    struct rc_job *next;
    struct inst_desired d;
    uint64_t now_ms;
};

static void *pool_worker(void *arg);

static enum rc_state
state_of_power(enum power_state p)
{
    switch (p) {
    case POWER_RUNNING: return RC_ACTIVE;
    case POWER_PAUSED: return RC_PAUSED;
    case POWER_SUSPENDED: return RC_SUSPENDED;
    case POWER_SHUTOFF:
    case POWER_CRASHED:
    case POWER_NOSTATE:
    default:
        return RC_STOPPED;
    }
}

static struct rc_step
step(enum rc_action a, bool mark)
{
    return (struct rc_step){ .action = a, .mark = mark };
}

/* The step that moves power state 'have' toward 'want' (one hop; 'mark' when
 * the hop arrives). */
static struct rc_step
power_step(enum power_state have, enum power_state want, const char *reboot,
           bool fresh)
{
    switch (want) {
    case POWER_RUNNING:
        switch (have) {
        case POWER_RUNNING:
            if (reboot[0] && !fresh) {
                struct rc_step s = step(!strcmp(reboot, "hard") ? RCA_REBOOT_HARD : RCA_REBOOT_SOFT, true);
                s.hard = !strcmp(reboot, "hard");
                return s;
            }
            return step(RCA_MARK, true);
        case POWER_PAUSED: return step(RCA_UNPAUSE, true);
        case POWER_SUSPENDED: return step(RCA_RESUME, true);
        case POWER_SHUTOFF:
        case POWER_CRASHED:
        case POWER_NOSTATE:
        default:
            return step(RCA_START, true);
        }
    case POWER_SHUTOFF:
        switch (have) {
        case POWER_SHUTOFF:
        case POWER_CRASHED:
        case POWER_NOSTATE:
            return step(RCA_MARK, true);
        case POWER_RUNNING:
        case POWER_PAUSED:
        case POWER_SUSPENDED:
        default:
            return step(RCA_STOP, true);
        }
    case POWER_PAUSED:
        switch (have) {
        case POWER_PAUSED: return step(RCA_MARK, true);
        case POWER_RUNNING: return step(RCA_PAUSE, true);
        case POWER_SUSPENDED: return step(RCA_RESUME, false);
        case POWER_SHUTOFF:
        case POWER_CRASHED:
        case POWER_NOSTATE:
        default:
            return step(RCA_START, false);
        }
    case POWER_SUSPENDED:
        switch (have) {
        case POWER_SUSPENDED: return step(RCA_MARK, true);
        case POWER_RUNNING:
        case POWER_PAUSED:
            return step(RCA_SUSPEND, true);
        case POWER_SHUTOFF:
        case POWER_CRASHED:
        case POWER_NOSTATE:
        default:
            return step(RCA_START, false);
        }
    case POWER_CRASHED:
    case POWER_NOSTATE:
    default:
        return step(RCA_MARK, true);
    }
}

struct rc_step
rc_decide(struct rc_inst *ri, const struct inst_desired *d,
          const struct inst_actual *a, uint64_t now_ms, const struct rc_config *cfg)
{
    if (a)
        ri->power = a->power;

    /* Not desired at all: delete after the grace period. */
    if (!d) {
        if (!a) {
            ri->state = RC_DELETED;
            ri->orphan_since_ms = 0;
            return step(RCA_NONE, false);
        }
        if (!ri->orphan_since_ms) {
            ri->orphan_since_ms = now_ms ? now_ms : 1;
            ri->state = RC_ORPHANED;
        }
        if (now_ms - ri->orphan_since_ms >= cfg->grace_ms) {
            ri->state = RC_DELETING;
            return step(RCA_DELETE, false);
        }
        ri->state = RC_ORPHANED;
        return step(RCA_NONE, false);
    }

    ri->orphan_since_ms = 0;
    ri->seen_desired = true;
    if (d->deleted) {
        if (ri->state == RC_DELETED && !a)
            return step(RCA_NONE, false);
        ri->state = RC_DELETING;
        return step(RCA_DELETE, false);
    }
    if (ri->attempts_gen != d->generation) {
        ri->attempts_gen = d->generation;
        ri->attempts = 0;
    }
    if (ri->state == RC_ERROR && ri->error_gen == d->generation)
        return step(RCA_NONE, false);
    if (ri->attempts >= cfg->max_attempts) {
        ri->state = RC_ERROR;
        ri->error_gen = d->generation;
        return step(RCA_NONE, false);
    }
    if (!strcmp(d->action, "live_in")) {
        /* A live migration's destination: storage only, once; a guest
         * that arrived (or is arriving: paused by the migration) is the
         * source's doing and only reported until the document changes. */
        if (!a) {
            ri->state = RC_BUILDING;
            return step(ri->live_xml ? RCA_NONE : RCA_PREPARE_LIVE, false);
        }
        ri->generation = a->generation;
        ri->state = state_of_power(a->power);
        ri->fault[0] = 0;
        return step(RCA_NONE, false);
    }
    if (!strcmp(d->action, "live_out")) {
        /* A live migration's source.  Gone: migrated (this pass, or before
         * a restart), reported deleted at the generation.  At the
         * generation: the attempt failed, the guest runs on, the fault
         * stays until the document changes. */
        if (!a) {
            ri->state = RC_DELETED;
            ri->power = POWER_NOSTATE;
            ri->generation = d->generation;
            return step(RCA_NONE, false);
        }
        if (a->generation < d->generation)
            return step(RCA_MIGRATE_LIVE, false);
        ri->generation = a->generation;
        ri->state = state_of_power(a->power);
        return step(RCA_NONE, false);
    }
    if (!a && !strcmp(d->action, "migrate_out")) {
        /* The source of a move without its guest and without an export
         * of this generation (the caller checks): nothing to serve, and
         * creating a blank one would hand the destination an empty disk. */
        ri->state = RC_ERROR;
        ri->error_gen = d->generation;
        bfmt(ri->fault, sizeof ri->fault, "export: the instance is not on this node");
        return step(RCA_NONE, false);
    }
    if (!a) {
        ri->state = RC_BUILDING;
        return step(RCA_CREATE, d->power == POWER_RUNNING || d->power == POWER_SHUTOFF);
    }
    if (a->generation < d->generation) {
        bool fresh = a->generation == 0;   /* Created, first generation not yet recorded. */
        struct rc_step s = power_step(a->power, d->power, d->reboot, fresh);
        /* A created instance already has the flavor of the document. */
        if (!strcmp(d->action, "resize") && !fresh)
            s = step(RCA_RESIZE, true);
        else if (!strcmp(d->action, "rebuild") && !fresh)
            s = step(RCA_REBUILD, true);   /* A created instance has the new image already. */
        else if (!strcmp(d->action, "migrate_out"))
            s = step(RCA_EXPORT, false);   /* The guest is undefined: no mark. */
        else if (!strcmp(d->action, "snapshot") &&
                 (s.action == RCA_MARK || (s.action == RCA_UNPAUSE && a->power == POWER_PAUSED)))
            s = step(RCA_SNAPSHOT, true);   /* Paused: by a snapshot a crash cut short. */
        /* Rescue mode in or out; a created instance is in the document's
         * mode already. */
        if (!fresh && !strcmp(d->action, "rescue"))
            s = step(RCA_RESCUE, true);
        else if (!fresh && !strcmp(d->action, "unrescue"))
            s = step(RCA_UNRESCUE, true);
        if (ri->state == RC_NEW || ri->state == RC_ERROR || ri->state == RC_DELETED)
            ri->state = fresh ? RC_BUILDING : state_of_power(a->power);
        return s;
    }
    ri->generation = a->generation;
    ri->state = state_of_power(a->power);
    ri->fault[0] = 0;
    return step(RCA_NONE, false);
}

/* ---- I/O */

int
rc_new(struct hypervisor *hv, const struct rc_storage *storage,
       const struct rc_config *cfg, rc_event_fn ev, void *ev_ctx,
       struct reconciler **out)
{
    struct reconciler *rc = calloc(1, sizeof *rc);
    if (!rc)
        return -ENOMEM;
    rc->hv = hv;
    rc->storage = *storage;
    rc->cfg = *cfg;
    if (!rc->cfg.max_attempts)
        rc->cfg.max_attempts = 3;
    if (!rc->cfg.port_wait_ms)
        rc->cfg.port_wait_ms = 120000;
    if (!rc->cfg.workers)
        rc->cfg.workers = RC_DEFAULT_WORKERS;
    pthread_mutex_init(&rc->mu, NULL);
    pthread_mutex_init(&rc->wake_mu, NULL);
    pthread_cond_init(&rc->work_cv, NULL);
    pthread_cond_init(&rc->idle_cv, NULL);
    rc->tail = &rc->head;
    rc->ev = ev;
    rc->ev_ctx = ev_ctx;
    if (rc->cfg.workers > 1) {
        rc->threads = calloc(rc->cfg.workers, sizeof *rc->threads);
        while (rc->threads && rc->n_threads < rc->cfg.workers &&
               pthread_create(&rc->threads[rc->n_threads], NULL, pool_worker, rc) == 0)
            rc->n_threads++;
        /* No thread at all: every step in the pass, as with one worker. */
        if (!rc->n_threads)
            rc->cfg.workers = 1;
    }
    *out = rc;
    return 0;
}

void
rc_set_wake(struct reconciler *rc, rc_wake_fn fn)
{
    pthread_mutex_lock(&rc->wake_mu);
    rc->wake = fn;
    pthread_mutex_unlock(&rc->wake_mu);
}

void
rc_drain(struct reconciler *rc, struct rc_pass_stats *pool)
{
    pthread_mutex_lock(&rc->mu);
    while (rc->in_flight)
        pthread_cond_wait(&rc->idle_cv, &rc->mu);
    if (pool) {
        pool->actions += rc->pool_st.actions;
        pool->failures += rc->pool_st.failures;
        memset(&rc->pool_st, 0, sizeof rc->pool_st);
    }
    pthread_mutex_unlock(&rc->mu);
}

bool
rc_idle(struct reconciler *rc)
{
    pthread_mutex_lock(&rc->mu);
    bool idle = rc->in_flight == 0;
    pthread_mutex_unlock(&rc->mu);
    return idle;
}

void
rc_set_progress(struct reconciler *rc, rc_progress_fn fn)
{
    rc->progress = fn;
}

void
rc_free(struct reconciler *rc)
{
    if (!rc)
        return;
    /* The creates in flight and queued finish: none is cut half-way. */
    pthread_mutex_lock(&rc->mu);
    rc->quit = true;
    pthread_cond_broadcast(&rc->work_cv);
    pthread_mutex_unlock(&rc->mu);
    for (size_t i = 0; i < rc->n_threads; i++)
        pthread_join(rc->threads[i], NULL);
    free(rc->threads);
    for (size_t i = 0; i < rc->n; i++)
        free(rc->insts[i].live_xml);
    pthread_cond_destroy(&rc->work_cv);
    pthread_cond_destroy(&rc->idle_cv);
    pthread_mutex_destroy(&rc->wake_mu);
    pthread_mutex_destroy(&rc->mu);
    free(rc->insts);
    free(rc);
}

static struct rc_inst *
find(const struct reconciler *rc, const char *uuid)
{
    for (size_t i = 0; i < rc->n; i++)
        if (!strcmp(rc->insts[i].uuid, uuid))
            return &rc->insts[i];
    return NULL;
}

const struct rc_inst *
rc_find(const struct reconciler *rc, const char *uuid)
{
    return find(rc, uuid);
}

static struct rc_inst *
get(struct reconciler *rc, const char *uuid)
{
    struct rc_inst *ri = find(rc, uuid);
    if (ri)
        return ri;
    if (rc->n == rc->cap) {
        size_t cap = rc->cap ? rc->cap * 2 : 64;
        struct rc_inst *v = realloc(rc->insts, cap * sizeof *v);
        if (!v)
            return NULL;
        rc->insts = v;
        rc->cap = cap;
    }
    ri = &rc->insts[rc->n++];
    memset(ri, 0, sizeof *ri);
    bfmt(ri->uuid, sizeof ri->uuid, "%s", uuid);
    ri->state = RC_NEW;
    ri->power = POWER_NOSTATE;
    return ri;
}

static void
emit(struct reconciler *rc, const char *uuid, const char *event, const char *detail)
{
    if (rc->ev)
        rc->ev(rc->ev_ctx, uuid, event, detail ? detail : "");
}

static const struct inst_actual *
find_actual(const struct inst_actual *v, size_t n, const char *uuid)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].uuid, uuid))
            return &v[i];
    return NULL;
}

/* What the provider defines 'd' from, on storage 'p'. */
static struct hv_create_args
create_args(const struct inst_desired *d, const struct rc_prepared *p)
{
    return (struct hv_create_args){
        .d = d,
        .inst_dir = p->inst_dir,
        .disk_path = p->disk[0] ? p->disk : NULL,
        .disk_format = p->disk_format[0] ? p->disk_format : "qcow2",
        .kernel_path = p->kernel[0] ? p->kernel : NULL,
        .ramdisk_path = p->ramdisk[0] ? p->ramdisk : NULL,
        .rootfs_path = p->rootfs[0] ? p->rootfs : NULL,
        .rescue_disk_path = p->rescue_disk[0] ? p->rescue_disk : NULL,
        .console_log = p->console_log,
    };
}

/* A live migration's destination: the storage of 'd' (the base image in
 * the cache, the overlay on it; kept when there already), and the
 * definition this node would give the guest, kept in 'ri' for the
 * report.  Nothing is defined: the source's migration does that.  With a
 * network agent on the node, not before the ports' devices are there
 * (-EAGAIN, waited for as by a create): the arriving guest opens them
 * (its definition names them, managed='no'), and the report is what lets
 * the source start the move. */
static int
prepare_live(struct reconciler *rc, struct rc_inst *ri, const struct inst_desired *d,
             char *err, size_t errlen)
{
    struct rc_prepared p;
    memset(&p, 0, sizeof p);
    int r = rc->storage.prepare(rc->storage.ctx, d, &p, err, errlen);
    if (r)
        return r;
    if (rc->hv->network_agent && (r = hv_ports_ready(rc->hv, d))) {
        bfmt(err, errlen, "%s", hv_err(rc->hv));
        return r;
    }
    struct hv_create_args args = create_args(d, &p);
    char *xml = hv_migration_dest_xml(rc->hv, &args, d->generation);
    if (!xml) {
        bfmt(err, errlen, "%s", hv_err(rc->hv)[0] ? hv_err(rc->hv) : "no definition");
        return -ENOTSUP;
    }
    ri->live_xml = xml;   /* The one it replaces: freed by the caller (pass_one). */
    bfmt(ri->live_dir, sizeof ri->live_dir, "%s", p.inst_dir);
    emit(rc, d->uuid, "live-prepared", NULL);
    return 0;
}

/* A live migration's source: the running guest goes to the destination
 * of the document.  0 when it went ('*gone'), or when it failed and the
 * failure is recorded: the generation on the guest (so that it is not
 * tried again; the API gives up the move), the reason in ri->fault.
 * -errno only when even that could not be recorded. */
static int
migrate_live(struct reconciler *rc, struct rc_inst *ri, const struct inst_desired *d,
             struct inst_actual *a, bool *gone, char *err, size_t errlen)
{
    struct hypervisor *hv = rc->hv;
    int r;
    hv_clear_error(hv);
    if (!hv->class->migrate_live) {
        hv_set_error(hv, "the %s provider cannot migrate live", hv->class->name);
        r = -ENOTSUP;
    } else {
        struct hv_migrate_args ma = {
            .d = d,
            .dest_uri = d->migration_url,
            .dest_xml = d->migration_xml,
            .inst_dir_dest = d->migration_dir,
        };
        r = hv->class->migrate_live(hv, &ma);
    }
    if (!r) {
        *gone = true;
        ri->state = RC_DELETED;
        ri->power = POWER_NOSTATE;
        ri->generation = d->generation;
        ri->fault[0] = 0;
        emit(rc, d->uuid, "migrated", d->migration_url);
        return 0;
    }
    bfmt(ri->fault, sizeof ri->fault, "live migration: %s",
         hv_err(hv)[0] ? hv_err(hv) : strerror(-r));
    emit(rc, d->uuid, "live-migration-failed", ri->fault);
    if ((r = hv->class->set_generation(hv, d->uuid, d->generation))) {
        bfmt(err, errlen, "%s", hv_err(hv));
        return r;
    }
    a->generation = d->generation;
    ri->generation = d->generation;
    ri->state = state_of_power(a->power);
    return 0;
}

/* Prepares the storage of 'd' and defines the instance from it (create,
 * and redefinition after a resize), started when 'start'. */
static int
define(struct reconciler *rc, const struct inst_desired *d, bool start, char *err,
       size_t errlen)
{
    struct rc_prepared p;
    memset(&p, 0, sizeof p);
    uint64_t t0 = util_now_ns();
    int r = rc->storage.prepare(rc->storage.ctx, d, &p, err, errlen);
    if (r)
        return r;
    char detail[160];
    bfmt(detail, sizeof detail, "prepare_ms=%.1f fetch_ms=%.1f overlay_ms=%.1f fetched=%u cached=%s",
         (double)(util_now_ns() - t0) / 1e6, (double)p.fetch_ns / 1e6,
         (double)p.overlay_ns / 1e6, p.fetched, p.fetched ? "no" : "yes");
    struct hv_create_args args = create_args(d, &p);
    struct hv_timing *tm = hv_timing(rc->hv);
    *tm = (struct hv_timing){ 0 };
    r = rc->hv->class->create(rc->hv, &args, start);
    /* Not while waiting for a port's device: that create comes again
     * every pass. */
    if (r != -EAGAIN)
        emit(rc, d->uuid, "image-ready", detail);
    if (r) {
        bfmt(err, errlen, "%s", hv_err(rc->hv)[0] ? hv_err(rc->hv) : strerror(-r));
        return r;
    }
    bfmt(detail, sizeof detail, "define_ms=%.1f", (double)tm->define_ns / 1e6);
    emit(rc, d->uuid, "defined", detail);
    if (start) {
        bfmt(detail, sizeof detail, "start_ms=%.1f", (double)tm->start_ns / 1e6);
        emit(rc, d->uuid, "started", detail);
    }
    return 0;
}

/* Stops the guest of 'd' unless it is off already (ACPI, then forced
 * after stop_timeout); 'a' follows. */
static int
stop_guest(struct reconciler *rc, const struct inst_desired *d, struct inst_actual *a,
           char *err, size_t errlen)
{
    struct hypervisor *hv = rc->hv;
    if (a->power == POWER_SHUTOFF || a->power == POWER_CRASHED || a->power == POWER_NOSTATE)
        return 0;
    int r = hv->class->stop(hv, d->uuid, rc->cfg.stop_timeout_ms);
    if (r) {
        bfmt(err, errlen, "stop: %s", hv_err(hv)[0] ? hv_err(hv) : strerror(-r));
        return r;
    }
    a->power = POWER_SHUTOFF;
    return 0;
}

/* Cold resize in place: the guest stops (ACPI, then forced), its disk
 * grows, it is redefined with the flavor of the document and started
 * again when it should run.  Each part is idempotent. */
static int
resize(struct reconciler *rc, const struct inst_desired *d, struct inst_actual *a,
       char *err, size_t errlen)
{
    int r;
    if ((r = stop_guest(rc, d, a, err, errlen)))
        return r;
    if (!rc->storage.grow) {
        bfmt(err, errlen, "this node's storage cannot grow disks");
        return -ENOTSUP;
    }
    if ((r = rc->storage.grow(rc->storage.action_ctx, d, err, errlen)))
        return r;
    return define(rc, d, d->power == POWER_RUNNING, err, errlen);
}

/* Rebuild: the guest stops, its disk is dropped and it is defined again
 * from the document, whose image is the new one (a new overlay of the
 * flavor's size, the kernel and ramdisk of that image, the same ports),
 * started when it should run.  A crash at any point repeats it all. */
static int
rebuild(struct reconciler *rc, const struct inst_desired *d, struct inst_actual *a,
        char *err, size_t errlen)
{
    int r;
    if (!rc->storage.wipe) {
        bfmt(err, errlen, "this node's storage cannot rebuild disks");
        return -ENOTSUP;
    }
    if ((r = stop_guest(rc, d, a, err, errlen)))
        return r;
    if ((r = rc->storage.wipe(rc->storage.action_ctx, d, err, errlen)))
        return r;
    return define(rc, d, d->power == POWER_RUNNING, err, errlen);
}

/* Rescue and unrescue: the guest stops (ACPI, then forced) and is
 * defined again in the mode of the document: with d->rescue, booting a
 * rescue overlay with its own disk second (storage.prepare makes the
 * overlay, or keeps the one there); without, on its own disk alone
 * (storage.prepare removes the rescue overlay).  It starts again when it
 * should run.  A crash at any point repeats it all, or (the domain
 * redefined, generation not yet recorded) finds it in the right mode. */
static int
rescue_redefine(struct reconciler *rc, const struct inst_desired *d, struct inst_actual *a,
                char *err, size_t errlen)
{
    int r = stop_guest(rc, d, a, err, errlen);
    return r ? r : define(rc, d, d->power == POWER_RUNNING, err, errlen);
}

/* The source of a move: the guest stops (ACPI, then forced), its overlay
 * is offered to the destination that shows the move's secret (the export
 * mark records the generation), and the guest is undefined, its disk
 * kept.  A crash before the mark repeats it all; after it, the export
 * stands and only the undefine is repeated. */
static int
export_disk(struct reconciler *rc, const struct inst_desired *d, struct inst_actual *a,
            char *err, size_t errlen)
{
    struct hypervisor *hv = rc->hv;
    int r;
    if (!rc->storage.export_disk) {
        bfmt(err, errlen, "this node cannot serve disks to other nodes");
        return -ENOTSUP;
    }
    if ((r = stop_guest(rc, d, a, err, errlen)))
        return r;
    if (!rc->storage.exported || rc->storage.exported(rc->storage.ctx, d->uuid) < d->generation)
        if ((r = rc->storage.export_disk(rc->storage.ctx, d, err, errlen)))
            return r;
    if ((r = hv->class->destroy(hv, d->uuid))) {
        bfmt(err, errlen, "undefine: %s", hv_err(hv)[0] ? hv_err(hv) : strerror(-r));
        return r;
    }
    return 0;
}

/* A snapshot: a running guest is paused only while its disk is copied.
 * A guest found paused while it should run was paused by a snapshot that
 * a crash cut short: it is resumed after the copy too. */
static int
snapshot(struct reconciler *rc, const struct inst_desired *d, struct inst_actual *a,
         char *err, size_t errlen)
{
    struct hypervisor *hv = rc->hv;
    if (!rc->storage.snapshot || !rc->storage.upload) {
        bfmt(err, errlen, "this node cannot take snapshots");
        return -ENOTSUP;
    }
    bool paused = a->power == POWER_PAUSED && d->power == POWER_RUNNING;
    int r;
    if (a->power == POWER_RUNNING) {
        if ((r = hv->class->pause(hv, d->uuid))) {
            bfmt(err, errlen, "pause: %s", hv_err(hv)[0] ? hv_err(hv) : strerror(-r));
            return r;
        }
        a->power = POWER_PAUSED;
        paused = true;
    }
    r = rc->storage.snapshot(rc->storage.action_ctx, d, err, errlen);
    if (paused) {
        int u = hv->class->unpause(hv, d->uuid);
        if (u && !r) {
            bfmt(err, errlen, "unpause: %s", hv_err(hv)[0] ? hv_err(hv) : strerror(-u));
            r = u;
        }
        if (!u)
            a->power = POWER_RUNNING;
    }
    if (r)
        return r;
    return rc->storage.upload(rc->storage.action_ctx, d, err, errlen);
}

/* Carries out one step.  Returns 0 or -errno with 'err' set; on success
 * updates 'a' (a local copy) to what the instance should now be. */
static int
execute(struct reconciler *rc, struct rc_inst *ri, const struct inst_desired *d,
        struct inst_actual *a, bool *present, struct rc_step s, char *err, size_t errlen)
{
    struct hypervisor *hv = rc->hv;
    const char *uuid = ri->uuid;
    int r = 0;
    enum power_state after = a->power;
    const char *event = NULL;

    err[0] = 0;
    switch (s.action) {
    case RCA_NONE:
        return 0;
    case RCA_CREATE: {
        bool start = d->power != POWER_SHUTOFF;
        if (!strcmp(d->action, "migrate_in")) {
            /* The disk comes from the source of the move. */
            if (!rc->storage.import_disk) {
                bfmt(err, errlen, "this node cannot take disks from other nodes");
                return -ENOTSUP;
            }
            if ((r = rc->storage.import_disk(rc->storage.import_ctx, d, err, errlen)))
                return r;
            /* A resize to another host: the new flavor's disk may be larger. */
            if (rc->storage.grow &&
                (r = rc->storage.grow(rc->storage.action_ctx, d, err, errlen)))
                return r;
        }
        r = define(rc, d, start, err, errlen);
        if (r)
            return r;
        after = start ? POWER_RUNNING : POWER_SHUTOFF;
        event = "created";
        *present = true;
        bfmt(a->uuid, sizeof a->uuid, "%s", uuid);
        a->generation = 0;
        break;
    }
    case RCA_RESIZE:
        r = resize(rc, d, a, err, errlen);
        if (r)
            return r;
        after = d->power == POWER_RUNNING ? POWER_RUNNING : POWER_SHUTOFF;
        event = "resized";
        break;
    case RCA_REBUILD:
        r = rebuild(rc, d, a, err, errlen);
        if (r)
            return r;
        after = d->power == POWER_RUNNING ? POWER_RUNNING : POWER_SHUTOFF;
        event = "rebuilt";
        break;
    case RCA_RESCUE:
    case RCA_UNRESCUE:
        r = rescue_redefine(rc, d, a, err, errlen);
        if (r)
            return r;
        after = d->power == POWER_RUNNING ? POWER_RUNNING : POWER_SHUTOFF;
        event = s.action == RCA_RESCUE ? "rescued" : "unrescued";
        break;
    case RCA_EXPORT:
        r = export_disk(rc, d, a, err, errlen);
        if (r)
            return r;
        *present = false;
        ri->generation = d->generation;
        ri->state = RC_STOPPED;
        ri->power = POWER_SHUTOFF;
        emit(rc, uuid, "migration-source-ready", NULL);
        return 0;
    case RCA_PREPARE_LIVE:
        return prepare_live(rc, ri, d, err, errlen);
    case RCA_MIGRATE_LIVE: {
        bool gone = false;
        r = migrate_live(rc, ri, d, a, &gone, err, errlen);
        if (gone)
            *present = false;
        return r;
    }
    case RCA_SNAPSHOT:
        r = snapshot(rc, d, a, err, errlen);
        if (r)
            return r;
        after = a->power;
        event = "snapshot-uploaded";
        break;
    case RCA_START:
        r = hv->class->start(hv, uuid);
        after = POWER_RUNNING;
        event = "started";
        break;
    case RCA_STOP:
        r = hv->class->stop(hv, uuid, rc->cfg.stop_timeout_ms);
        after = POWER_SHUTOFF;
        event = "stopped";
        break;
    case RCA_REBOOT_SOFT:
    case RCA_REBOOT_HARD:
        r = hv->class->reboot(hv, uuid, s.action == RCA_REBOOT_HARD);
        after = POWER_RUNNING;
        event = "rebooted";
        break;
    case RCA_PAUSE:
        r = hv->class->pause(hv, uuid);
        after = POWER_PAUSED;
        event = "paused";
        break;
    case RCA_UNPAUSE:
        r = hv->class->unpause(hv, uuid);
        after = POWER_RUNNING;
        event = "unpaused";
        break;
    case RCA_SUSPEND:
        r = hv->class->suspend(hv, uuid);
        after = POWER_SUSPENDED;
        event = "suspended";
        break;
    case RCA_RESUME:
        r = hv->class->resume(hv, uuid);
        after = POWER_RUNNING;
        event = "resumed";
        break;
    case RCA_MARK:
        break;
    case RCA_DELETE:
        r = hv->class->destroy(hv, uuid);
        if (!r)
            r = rc->storage.remove(rc->storage.ctx, uuid, err, errlen);
        else
            bfmt(err, errlen, "%s", hv_err(hv));
        if (!r) {
            *present = false;
            emit(rc, uuid, d ? "deleted" : "orphan-deleted", NULL);
        }
        return r;
    }
    if (r) {
        bfmt(err, errlen, "%s", hv_err(hv)[0] ? hv_err(hv) : strerror(-r));
        return r;
    }
    a->power = after;
    if (event)
        emit(rc, uuid, event, NULL);
    if (s.mark && d) {
        r = hv->class->set_generation(hv, uuid, d->generation);
        if (r) {
            bfmt(err, errlen, "%s", hv_err(hv));
            return r;
        }
        a->generation = d->generation;
    }
    return 0;
}

/* The steps of one instance in this pass, on a copy 'ri' of the
 * reconciler's memory of it (a worker's or the pass's), written back by
 * the caller under rc->mu.  A live_xml it drops or replaces is the
 * caller's to free (pass_one). */
static void
reconcile_one(struct reconciler *rc, struct rc_inst *ri, const struct inst_desired *d,
              struct inst_actual *a_in, uint64_t now_ms, struct rc_pass_stats *st)
{
    const char *uuid = ri->uuid;
    struct inst_actual a = { 0 };
    bool present = a_in != NULL;
    if (a_in)
        a = *a_in;
    enum power_state before = ri->power;
    enum rc_state state_before = ri->state;
    /* A live migration's destination no longer: its prepared definition
     * is not reported any more. */
    if (ri->live_xml && (!d || strcmp(d->action, "live_in"))) {
        ri->live_xml = NULL;   /* Freed by the caller (pass_one). */
        ri->live_dir[0] = 0;
    }

    /* The disk is served to a move's destination only while the document
     * says so (before anything could start the guest again). */
    if (d && strcmp(d->action, "migrate_out") && rc->storage.unexport_disk)
        rc->storage.unexport_disk(rc->storage.ctx, uuid);
    /* The source of a move, done: the guest undefined, its disk exported
     * for this generation.  Reported stopped at the generation. */
    if (d && !d->deleted && !present && !strcmp(d->action, "migrate_out") &&
        rc->storage.exported && rc->storage.exported(rc->storage.ctx, uuid) >= d->generation) {
        ri->state = RC_STOPPED;
        ri->power = POWER_SHUTOFF;
        ri->generation = d->generation;
        ri->fault[0] = 0;
        ri->seen_desired = true;
        return;
    }

    /* A guest that powered itself off (or crashed) after its generation
     * was applied: reported, not undone. */
    if (d && !d->deleted && present && a.generation >= d->generation &&
        before == POWER_RUNNING && (a.power == POWER_SHUTOFF || a.power == POWER_CRASHED))
        emit(rc, uuid, "power-off-by-guest", power_state_name(a.power));

    /* A few steps per pass (create, then pause...), each decided afresh. */
    for (int hop = 0; hop < 3; hop++) {
        struct rc_step s = rc_decide(ri, d, present ? &a : NULL, now_ms, &rc->cfg);
        if (s.action == RCA_NONE) {
            if (ri->state == RC_ORPHANED && state_before != RC_ORPHANED)
                emit(rc, uuid, "orphan-found", NULL);
            if (ri->state == RC_ERROR && state_before != RC_ERROR)
                emit(rc, uuid, "error", ri->fault);
            break;
        }
        char err[256];
        st->actions++;
        int r = execute(rc, ri, d, &a, &present, s, err, sizeof err);
        /* -EEXIST on a create: another node's copy of this instance still
         * holds its uuid on a hypervisor both nodes share (a move's
         * other end, about to undefine it): wait as for a port. */
        if ((r == -EAGAIN || (r == -EEXIST && s.action == RCA_CREATE)) && d && !d->deleted) {
            /* Not a failure: the network agent has not made a device yet. */
            st->actions--;
            bfmt(ri->fault, sizeof ri->fault, "%s", err);
            if (!ri->wait_since_ms) {
                ri->wait_since_ms = now_ms ? now_ms : 1;
                emit(rc, uuid, "waiting-for-port", err);
            } else if (now_ms - ri->wait_since_ms >= rc->cfg.port_wait_ms) {
                bfmt(ri->fault, sizeof ri->fault, "%s: gave up after %llu s: %s",
                     rc_action_name(s.action),
                     (unsigned long long)(rc->cfg.port_wait_ms / 1000), err);
                ri->state = RC_ERROR;
                ri->error_gen = d->generation;
                ri->wait_since_ms = 0;
                emit(rc, uuid, "error", ri->fault);
            }
            break;
        }
        ri->wait_since_ms = 0;
        if (r) {
            st->failures++;
            ri->attempts++;
            bfmt(ri->fault, sizeof ri->fault, "%s: %s", rc_action_name(s.action), err);
            emit(rc, uuid, "step-failed", ri->fault);
            if (d && !d->deleted && ri->attempts >= rc->cfg.max_attempts) {
                ri->state = RC_ERROR;
                ri->error_gen = d->generation;
                emit(rc, uuid, "error", ri->fault);
            }
            break;
        }
        if (s.action == RCA_EXPORT || s.action == RCA_MIGRATE_LIVE)
            break;
        if (s.action == RCA_DELETE) {
            ri->state = RC_DELETED;
            ri->power = POWER_NOSTATE;
            break;
        }
        ri->power = a.power;
    }
    /* Interfaces attached or detached since create (os-interface). */
    if (d && !d->deleted && present && rc->hv->class->sync_ports &&
        ri->state != RC_BUILDING && ri->state != RC_ERROR && ri->state != RC_DELETING) {
        int r = rc->hv->class->sync_ports(rc->hv, d);
        if (r > 0)
            emit(rc, uuid, "ports-changed", NULL);
        if (r < 0 && strncmp(ri->ports_fault, hv_err(rc->hv), sizeof ri->ports_fault - 1)) {
            bfmt(ri->ports_fault, sizeof ri->ports_fault, "%s", hv_err(rc->hv));
            emit(rc, uuid, r == -EAGAIN ? "waiting-for-port" : "step-failed", hv_err(rc->hv));
        } else if (r >= 0) {
            ri->ports_fault[0] = 0;
        }
    }
    if (present && a_in)
        *a_in = a;
}

/* Whether the instance the pass settles on a power state (so that its
 * owner may report it at once). */
static bool
settled(enum rc_state s)
{
    return s == RC_ACTIVE || s == RC_STOPPED || s == RC_PAUSED || s == RC_SUSPENDED;
}

/* Whether the steps of desired instance 'd' are independent of every
 * other instance's, so that a worker may run them beside others: a
 * create (nothing on the hypervisor, wanted, not given up for this
 * generation) that involves no other node and no live migration's
 * definition.  Everything else (power steps, deletes, resizes, snapshots,
 * moves) runs after them on the pass's thread, in the order of the
 * desired state. */
static bool
independent(const struct rc_inst *ri, const struct inst_desired *d, const struct inst_actual *a)
{
    return !a && !d->deleted && !ri->live_xml &&
           !(ri->state == RC_ERROR && ri->error_gen == d->generation) &&
           strcmp(d->action, "migrate_in") &&
           strcmp(d->action, "migrate_out") && strcmp(d->action, "live_in") &&
           strcmp(d->action, "live_out");
}

/* One thread of the pool: takes the next create handed by a pass, runs
 * it on a copy of the instance's entry, writes the copy back by uuid,
 * reports the instance when it settled and asks its owner for another
 * pass (the steps after the create, the observed state).  Ends when the
 * reconciler is freed and nothing is left in the queue. */
static void *
pool_worker(void *arg)
{
    struct reconciler *rc = arg;
    pthread_mutex_lock(&rc->mu);
    for (;;) {
        while (!rc->head && !rc->quit)
            pthread_cond_wait(&rc->work_cv, &rc->mu);
        struct rc_job *job = rc->head;
        if (!job)
            break;
        rc->head = job->next;
        if (!rc->head)
            rc->tail = &rc->head;
        /* A busy entry is never forgotten nor handed twice. */
        struct rc_inst *entry = find(rc, job->d.uuid);
        if (!entry)
            abort();
        struct rc_inst ri = *entry;
        pthread_mutex_unlock(&rc->mu);

        struct rc_pass_stats st = { 0 };
        bool building = ri.state == RC_NEW || ri.state == RC_BUILDING;
        reconcile_one(rc, &ri, &job->d, NULL, job->now_ms, &st);

        pthread_mutex_lock(&rc->mu);
        ri.busy = false;
        ri.busy_end = ++rc->finished;
        entry = find(rc, job->d.uuid);
        if (!entry)
            abort();
        *entry = ri;
        rc->pool_st.actions += st.actions;
        rc->pool_st.failures += st.failures;
        if (--rc->in_flight == 0)
            pthread_cond_broadcast(&rc->idle_cv);
        pthread_mutex_unlock(&rc->mu);
        free(job);

        if (rc->progress && building && settled(ri.state))
            rc->progress(rc->ev_ctx);
        pthread_mutex_lock(&rc->wake_mu);
        if (rc->wake)
            rc->wake(rc->ev_ctx);
        pthread_mutex_unlock(&rc->wake_mu);
        pthread_mutex_lock(&rc->mu);
    }
    pthread_mutex_unlock(&rc->mu);
    return NULL;
}

/* Hands the independent creates of 'ds' to the pool and marks them, and
 * every instance busy in the pool (or whose create finished after the
 * pass listed the provider's instances: the list does not show it yet),
 * in 'skip'.  A job that cannot be allocated stays for the pass. */
static void
hand_creates(struct reconciler *rc, const struct desired_set *ds, struct inst_actual *const *a_of,
             uint64_t listed, uint64_t now_ms, bool *skip)
{
    pthread_mutex_lock(&rc->mu);
    for (size_t i = 0; i < ds->n; i++) {
        const struct inst_desired *d = &ds->insts[i];
        struct rc_inst *ri = find(rc, d->uuid);
        if (!ri && (a_of[i] || d->deleted || !(ri = get(rc, d->uuid))))
            continue;
        if (ri->busy || ri->busy_end > listed) {
            skip[i] = true;
            continue;
        }
        if (!independent(ri, d, a_of[i]))
            continue;
        struct rc_job *job = malloc(sizeof *job);
        if (!job)
            continue;
        job->next = NULL;
        job->d = *d;
        job->d.migration_xml = NULL;   /* Only for "live_out", never independent. */
        job->now_ms = now_ms;
        *rc->tail = job;
        rc->tail = &job->next;
        ri->busy = true;
        rc->in_flight++;
        skip[i] = true;
    }
    pthread_cond_broadcast(&rc->work_cv);
    pthread_mutex_unlock(&rc->mu);
}

/* The steps of one instance on the pass's thread: on a copy of its
 * entry, written back under the lock (the pool's threads meanwhile
 * report and update other entries).  Nothing for a busy instance.
 * Returns whether the instance was building and settled. */
static bool
pass_one(struct reconciler *rc, const char *uuid, const struct inst_desired *d,
         struct inst_actual *a, uint64_t now_ms, struct rc_pass_stats *st)
{
    pthread_mutex_lock(&rc->mu);
    struct rc_inst *entry = get(rc, uuid);
    if (!entry || entry->busy) {
        pthread_mutex_unlock(&rc->mu);
        return false;
    }
    struct rc_inst ri = *entry;
    pthread_mutex_unlock(&rc->mu);
    char *xml_before = ri.live_xml;
    bool building = ri.state == RC_NEW || ri.state == RC_BUILDING;
    reconcile_one(rc, &ri, d, a, now_ms, st);
    pthread_mutex_lock(&rc->mu);
    entry = find(rc, uuid);
    if (entry)
        *entry = ri;
    pthread_mutex_unlock(&rc->mu);
    /* rc_observed() copies live_xml under the lock: no reader holds it. */
    if (xml_before != ri.live_xml)
        free(xml_before);
    return building && settled(ri.state);
}

int
rc_pass(struct reconciler *rc, const struct desired_set *ds, uint64_t now_ms,
        struct rc_pass_stats *stats)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct rc_pass_stats st = { 0 };
    struct inst_actual *act = NULL;
    size_t n_act = 0;
    /* Creates the pool finishes from now on may not be in the list. */
    pthread_mutex_lock(&rc->mu);
    uint64_t listed = rc->finished;
    st.actions = rc->pool_st.actions;
    st.failures = rc->pool_st.failures;
    memset(&rc->pool_st, 0, sizeof rc->pool_st);
    pthread_mutex_unlock(&rc->mu);
    int r = rc->hv->class->list(rc->hv, &act, &n_act);
    if (r)
        return r;
    st.desired = (unsigned)ds->n;
    st.actual = (unsigned)n_act;

    /* What the provider has of each desired instance, and which of them
     * are the pool's (handed now or still in flight). */
    struct inst_actual **a_of = calloc(ds->n ? ds->n : 1, sizeof *a_of);
    bool *done = calloc(ds->n ? ds->n : 1, sizeof *done);
    if (!a_of || !done) {
        free(a_of);
        free(done);
        free(act);
        return -ENOMEM;
    }
    for (size_t i = 0; i < ds->n; i++)
        a_of[i] = (struct inst_actual *)find_actual(act, n_act, ds->insts[i].uuid);
    if (rc->n_threads)
        hand_creates(rc, ds, a_of, listed, now_ms, done);
    for (size_t i = 0; i < ds->n; i++) {
        if (done[i])
            continue;
        const struct inst_desired *d = &ds->insts[i];
        if (pass_one(rc, d->uuid, d, a_of[i], now_ms, &st) && rc->progress && i + 1 < ds->n)
            rc->progress(rc->ev_ctx);
    }
    free(done);
    free(a_of);
    for (size_t i = 0; i < n_act; i++)
        if (!desired_set_find(ds, act[i].uuid))
            pass_one(rc, act[i].uuid, NULL, &act[i], now_ms, &st);

    /* Storage nobody owns any more: left by a crash between undefine and
     * removal, or by an orphan deleted earlier. */
    char (*dirs)[37] = NULL;
    size_t n_dirs = 0;
    if (rc->storage.list && rc->storage.list(rc->storage.ctx, &dirs, &n_dirs) == 0) {
        for (size_t i = 0; i < n_dirs; i++) {
            const struct inst_desired *d = desired_set_find(ds, dirs[i]);
            if (d && !d->deleted)
                continue;
            pthread_mutex_lock(&rc->mu);
            const struct rc_inst *ri = find(rc, dirs[i]);
            /* The pool's, or present unless this pass just deleted it. */
            bool keep = (ri && (ri->busy || ri->busy_end > listed)) ||
                        (find_actual(act, n_act, dirs[i]) && (!ri || ri->state != RC_DELETED));
            pthread_mutex_unlock(&rc->mu);
            if (keep)
                continue;
            char err[256];
            if (rc->storage.remove(rc->storage.ctx, dirs[i], err, sizeof err) == 0)
                emit(rc, dirs[i], "storage-removed", NULL);
        }
        free(dirs);
    }

    /* Forget instances that are gone and not desired (never the pool's). */
    pthread_mutex_lock(&rc->mu);
    for (size_t i = 0; i < rc->n;) {
        struct rc_inst *ri = &rc->insts[i];
        const struct inst_desired *d = desired_set_find(ds, ri->uuid);
        if (!ri->busy && ri->busy_end <= listed &&
            ((ri->state == RC_DELETED && !d) ||
             (!d && !find_actual(act, n_act, ri->uuid) && ri->state != RC_DELETED))) {
            free(ri->live_xml);
            rc->insts[i] = rc->insts[--rc->n];
            continue;
        }
        i++;
    }
    pthread_mutex_unlock(&rc->mu);
    free(act);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    st.duration_ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ULL +
                     (uint64_t)(t1.tv_nsec - t0.tv_nsec);
    if (stats)
        *stats = st;
    return 0;
}

int
rc_observed(struct reconciler *rc, struct rc_observed **out, size_t *n)
{
    pthread_mutex_lock(&rc->mu);
    *out = calloc(rc->n ? rc->n : 1, sizeof **out);
    if (!*out) {
        pthread_mutex_unlock(&rc->mu);
        return -ENOMEM;
    }
    for (size_t i = 0; i < rc->n; i++) {
        const struct rc_inst *ri = &rc->insts[i];
        struct rc_observed *o = &(*out)[i];
        bfmt(o->uuid, sizeof o->uuid, "%s", ri->uuid);
        o->state = ri->state;
        o->power = ri->power;
        o->generation = ri->generation;
        bfmt(o->fault, sizeof o->fault, "%s", ri->fault);
        if (ri->live_xml) {
            o->live_xml = strdup(ri->live_xml);
            o->live_dir = strdup(ri->live_dir);
            if (!o->live_xml || !o->live_dir) {
                *n = i + 1;
                pthread_mutex_unlock(&rc->mu);
                rc_observed_free(*out, *n);
                *out = NULL;
                *n = 0;
                return -ENOMEM;
            }
        }
    }
    *n = rc->n;
    pthread_mutex_unlock(&rc->mu);
    return 0;
}

void
rc_observed_free(struct rc_observed *obs, size_t n)
{
    if (!obs)
        return;
    for (size_t i = 0; i < n; i++) {
        free(obs[i].live_xml);
        free(obs[i].live_dir);
    }
    free(obs);
}
