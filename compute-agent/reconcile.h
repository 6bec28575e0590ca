/* The reconciler: makes the node's instances match the desired state.
 *
 * One pass compares the desired set (from the API, or a file) with what the
 * hypervisor provider lists (Nimbus-owned instances only) and, per
 * instance, decides one step and carries it out:
 *
 *   desired, missing            prepare storage (image cache), create
 *   desired, generation newer   apply the wanted power state (start, stop,
 *                               reboot, pause, suspend...), then record the
 *                               generation in the instance's metadata
 *   desired, generation newer   with action "resize": stop, grow the disk,
 *   and an action              redefine with the new flavor, start again as
 *                              wanted; "snapshot": pause a running guest,
 *                              copy its disk, resume, upload the copy;
 *                              "rebuild": stop, drop the disk, define
 *                              from the document's (new) image, start
 *                              again as wanted; "rescue"/"unrescue":
 *                              stop, define in the mode the document's
 *                              "rescue" says, start (storage.prepare
 *                              makes the rescue overlay, or removes it)
 *   desired, generation applied nothing: a guest that powered itself off is
 *                               reported SHUTOFF, not restarted (Nova's rule)
 *   desired, generation newer   with action "migrate_out" (the source of a
 *   and a move                 move): stop, mark the overlay exported for
 *                              the generation (the console proxy serves it
 *                              to the destination), undefine the guest
 *                              (the disk stays: a revert defines it again
 *                              from it; the destination may define the
 *                              same uuid on a libvirtd both share);
 *                              "migrate_in" (the destination, nothing here
 *                              yet): pull the overlay from the source,
 *                              then create as usual
 *   desired, live_in (a live    make the storage (base in the cache, the
 *   migration's destination)   overlay), never define: the definition this
 *                              node would give the guest is reported (the
 *                              source migrates the guest here); a guest
 *                              that arrived is only reported
 *   desired, generation newer   with action "live_out" (the source): the
 *                              provider's migrate_live to the destination;
 *                              done: the guest is gone, reported deleted at
 *                              the generation; failed: the generation is
 *                              recorded on the guest (not tried again), it
 *                              runs on, the reason is its fault
 *   desired with deleted=true   destroy, remove storage
 *   not desired, present        after a grace period, destroy
 *   storage of nothing          removed (a crash between undefine and rm)
 *
 * A step the provider answers with -EAGAIN (a port's host device is not
 * there yet: the network agent of the node makes it) is not a failure: the
 * instance stays as it is, the step is tried again on the next pass, and a
 * "waiting-for-port" event says why; after port_wait_ms it is ERROR with
 * the provider's message as the fault.
 *
 * Every step is idempotent and the decision depends only on the desired
 * state, the provider's list and the instance's own metadata, never on
 * memory that a kill -9 would lose (the grace period and the retry counts
 * start over after a restart, on the safe side).  The per-instance state
 * machine (rc_decide) is a pure function of its inputs and the time passed
 * in; rc_pass() does the I/O.  Passes block: the daemon runs them on a
 * worker thread, one at a time.
 *
 * The creates (desired, not on the hypervisor, not part of a move or a
 * live migration) are independent of each other and of every other
 * instance.  With rc_config.workers > 1 the reconciler owns a pool of
 * that many long-lived threads: a pass hands each create to the pool,
 * marks the instance busy and goes on at once; the next passes leave a
 * busy instance alone (no step, no clean-up of its storage, not
 * forgotten), so that a new desired state starts its own creates without
 * waiting for the ones in flight.  A thread of the pool runs the create
 * on a copy of the instance's entry, writes it back (the entry is no
 * longer busy), reports the instance when it settled (rc_set_progress)
 * and asks for another pass (rc_set_wake), which takes the steps after
 * the create (a pause, a delete asked meanwhile) and reports.  Every
 * other step runs on the pass's thread, in the order of the desired
 * state, as all of them do with one worker.  Providers and storage must
 * therefore allow operations on different instances at once
 * (hypervisor.h). */
#ifndef NIMBUS_AGENT_RECONCILE_H
#define NIMBUS_AGENT_RECONCILE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypervisor.h"
#include "instance.h"

/* Instance states (Nova's vm_state plus the agent's own ORPHANED). */
#define RC_STATES(X)                                                       \
    X(NEW, "new")               /* Desired, not yet looked at. */          \
    X(BUILDING, "building")     /* Being created (retried on failure). */  \
    X(ACTIVE, "active")                                                    \
    X(STOPPED, "stopped")                                                  \
    X(PAUSED, "paused")                                                    \
    X(SUSPENDED, "suspended")                                              \
    X(ERROR, "error")           /* Gave up until the generation changes. */\
    X(ORPHANED, "orphaned")     /* Present, not desired: grace period. */  \
    X(DELETING, "deleting")                                                \
    X(DELETED, "deleted")

enum rc_state {
#define X(e, s) RC_##e,
    RC_STATES(X)
#undef X
    RC_N_STATES
};
const char *rc_state_name(enum rc_state s);

/* The one step decided for an instance. */
#define RC_ACTIONS(X)                                                      \
    X(NONE, "none")                                                        \
    X(CREATE, "create")                                                    \
    X(START, "start")                                                      \
    X(STOP, "stop")                                                        \
    X(REBOOT_SOFT, "reboot-soft")                                          \
    X(REBOOT_HARD, "reboot-hard")                                          \
    X(PAUSE, "pause")                                                      \
    X(UNPAUSE, "unpause")                                                  \
    X(SUSPEND, "suspend")                                                  \
    X(RESUME, "resume")                                                    \
    X(MARK, "mark")             /* Only record the generation. */          \
    X(RESIZE, "resize")         /* Stop, grow the disk, redefine, start. */ \
    X(SNAPSHOT, "snapshot")     /* Copy the disk (paused), upload it. */   \
    X(REBUILD, "rebuild")       /* Stop, new disk from the image, redefine. */ \
    X(RESCUE, "rescue")         /* Stop, redefine on the rescue image, start. */ \
    X(UNRESCUE, "unrescue")     /* Stop, redefine on the own disk, start. */ \
    X(EXPORT, "export")         /* Stop, serve the disk to the destination. */ \
    X(PREPARE_LIVE, "prepare-live") /* Live migration's destination: storage only. */ \
    X(MIGRATE_LIVE, "migrate-live") /* Live migration's source: migrate_live. */ \
    X(DELETE, "delete")

enum rc_action {
#define X(e, s) RCA_##e,
    RC_ACTIONS(X)
#undef X
};
const char *rc_action_name(enum rc_action a);

struct rc_config {
    uint64_t grace_ms;           /* Before deleting an instance not desired. Default 60 s. */
    unsigned max_attempts;       /* Failed steps per generation before ERROR. Default 3. */
    unsigned stop_timeout_ms;    /* ACPI shutdown before a forced stop. Default 10 s. */
    uint64_t port_wait_ms;       /* Waiting for the network agent's devices before ERROR. Default 120 s. */
    /* Threads of the pool: the creates in flight at once; 0:
     * RC_DEFAULT_WORKERS; 1: no pool, every step one after the other on
     * the pass's thread. */
    unsigned workers;
};

#define RC_DEFAULT_WORKERS 20

/* Per-instance memory of the reconciler. */
struct rc_inst {
    char uuid[37];
    enum rc_state state;
    enum power_state power;      /* Last observed. */
    uint64_t generation;         /* Last generation seen applied. */
    uint64_t orphan_since_ms;    /* 0: not orphaned. */
    unsigned attempts;           /* Failed steps for 'attempts_gen'. */
    uint64_t attempts_gen;
    uint64_t error_gen;          /* Generation that ended in ERROR. */
    bool seen_desired;
    uint64_t wait_since_ms;      /* 0: not waiting for a port device. */
    char ports_fault[128];       /* Last failure of syncing ports, reported once. */
    char fault[256];
    /* The destination of a live migration, prepared: the definition this
     * node gives the guest (malloc'd) and its instance directory, reported
     * for the source.  NULL/"" otherwise. */
    char *live_xml;
    char live_dir[512];
    /* Handed to the pool: its create is in flight, passes leave it alone. */
    bool busy;
    /* The pool's count of finished creates when this one finished (0:
     * none): a pass that listed the provider's instances before it
     * leaves the instance alone too, as its list may not show it. */
    uint64_t busy_end;
};

struct rc_step {
    enum rc_action action;
    bool mark;                   /* Record d->generation after the action succeeds. */
    bool hard;                   /* For reboots. */
};

/* The state machine: decides the next step for an instance from what is
 * desired ('d', NULL when not desired), what the provider reports ('a',
 * NULL when absent) and the time.  Updates ri's state and timers; no I/O. */
struct rc_step rc_decide(struct rc_inst *ri, const struct inst_desired *d,
                         const struct inst_actual *a, uint64_t now_ms,
                         const struct rc_config *cfg);

/* Storage of instances: disks, kernels, container layers, console logs.
 * The daemon's implementation (storage.c) uses the image cache; unit tests
 * use a fake. */
struct rc_prepared {
    char inst_dir[PATH_MAX];
    char disk[PATH_MAX];         /* "" for none. */
    char disk_format[8];
    char kernel[PATH_MAX];       /* "" for none. */
    char ramdisk[PATH_MAX];
    char rootfs[PATH_MAX];       /* Containers. */
    char rescue_disk[PATH_MAX];  /* In rescue mode: the rescue overlay (first disk); "" else. */
    char console_log[PATH_MAX];
    /* For the timing event: images fetched from the store (0: all were in
     * the cache), time spent making them present (fetch, hash check,
     * unpacking) and making the overlay, in nanoseconds. */
    unsigned fetched;
    uint64_t fetch_ns, overlay_ns;
};

struct rc_storage {
    int (*prepare)(void *ctx, const struct inst_desired *d, struct rc_prepared *out,
                   char *err, size_t errlen);
    int (*remove)(void *ctx, const char *uuid, char *err, size_t errlen);
    /* Uuids of the instances that have storage; *out malloc'd. */
    int (*list)(void *ctx, char (**out)[37], size_t *n);
    void *ctx;
    /* Optional actions (NULL: the action fails with -ENOTSUP), called with
     * 'action_ctx'.  grow: makes the instance's disk at least d->disk_gb,
     * never smaller, keeping its data (resize).  snapshot: copies the disk
     * as it is now to a file of the instance (the caller pauses a running
     * guest around it); upload: sends that copy to image
     * d->snapshot_image and removes it.  wipe: removes the instance's
     * disk (rebuild: 'prepare' then makes a new one from d->image). */
    int (*grow)(void *ctx, const struct inst_desired *d, char *err, size_t errlen);
    int (*snapshot)(void *ctx, const struct inst_desired *d, char *err, size_t errlen);
    int (*upload)(void *ctx, const struct inst_desired *d, char *err, size_t errlen);
    int (*wipe)(void *ctx, const struct inst_desired *d, char *err, size_t errlen);
    void *action_ctx;
    /* Moves between nodes (optional; called with 'ctx').  export_disk: the
     * stopped instance's overlay may be served to the destination that
     * shows the secret whose SHA-256 is d->migration_secret, and the
     * export stands for generation d->generation; exported: that
     * generation (0: not exported); unexport_disk: no longer served
     * (idempotent, cheap: called on every pass for instances not being
     * moved out). */
    int (*export_disk)(void *ctx, const struct inst_desired *d, char *err, size_t errlen);
    uint64_t (*exported)(void *ctx, const char *uuid);
    void (*unexport_disk)(void *ctx, const char *uuid);
    /* import_disk (optional, called with 'import_ctx'): the overlay of a
     * moving instance pulled from its source, checked and put on this
     * node's cached base, before 'prepare' (which then keeps it). */
    int (*import_disk)(void *ctx, const struct inst_desired *d, char *err, size_t errlen);
    void *import_ctx;
};

/* What the agent reports for one instance. */
struct rc_observed {
    char uuid[37];
    enum rc_state state;
    enum power_state power;
    uint64_t generation;
    char fault[256];
    /* A prepared live migration's destination (copies of rc_inst.live_xml,
     * live_dir, freed by rc_observed_free()); NULL otherwise. */
    char *live_xml;
    char *live_dir;
};

/* Called for every event worth telling the API (and the log):
 * "created", "started", "stopped", "rebooted", "paused", "unpaused",
 * "suspended", "resumed", "deleted", "power-off-by-guest",
 * "step-failed", "error", "orphan-found", "orphan-deleted",
 * "storage-removed", "waiting-for-port", "ports-changed", "rescued",
 * "unrescued", "live-prepared" (a live migration's destination is ready),
 * "migrated" (the guest now runs on the live migration's destination),
 * "live-migration-failed" (the reason; the guest still runs here).
 *
 * Timing events, each time an instance is defined (create, resize,
 * rebuild), for bench/boot_bench.py and people reading the log, sent
 * together once the provider's create returned (not while it waits for a
 * port's device): "image-ready" ("prepare_ms=12.3 fetch_ms=10.1
 * overlay_ms=2.0 fetched=1 cached=no": the storage step, fetch_ms being
 * all of it but the overlay; cached=yes when no image was fetched),
 * "defined" ("define_ms=4.5": the provider's define) and, when it was
 * started too, "started" ("start_ms=80.2": the provider's start).  The
 * event's own time is when it was sent: the create began at the
 * "started" event's time less the three durations. */
/* Called from the pass's thread and from the pool's, possibly at once
 * (events of one instance come from one thread, in order). */
typedef void (*rc_event_fn)(void *ctx, const char *uuid, const char *event,
                            const char *detail);

struct reconciler;
struct rc_pass_stats;

/* 'hv' and 'storage' must outlive the reconciler.  Starts the pool's
 * threads when cfg->workers > 1. */
int rc_new(struct hypervisor *hv, const struct rc_storage *storage,
           const struct rc_config *cfg, rc_event_fn ev, void *ev_ctx,
           struct reconciler **out) __attribute__((warn_unused_result));
/* Waits for the creates in flight and queued (none is cut half-way), ends
 * the pool, frees everything.  NULL: nothing. */
void rc_free(struct reconciler *rc);

/* Called on a thread of the pool, with the event callback's context,
 * each time a create handed to the pool is done (written back, no longer
 * busy), so that the owner runs another pass soon: the steps after the
 * create and the observed state are the pass's.  Must not block; may be
 * called by several threads at once.  After rc_set_wake() returns, the
 * previous function is no longer running nor called.  NULL: none. */
typedef void (*rc_wake_fn)(void *ctx);
void rc_set_wake(struct reconciler *rc, rc_wake_fn fn);

/* Waits until no create is in flight (tests).  When 'pool' is not NULL,
 * adds to it the steps the pool finished since the last pass or drain
 * (then not counted by the next pass). */
void rc_drain(struct reconciler *rc, struct rc_pass_stats *pool);
/* Whether no create is in flight. */
bool rc_idle(struct reconciler *rc);

/* Called on the pass's thread or a thread of the pool, with the event
 * callback's context, each time an instance being built became
 * active (or stopped, paused, suspended as desired), so that its owner can
 * report the observed state (rc_observed) at once instead of when the pass
 * ends: a pass creating twenty guests would otherwise hold back the first
 * one's ACTIVE for all the others' starts.  Workers may call it at the
 * same time: the owner serialises what it must.  NULL: none. */
typedef void (*rc_progress_fn)(void *ctx);
void rc_set_progress(struct reconciler *rc, rc_progress_fn fn);

struct rc_pass_stats {
    unsigned desired, actual, actions, failures;
    uint64_t duration_ns;
};

/* One pass at time 'now_ms'.  Fails (doing nothing) only when the provider
 * cannot list its instances.  Returns without waiting for the creates it
 * handed to the pool; the stats count the steps the pool finished since
 * the previous pass. */
int rc_pass(struct reconciler *rc, const struct desired_set *ds, uint64_t now_ms,
            struct rc_pass_stats *stats) __attribute__((warn_unused_result));

/* The observed state after the last pass, or during one, as far as it
 * got (entries being worked on are reported as they were before); *out
 * is the caller's, freed with rc_observed_free(*out, *n). */
int rc_observed(struct reconciler *rc, struct rc_observed **out, size_t *n)
    __attribute__((warn_unused_result));
void rc_observed_free(struct rc_observed *obs, size_t n);

/* The reconciler's memory of one instance, or NULL (for tests). */
const struct rc_inst *rc_find(const struct reconciler *rc, const char *uuid);

#endif
