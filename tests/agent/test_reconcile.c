/* Reconciler transcripts with the fake hypervisor and a fake storage:
 * create, power actions, a guest that powers itself off, deletion, the
 * grace period for instances nobody wants, retries and ERROR, foreign
 * instances never touched, convergence after a crash at every step
 * (a fresh reconciler, as after kill -9, over the same hypervisor), the
 * two ends of a move between nodes, and a pass's creates run at once by
 * several workers.  The transcripts run with one worker and with the
 * default number. */
#include "reconcile.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hypervisor.h"
#include "util.h"
#include "../check.h"
#include "agent_test_util.h"

#define U1 "11111111-1111-4111-8111-111111111111"
#define U2 "22222222-2222-4222-8222-222222222222"
#define U3 "33333333-3333-4333-8333-333333333333"
#define UF "ffffffff-ffff-4fff-8fff-ffffffffffff"

/* ---- a fake storage: a set of uuids with "directories" */

/* The workers of every reconciler the transcripts make (0: the default);
 * main() runs them all with one worker and with the default. */
static unsigned test_workers;

/* The fake storage and the event log: the reconciler's workers call them
 * at once. */
static pthread_mutex_t test_mu = PTHREAD_MUTEX_INITIALIZER;

struct fstore {
    char dirs[16][37];
    int n;
    int fail_remove, fail_prepare;
    int prepares, removes;
    /* Moves: exported[] the uuid whose disk is served ("" none) and the
     * secret hash it was exported with; import_eagain: answers left. */
    char exported[37], export_secret[65];
    uint64_t export_gen;
    int exports, unexports, imports, import_eagain;
    int prepares_at_import;
};

static int
fs_export_locked(void *ctx, const struct inst_desired *d, char *err, size_t len)
{
    struct fstore *s = ctx;
    (void)err;
    (void)len;
    s->exports++;
    snprintf(s->exported, sizeof s->exported, "%s", d->uuid);
    snprintf(s->export_secret, sizeof s->export_secret, "%s", d->migration_secret);
    s->export_gen = d->generation;
    return 0;
}

static uint64_t
fs_exported_locked(void *ctx, const char *uuid)
{
    struct fstore *s = ctx;
    return !strcmp(s->exported, uuid) ? s->export_gen : 0;
}

static void
fs_unexport_locked(void *ctx, const char *uuid)
{
    struct fstore *s = ctx;
    if (!strcmp(s->exported, uuid)) {
        s->exported[0] = 0;
        s->unexports++;
    }
}

static int
fs_import_locked(void *ctx, const struct inst_desired *d, char *err, size_t len)
{
    struct fstore *s = ctx;
    (void)d;
    s->imports++;
    s->prepares_at_import = s->prepares;
    if (s->import_eagain) {
        s->import_eagain--;
        snprintf(err, len, "the source of the move is not ready");
        return -EAGAIN;
    }
    return 0;
}

static int
fs_prepare_locked(void *ctx, const struct inst_desired *d, struct rc_prepared *p, char *err, size_t len)
{
    struct fstore *s = ctx;
    s->prepares++;
    if (s->fail_prepare) {
        s->fail_prepare--;
        snprintf(err, len, "image fetch failed");
        return -EIO;
    }
    int i;
    for (i = 0; i < s->n; i++)
        if (!strcmp(s->dirs[i], d->uuid))
            break;
    if (i == s->n && s->n < 16)
        snprintf(s->dirs[s->n++], 37, "%s", d->uuid);
    snprintf(p->inst_dir, sizeof p->inst_dir, "/fake/%s", d->uuid);
    snprintf(p->disk, sizeof p->disk, "/fake/%s/disk.qcow2", d->uuid);
    snprintf(p->console_log, sizeof p->console_log, "/fake/%s/console.log", d->uuid);
    return 0;
}

static int
fs_remove_locked(void *ctx, const char *uuid, char *err, size_t len)
{
    struct fstore *s = ctx;
    s->removes++;
    if (s->fail_remove) {
        s->fail_remove--;
        snprintf(err, len, "crash during rm");
        return -EIO;
    }
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->dirs[i], uuid)) {
            memcpy(s->dirs[i], s->dirs[--s->n], 37);
            break;
        }
    return 0;
}

static int
fs_list_locked(void *ctx, char (**out)[37], size_t *n)
{
    struct fstore *s = ctx;
    *out = calloc(16, 37);
    memcpy(*out, s->dirs, sizeof s->dirs);
    *n = (size_t)s->n;
    return 0;
}

/* The fake storage's interface: each call under test_mu. */

static int
fs_export(void *ctx, const struct inst_desired *d, char *err, size_t len)
{
    pthread_mutex_lock(&test_mu);
    int r = fs_export_locked(ctx, d, err, len);
    pthread_mutex_unlock(&test_mu);
    return r;
}

static uint64_t
fs_exported(void *ctx, const char *uuid)
{
    pthread_mutex_lock(&test_mu);
    uint64_t r = fs_exported_locked(ctx, uuid);
    pthread_mutex_unlock(&test_mu);
    return r;
}

static void
fs_unexport(void *ctx, const char *uuid)
{
    pthread_mutex_lock(&test_mu);
    fs_unexport_locked(ctx, uuid);
    pthread_mutex_unlock(&test_mu);
}

static int
fs_import(void *ctx, const struct inst_desired *d, char *err, size_t len)
{
    pthread_mutex_lock(&test_mu);
    int r = fs_import_locked(ctx, d, err, len);
    pthread_mutex_unlock(&test_mu);
    return r;
}

static int
fs_prepare(void *ctx, const struct inst_desired *d, struct rc_prepared *p, char *err, size_t len)
{
    pthread_mutex_lock(&test_mu);
    int r = fs_prepare_locked(ctx, d, p, err, len);
    pthread_mutex_unlock(&test_mu);
    return r;
}

static int
fs_remove(void *ctx, const char *uuid, char *err, size_t len)
{
    pthread_mutex_lock(&test_mu);
    int r = fs_remove_locked(ctx, uuid, err, len);
    pthread_mutex_unlock(&test_mu);
    return r;
}

static int
fs_list(void *ctx, char (**out)[37], size_t *n)
{
    pthread_mutex_lock(&test_mu);
    int r = fs_list_locked(ctx, out, n);
    pthread_mutex_unlock(&test_mu);
    return r;
}

static bool
fs_has(const struct fstore *s, const char *uuid)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->dirs[i], uuid))
            return true;
    return false;
}

/* ---- events */

static char events[4096];

static void
on_event(void *ctx, const char *uuid, const char *event, const char *detail)
{
    pthread_mutex_lock(&test_mu);
    size_t n = strlen(events);
    snprintf(events + n, sizeof events - n, "%.8s:%s ", uuid, event);
    pthread_mutex_unlock(&test_mu);
}

/* ---- helpers */

struct world {
    struct hypervisor *hv;
    struct fstore fs;
    struct rc_storage st;
    struct rc_config cfg;
    struct reconciler *rc;
    struct inst_desired insts[4];
    struct desired_set ds;
};

/* A world on fake node 'node' (NULL: the host name). */
static void
world_init_on(struct world *w, const char *node)
{
    memset(w, 0, sizeof *w);
    struct hv_config hc = { .type = "fake", .node = node };
    char err[128];
    if (hv_open(&hc, &w->hv, err, sizeof err))
        abort();
    w->st = (struct rc_storage){ fs_prepare, fs_remove, fs_list, &w->fs };
    w->st.export_disk = fs_export;
    w->st.unexport_disk = fs_unexport;
    w->st.exported = fs_exported;
    w->st.import_disk = fs_import;
    w->st.import_ctx = &w->fs;
    w->cfg = (struct rc_config){ .grace_ms = 60000, .max_attempts = 3, .stop_timeout_ms = 1000,
                                 .workers = test_workers };
    if (rc_new(w->hv, &w->st, &w->cfg, on_event, NULL, &w->rc))
        abort();
    w->ds.insts = w->insts;
    events[0] = 0;
}

static void
world_init(struct world *w)
{
    world_init_on(w, NULL);
}

/* A fresh reconciler over the same hypervisor and storage: kill -9 and
 * restart. */
static void
world_restart(struct world *w)
{
    rc_free(w->rc);
    if (rc_new(w->hv, &w->st, &w->cfg, on_event, NULL, &w->rc))
        abort();
}

static void
world_free(struct world *w)
{
    rc_free(w->rc);
    hv_close(w->hv);
}

static struct inst_desired *
add(struct world *w, const char *uuid, enum power_state p, uint64_t gen)
{
    struct inst_desired *d = &w->insts[w->ds.n++];
    memset(d, 0, sizeof *d);
    snprintf(d->uuid, sizeof d->uuid, "%s", uuid);
    snprintf(d->name, sizeof d->name, "vm-%.4s", uuid);
    d->vcpus = 1;
    d->ram_mb = 128;
    d->disk_gb = 1;
    snprintf(d->image.id, sizeof d->image.id, "img1");
    snprintf(d->image.disk_format, sizeof d->image.disk_format, "qcow2");
    d->power = p;
    d->generation = gen;
    return d;
}

/* A pass and the creates it handed to the pool: the transcripts see the
 * same result with one worker and with several. */
static int
rc_pass_all(struct reconciler *rc, const struct desired_set *ds, uint64_t now,
            struct rc_pass_stats *st)
{
    int r = rc_pass(rc, ds, now, st);
    if (!r)
        rc_drain(rc, st);
    return r;
}

static int
pass(struct world *w, uint64_t now)
{
    struct rc_pass_stats st;
    int r = rc_pass_all(w->rc, &w->ds, now, &st);
    return r ? r : (int)st.actions;
}

static size_t
hv_count(struct world *w)
{
    struct inst_actual *v;
    size_t n = 0;
    if (w->hv->class->list(w->hv, &v, &n) == 0)
        free(v);
    return n;
}

static enum rc_state
state(struct world *w, const char *uuid)
{
    const struct rc_inst *ri = rc_find(w->rc, uuid);
    return ri ? ri->state : RC_N_STATES;
}

/* ---- transcripts */

/* Progress: each instance a pass created is announced as soon as it is
 * active (not the pass's last one: the pass's end reports it), with the
 * reconciler's memory already saying so. */
static struct world *progress_world;
static char progress_seen[256];

static void
on_progress(void *ctx)
{
    (void)ctx;
    struct rc_observed *obs;
    size_t n;
    if (rc_observed(progress_world->rc, &obs, &n))
        return;
    size_t len = strlen(progress_seen);
    snprintf(progress_seen + len, sizeof progress_seen - len, "%zu:", n);
    for (size_t i = 0; i < n; i++) {
        len = strlen(progress_seen);
        snprintf(progress_seen + len, sizeof progress_seen - len, "%.1s=%s,", obs[i].uuid,
                 rc_state_name(obs[i].state));
    }
    len = strlen(progress_seen);
    snprintf(progress_seen + len, sizeof progress_seen - len, " ");
    rc_observed_free(obs, n);
}

static void
test_progress(void)
{
    /* The order of one worker (several: test_parallel_creates). */
    unsigned workers = test_workers;
    test_workers = 1;
    struct world w;
    world_init(&w);
    test_workers = workers;
    progress_world = &w;
    progress_seen[0] = 0;
    rc_set_progress(w.rc, on_progress);
    add(&w, U1, POWER_RUNNING, 1);
    add(&w, U2, POWER_SHUTOFF, 1);
    add(&w, U3, POWER_RUNNING, 1);
    CHECK_INT(pass(&w, 1000), 3);
    CHECK_STR(progress_seen, "1:1=active, 2:1=active,2=stopped, ");
    /* Nothing built: nothing announced. */
    progress_seen[0] = 0;
    CHECK_INT(pass(&w, 2000), 0);
    CHECK_STR(progress_seen, "");
    /* The timing events of each create. */
    CHECK(strstr(events, "11111111:image-ready 11111111:defined 11111111:started "
                         "11111111:created"));
    CHECK(strstr(events, "22222222:image-ready 22222222:defined 22222222:created"));
    world_free(&w);
}

/* The events of the instance whose uuid starts with 'prefix' (8
 * characters), in order, from the shared log where the workers' events
 * interleave. */
static void
events_of(const char *prefix, char *out, size_t len)
{
    out[0] = 0;
    size_t n = 0;
    for (const char *e = events; *e;) {
        const char *end = strchr(e, ' ');
        size_t l = end ? (size_t)(end - e) : strlen(e);
        if (l > 9 && !strncmp(e, prefix, 8) && n + l - 9 + 2 < len)
            n += (size_t)snprintf(out + n, len - n, "%.*s ", (int)(l - 9), e + 9);
        e += l + (end ? 1 : 0);
    }
}

static pthread_mutex_t progress_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned progress_calls, progress_active_max;

/* Progress from the workers: the observed state read while other
 * workers still create. */
static void
on_parallel_progress(void *ctx)
{
    struct rc_observed *obs;
    size_t n;
    if (rc_observed(progress_world->rc, &obs, &n))
        return;
    unsigned active = 0;
    for (size_t i = 0; i < n; i++)
        active += obs[i].state == RC_ACTIVE;
    rc_observed_free(obs, n);
    pthread_mutex_lock(&progress_mu);
    progress_calls++;
    if (active > progress_active_max)
        progress_active_max = active;
    pthread_mutex_unlock(&progress_mu);
}

/* Creates at once: eight instances whose creates take 200 ms each are all
 * created in one pass taking about one create's time (not eight), each
 * defined exactly once and ACTIVE at generation 1 with its own events in
 * order; one instance's failing create leaves it building with the
 * failure as its fault, without touching the others, and the next pass
 * creates it.  The pass's statistics count every worker's steps. */
static void
test_parallel_creates(void)
{
    enum { N = 8, DELAY_MS = 200, BAD = 3 };
    unsigned workers = test_workers;
    test_workers = N;
    struct world w;
    world_init(&w);
    test_workers = workers;
    progress_world = &w;
    progress_calls = progress_active_max = 0;
    rc_set_progress(w.rc, on_parallel_progress);
    struct inst_desired insts[N];
    memset(insts, 0, sizeof insts);
    char uuids[N][37];
    for (int i = 0; i < N; i++) {
        struct inst_desired *d = &insts[i];
        snprintf(d->uuid, sizeof d->uuid, "%08d-aaaa-4aaa-8aaa-aaaaaaaaaaaa", i + 1);
        memcpy(uuids[i], d->uuid, sizeof uuids[i]);
        snprintf(d->name, sizeof d->name, "vm-%d", i + 1);
        d->vcpus = 1;
        d->ram_mb = 128;
        d->disk_gb = 1;
        snprintf(d->image.id, sizeof d->image.id, "img1");
        snprintf(d->image.disk_format, sizeof d->image.disk_format, "qcow2");
        d->power = POWER_RUNNING;
        d->generation = 1;
    }
    w.ds.insts = insts;
    w.ds.n = N;
    hv_fake_delay(w.hv, "create", DELAY_MS);
    hv_fake_fail_instance(w.hv, "create", uuids[BAD], -EIO, 1);

    struct rc_pass_stats ps;
    uint64_t t0 = util_now_ns();
    CHECK_INT(rc_pass_all(w.rc, &w.ds, 1000, &ps), 0);
    uint64_t took = util_now_ns() - t0;
    fprintf(stderr, "parallel: %d creates of %d ms done in %.1f ms, %u at once\n", N,
            DELAY_MS, (double)took / 1e6, hv_fake_max_concurrent(w.hv, "create"));
    CHECK(took >= DELAY_MS * 1000000ull);
    CHECK(took < 3 * DELAY_MS * 1000000ull);   /* One after the other: 8 x 200 ms. */
    CHECK_INT(hv_fake_max_concurrent(w.hv, "create"), N);
    CHECK_INT(hv_fake_calls(w.hv, "create"), N);
    CHECK_INT(ps.desired, N);
    CHECK_INT(ps.actions, N);
    CHECK_INT(ps.failures, 1);
    CHECK_INT(hv_count(&w), N - 1);
    CHECK_INT(w.fs.prepares, N);
    char ev[512], want[512];
    for (int i = 0; i < N; i++) {
        const struct rc_inst *ri = rc_find(w.rc, uuids[i]);
        CHECK(ri != NULL);
        if (!ri)
            continue;
        events_of(uuids[i], ev, sizeof ev);
        if (i == BAD) {
            CHECK_INT(ri->state, RC_BUILDING);
            CHECK_INT(ri->attempts, 1);
            CHECK(strstr(ri->fault, "create: fake: injected failure of create") != NULL);
            CHECK_STR(ev, "image-ready step-failed ");
            CHECK_INT(t_power(w.hv, uuids[i]), POWER_NOSTATE);
        } else {
            CHECK_INT(ri->state, RC_ACTIVE);
            CHECK_INT(ri->generation, 1);
            CHECK_STR(ri->fault, "");
            CHECK_STR(ev, "image-ready defined started created ");
            CHECK_INT(t_power(w.hv, uuids[i]), POWER_RUNNING);
        }
    }
    /* Announced while others were still being created: every active
     * instance but the last one done, and the failed one's report may
     * come last. */
    CHECK(progress_calls >= N - 2 && progress_calls <= N - 1);
    CHECK(progress_active_max >= N - 2);

    /* The next pass creates the one that failed, alone. */
    events[0] = 0;
    CHECK_INT(rc_pass_all(w.rc, &w.ds, 2000, &ps), 0);
    CHECK_INT(ps.actions, 1);
    CHECK_INT(ps.failures, 0);
    CHECK_INT(hv_fake_calls(w.hv, "create"), N + 1);
    CHECK_INT(state(&w, uuids[BAD]), RC_ACTIVE);
    events_of(uuids[BAD], ev, sizeof ev);
    CHECK_STR(ev, "image-ready defined started created ");
    snprintf(want, sizeof want, "%.8s:image-ready %.8s:defined %.8s:started %.8s:created ",
             uuids[BAD], uuids[BAD], uuids[BAD], uuids[BAD]);
    CHECK_STR(events, want);
    /* Steady: nothing to do, nothing created again. */
    CHECK_INT(rc_pass_all(w.rc, &w.ds, 3000, &ps), 0);
    CHECK_INT(ps.actions, 0);
    CHECK_INT(hv_fake_calls(w.hv, "create"), N + 1);
    w.ds.insts = w.insts;
    w.ds.n = 0;
    world_free(&w);
}

static void
test_create_and_power(void)
{
    struct world w;
    world_init(&w);
    struct inst_desired *d = add(&w, U1, POWER_RUNNING, 1);

    CHECK(pass(&w, 1000) > 0);
    CHECK_INT(t_power(w.hv, U1), POWER_RUNNING);
    CHECK_INT(state(&w, U1), RC_ACTIVE);
    CHECK(strstr(events, "11111111:created"));
    CHECK_STR(hv_fake_disk(w.hv, U1), "/fake/" U1 "/disk.qcow2");
    /* Idempotent: nothing more to do. */
    CHECK_INT(pass(&w, 2000), 0);
    CHECK_INT(hv_fake_calls(w.hv, "create"), 1);

    /* Stop (generation 2). */
    d->power = POWER_SHUTOFF;
    d->generation = 2;
    CHECK(pass(&w, 3000) > 0);
    CHECK_INT(t_power(w.hv, U1), POWER_SHUTOFF);
    CHECK_INT(state(&w, U1), RC_STOPPED);
    CHECK_INT(pass(&w, 4000), 0);

    /* Start, soft reboot (once), pause, suspend, resume. */
    d->power = POWER_RUNNING;
    d->generation = 3;
    pass(&w, 5000);
    CHECK_INT(t_power(w.hv, U1), POWER_RUNNING);
    CHECK_INT(hv_fake_calls(w.hv, "start"), 1);
    snprintf(d->reboot, sizeof d->reboot, "soft");
    d->generation = 4;
    pass(&w, 6000);
    pass(&w, 7000);
    CHECK_INT(hv_fake_calls(w.hv, "reboot"), 1);
    CHECK_INT(state(&w, U1), RC_ACTIVE);
    d->reboot[0] = 0;
    d->power = POWER_PAUSED;
    d->generation = 5;
    pass(&w, 8000);
    CHECK_INT(t_power(w.hv, U1), POWER_PAUSED);
    CHECK_INT(state(&w, U1), RC_PAUSED);
    d->power = POWER_SUSPENDED;
    d->generation = 6;
    pass(&w, 9000);
    CHECK_INT(t_power(w.hv, U1), POWER_SUSPENDED);
    CHECK_INT(state(&w, U1), RC_SUSPENDED);
    d->power = POWER_RUNNING;
    d->generation = 7;
    pass(&w, 10000);
    CHECK_INT(t_power(w.hv, U1), POWER_RUNNING);
    CHECK_INT(hv_fake_calls(w.hv, "resume"), 1);
    CHECK_INT(state(&w, U1), RC_ACTIVE);

    /* Created straight into PAUSED: create, then pause, in one pass. */
    add(&w, U2, POWER_PAUSED, 1);
    pass(&w, 11000);
    CHECK_INT(t_power(w.hv, U2), POWER_PAUSED);
    CHECK_INT(state(&w, U2), RC_PAUSED);

    /* Delete now. */
    d->deleted = true;
    pass(&w, 12000);
    CHECK_INT(t_power(w.hv, U1), POWER_NOSTATE);
    CHECK(!fs_has(&w.fs, U1));
    CHECK_INT(state(&w, U1), RC_DELETED);
    CHECK(strstr(events, "11111111:deleted"));
    CHECK_INT(pass(&w, 13000), 0);
    world_free(&w);
}

static void
test_guest_powers_off(void)
{
    struct world w;
    world_init(&w);
    add(&w, U1, POWER_RUNNING, 1);
    pass(&w, 1000);
    CHECK(hv_fake_set_power(w.hv, U1, POWER_SHUTOFF) == 0);
    events[0] = 0;
    pass(&w, 2000);
    /* Reported SHUTOFF, not restarted behind the user's back. */
    CHECK_INT(state(&w, U1), RC_STOPPED);
    CHECK_INT(t_power(w.hv, U1), POWER_SHUTOFF);
    CHECK_INT(hv_fake_calls(w.hv, "start"), 0);
    CHECK(strstr(events, "11111111:power-off-by-guest"));
    /* Same after a restart of the agent. */
    world_restart(&w);
    CHECK_INT(pass(&w, 3000), 0);
    CHECK_INT(state(&w, U1), RC_STOPPED);
    /* The user starts it again: a new generation. */
    w.insts[0].generation = 2;
    pass(&w, 4000);
    CHECK_INT(t_power(w.hv, U1), POWER_RUNNING);
    world_free(&w);
}

static void
test_orphan_grace_and_foreign(void)
{
    struct world w;
    world_init(&w);
    hv_fake_add_foreign(w.hv, UF);
    add(&w, U1, POWER_RUNNING, 1);
    pass(&w, 1000);
    CHECK_INT(hv_count(&w), 1);   /* The foreign one is not listed. */

    /* U1 disappears from the desired state (a glitch or a real delete). */
    w.ds.n = 0;
    events[0] = 0;
    pass(&w, 10000);
    CHECK_INT(state(&w, U1), RC_ORPHANED);
    CHECK(strstr(events, "11111111:orphan-found"));
    pass(&w, 69999);
    CHECK_INT(t_power(w.hv, U1), POWER_RUNNING);
    /* Back within the grace period: kept. */
    w.ds.n = 1;
    pass(&w, 70000);
    CHECK_INT(state(&w, U1), RC_ACTIVE);
    w.ds.n = 0;
    pass(&w, 80000);
    pass(&w, 139999);
    CHECK_INT(t_power(w.hv, U1), POWER_RUNNING);
    pass(&w, 140000);
    CHECK_INT(t_power(w.hv, U1), POWER_NOSTATE);
    CHECK(!fs_has(&w.fs, U1));
    CHECK(strstr(events, "11111111:orphan-deleted"));

    /* The foreign instance survived everything, even being desired.  A
     * create that finds another's instance with the uuid waits (on a
     * hypervisor two nodes share, a move's other end is undefining it),
     * then, after the port wait, gives up: ERROR. */
    add(&w, UF, POWER_SHUTOFF, 1);
    for (int i = 0; i < 5; i++)
        pass(&w, 200000 + (uint64_t)i * 1000);
    CHECK_INT(state(&w, UF), RC_BUILDING);
    CHECK(hv_fake_foreign_intact(w.hv, UF));
    pass(&w, 200000 + 120000);
    pass(&w, 200000 + 120000 + 1000);
    CHECK_INT(state(&w, UF), RC_ERROR);
    w.ds.n = 0;
    pass(&w, 1000000);
    pass(&w, 2000000);
    CHECK(hv_fake_foreign_intact(w.hv, UF));
    world_free(&w);
}

/* A cold move.  The source (U1) stops its guest, exports the disk once
 * and undefines the guest (the disk stays), reports it stopped at the
 * generation while the document says "migrate_out", and on revert
 * unexports and defines it again from its disk, running.  A
 * source without the guest goes ERROR rather than create a blank one.  The
 * destination (U2) imports the disk before preparing and defining it, and
 * waits (not a failure) while the source is not ready. */
static void
test_moves(void)
{
    struct world w;
    world_init(&w);
    struct inst_desired *d = add(&w, U1, POWER_RUNNING, 1);
    pass(&w, 1000);
    CHECK_INT(t_power(w.hv, U1), POWER_RUNNING);
    d->generation = 2;
    d->power = POWER_SHUTOFF;
    snprintf(d->action, sizeof d->action, "migrate_out");
    memset(d->migration_secret, 'a', 64);
    events[0] = 0;
    pass(&w, 2000);
    CHECK_INT(t_power(w.hv, U1), POWER_NOSTATE);   /* Undefined... */
    CHECK(fs_has(&w.fs, U1));                      /* ...its disk kept. */
    CHECK_INT(w.fs.exports, 1);
    CHECK_STR(w.fs.exported, U1);
    CHECK(w.fs.export_secret[0] == 'a' && strlen(w.fs.export_secret) == 64);
    CHECK(strstr(events, "11111111:migration-source-ready"));
    pass(&w, 3000);
    pass(&w, 4000);
    CHECK_INT(w.fs.exports, 1);              /* Once per generation. */
    CHECK_STR(w.fs.exported, U1);            /* Still served. */
    CHECK_INT(state(&w, U1), RC_STOPPED);
    CHECK(fs_has(&w.fs, U1));
    /* A restart (kill -9) re-exports nothing: the export is marked. */
    world_restart(&w);
    pass(&w, 5000);
    CHECK_INT(w.fs.exports, 1);
    CHECK_STR(w.fs.exported, U1);
    CHECK_INT(state(&w, U1), RC_STOPPED);
    CHECK(fs_has(&w.fs, U1));
    struct rc_observed *obs = NULL;
    size_t n_obs = 0;
    CHECK_INT(rc_observed(w.rc, &obs, &n_obs), 0);
    CHECK(n_obs == 1 && obs[0].state == RC_STOPPED && obs[0].generation == 2);
    rc_observed_free(obs, n_obs);
    int prepares_before = w.fs.prepares;
    /* Revert: no longer served, and running again. */
    d->generation = 3;
    d->power = POWER_RUNNING;
    d->action[0] = 0;
    pass(&w, 6000);
    CHECK_INT(w.fs.unexports, 1);
    CHECK(!w.fs.exported[0]);
    CHECK_INT(t_power(w.hv, U1), POWER_RUNNING);
    CHECK_INT(w.fs.prepares, prepares_before + 1);   /* Defined again from its disk. */

    /* The source lost its guest: ERROR, nothing created. */
    int prepares = w.fs.prepares;
    struct inst_desired *g = add(&w, U2, POWER_SHUTOFF, 2);
    snprintf(g->action, sizeof g->action, "migrate_out");
    memset(g->migration_secret, 'b', 64);
    pass(&w, 7000);
    CHECK_INT(state(&w, U2), RC_ERROR);
    CHECK_INT(w.fs.prepares, prepares);
    CHECK_INT(t_power(w.hv, U2), POWER_NOSTATE);
    world_free(&w);

    /* The destination. */
    world_init(&w);
    d = add(&w, U2, POWER_RUNNING, 5);
    snprintf(d->action, sizeof d->action, "migrate_in");
    w.fs.import_eagain = 2;
    events[0] = 0;
    pass(&w, 1000);
    CHECK_INT(t_power(w.hv, U2), POWER_NOSTATE);
    CHECK(strstr(events, "22222222:waiting-for-port"));
    CHECK_INT(w.fs.prepares, 0);
    pass(&w, 2000);
    CHECK_INT(state(&w, U2), RC_BUILDING);
    pass(&w, 3000);
    CHECK_INT(w.fs.imports, 3);
    CHECK_INT(w.fs.prepares_at_import, 0);   /* Imported before prepared. */
    CHECK_INT(w.fs.prepares, 1);
    CHECK_INT(t_power(w.hv, U2), POWER_RUNNING);
    pass(&w, 4000);
    CHECK_INT(state(&w, U2), RC_ACTIVE);
    CHECK_INT(w.fs.imports, 3);
    /* Revert on this side: the copy becomes deleted in the document. */
    d->deleted = true;
    pass(&w, 5000);
    CHECK_INT(t_power(w.hv, U2), POWER_NOSTATE);
    CHECK(!fs_has(&w.fs, U2));
    world_free(&w);
}

static void
test_retries_and_error(void)
{
    struct world w;
    world_init(&w);
    add(&w, U1, POWER_RUNNING, 1);
    w.fs.fail_prepare = 2;
    pass(&w, 1000);
    CHECK_INT(state(&w, U1), RC_BUILDING);
    pass(&w, 2000);
    CHECK_INT(state(&w, U1), RC_BUILDING);
    pass(&w, 3000);
    CHECK_INT(state(&w, U1), RC_ACTIVE);
    CHECK_STR(rc_find(w.rc, U1)->fault, "");

    /* Three failures: ERROR with the fault, and no more attempts. */
    add(&w, U2, POWER_RUNNING, 1);
    hv_fake_fail(w.hv, "create", -EIO, 10);
    pass(&w, 4000);
    pass(&w, 5000);
    pass(&w, 6000);
    CHECK_INT(state(&w, U2), RC_ERROR);
    CHECK(strstr(rc_find(w.rc, U2)->fault, "injected failure of create") != NULL);
    unsigned calls = hv_fake_calls(w.hv, "create");
    pass(&w, 7000);
    CHECK_INT(hv_fake_calls(w.hv, "create"), calls);
    /* A new generation (the user retries): tried again. */
    hv_fake_fail(w.hv, "create", 0, 0);
    w.insts[1].generation = 2;
    pass(&w, 8000);
    CHECK_INT(state(&w, U2), RC_ACTIVE);

    /* The hypervisor cannot list: the pass does nothing at all. */
    hv_fake_fail(w.hv, "list", -EIO, 1);
    w.ds.n = 0;
    CHECK_INT(pass(&w, 999999999), -EIO);
    CHECK_INT(hv_count(&w), 2);
    world_free(&w);
}

/* A port's device not made yet by the network agent (-EAGAIN): the
 * instance stays BUILDING, is tried again every pass without using up its
 * attempts, one "waiting-for-port" event says why; a bounded wait then
 * ERROR with a clear fault. */
static void
test_waiting_for_port(void)
{
    struct world w;
    world_init(&w);
    add(&w, U1, POWER_RUNNING, 1);
    hv_fake_fail(w.hv, "create", -EAGAIN, 5);
    for (int i = 1; i <= 5; i++) {
        pass(&w, (uint64_t)i * 10000);
        CHECK_INT(state(&w, U1), RC_BUILDING);
    }
    CHECK(strstr(rc_find(w.rc, U1)->fault, "injected failure of create") != NULL);
    CHECK(strstr(events, "waiting-for-port") != NULL);
    CHECK(strstr(strstr(events, "waiting-for-port") + 1, "waiting-for-port") == NULL);
    CHECK(strstr(events, "step-failed") == NULL);
    pass(&w, 60000);
    CHECK_INT(state(&w, U1), RC_ACTIVE);
    CHECK_STR(rc_find(w.rc, U1)->fault, "");

    /* Never made: ERROR after port_wait_ms (120 s by default). */
    add(&w, U2, POWER_RUNNING, 1);
    hv_fake_fail(w.hv, "create", -EAGAIN, 1000);
    pass(&w, 100000);
    pass(&w, 200000);
    CHECK_INT(state(&w, U2), RC_BUILDING);
    pass(&w, 220001);
    CHECK_INT(state(&w, U2), RC_ERROR);
    CHECK(strstr(rc_find(w.rc, U2)->fault, "gave up after 120 s") != NULL);
    unsigned calls = hv_fake_calls(w.hv, "create");
    pass(&w, 230000);
    CHECK_INT(hv_fake_calls(w.hv, "create"), calls);
    world_free(&w);
}

/* kill -9 after each step of a create, a reboot and a delete, then a
 * restart: the same end state, no duplicate, nothing leaked. */
static void
test_crash_convergence(void)
{
    /* Crash after create, before the generation was recorded. */
    struct world w;
    world_init(&w);
    add(&w, U1, POWER_RUNNING, 1);
    hv_fake_fail(w.hv, "set_generation", -EINTR, 1);
    pass(&w, 1000);
    world_restart(&w);
    pass(&w, 2000);
    CHECK_INT(hv_fake_calls(w.hv, "create"), 1);
    CHECK_INT(hv_count(&w), 1);
    CHECK_INT(state(&w, U1), RC_ACTIVE);
    CHECK_INT(rc_find(w.rc, U1)->generation, 1);
    world_free(&w);

    /* Crash between define and start (defined, never started). */
    world_init(&w);
    add(&w, U1, POWER_RUNNING, 1);
    hv_fake_fail(w.hv, "set_generation", -EINTR, 1);
    pass(&w, 1000);
    hv_fake_set_power(w.hv, U1, POWER_SHUTOFF);   /* As if start never happened. */
    world_restart(&w);
    pass(&w, 2000);
    CHECK_INT(t_power(w.hv, U1), POWER_RUNNING);
    CHECK_INT(state(&w, U1), RC_ACTIVE);
    world_free(&w);

    /* Crash during create's storage preparation: retried, one instance. */
    world_init(&w);
    add(&w, U1, POWER_RUNNING, 1);
    w.fs.fail_prepare = 1;
    pass(&w, 1000);
    world_restart(&w);
    pass(&w, 2000);
    CHECK_INT(hv_count(&w), 1);
    CHECK_INT(state(&w, U1), RC_ACTIVE);

    /* Crash during a reboot after the reboot, before the mark: at most one
     * more reboot, then stable. */
    snprintf(w.insts[0].reboot, sizeof w.insts[0].reboot, "hard");
    w.insts[0].generation = 2;
    hv_fake_fail(w.hv, "set_generation", -EINTR, 1);
    pass(&w, 3000);
    world_restart(&w);
    pass(&w, 4000);
    pass(&w, 5000);
    CHECK_INT(hv_fake_calls(w.hv, "reboot"), 2);
    CHECK_INT(state(&w, U1), RC_ACTIVE);

    /* Crash during delete, after undefine, before the files went. */
    w.insts[0].deleted = true;
    w.fs.fail_remove = 1;
    pass(&w, 6000);
    CHECK_INT(hv_count(&w), 0);
    CHECK(fs_has(&w.fs, U1));
    world_restart(&w);
    pass(&w, 7000);
    CHECK(!fs_has(&w.fs, U1));
    /* And when the instance is not even desired any more. */
    add(&w, U2, POWER_RUNNING, 1);
    pass(&w, 8000);
    w.ds.n = 0;
    w.fs.fail_remove = 1;
    pass(&w, 9000);
    pass(&w, 9000 + 60000);
    CHECK_INT(hv_count(&w), 0);
    world_restart(&w);
    pass(&w, 200000);
    CHECK(!fs_has(&w.fs, U2));
    CHECK_INT(w.fs.n, 0);
    world_free(&w);
}

/* The pure state machine, one decision at a time. */
static void
test_decide_table(void)
{
    struct rc_config cfg = { .grace_ms = 100, .max_attempts = 3 };
    struct rc_inst ri = { .state = RC_NEW };
    struct inst_desired d = { .power = POWER_RUNNING, .generation = 5 };
    struct inst_actual a = { .power = POWER_SHUTOFF, .generation = 4 };

    struct rc_step s = rc_decide(&ri, &d, NULL, 1, &cfg);
    CHECK_INT(s.action, RCA_CREATE);
    CHECK_INT(ri.state, RC_BUILDING);
    s = rc_decide(&ri, &d, &a, 2, &cfg);
    CHECK_INT(s.action, RCA_START);
    CHECK(s.mark);
    a.generation = 5;
    s = rc_decide(&ri, &d, &a, 3, &cfg);
    CHECK_INT(s.action, RCA_NONE);
    CHECK_INT(ri.state, RC_STOPPED);
    d.power = POWER_SUSPENDED;
    d.generation = 6;
    s = rc_decide(&ri, &d, &a, 4, &cfg);
    CHECK_INT(s.action, RCA_START);
    CHECK(!s.mark);
    a.power = POWER_RUNNING;
    s = rc_decide(&ri, &d, &a, 5, &cfg);
    CHECK_INT(s.action, RCA_SUSPEND);
    CHECK(s.mark);
    s = rc_decide(&ri, NULL, &a, 1000, &cfg);
    CHECK_INT(s.action, RCA_NONE);
    CHECK_INT(ri.state, RC_ORPHANED);
    s = rc_decide(&ri, NULL, &a, 1099, &cfg);
    CHECK_INT(s.action, RCA_NONE);
    s = rc_decide(&ri, NULL, &a, 1100, &cfg);
    CHECK_INT(s.action, RCA_DELETE);
    s = rc_decide(&ri, NULL, NULL, 1200, &cfg);
    CHECK_INT(s.action, RCA_NONE);
    CHECK_INT(ri.state, RC_DELETED);
    CHECK_STR(rc_state_name(RC_SUSPENDED), "suspended");
    CHECK_STR(rc_action_name(RCA_REBOOT_HARD), "reboot-hard");
}

/* Scale: 1000 instances through the fake provider. */
static void
test_scale(void)
{
    struct hv_config hc = { .type = "fake" };
    struct hypervisor *hv;
    char err[128];
    CHECK(hv_open(&hc, &hv, err, sizeof err) == 0);
    struct fstore fs = { 0 };
    struct rc_storage st = { fs_prepare, fs_remove, NULL, &fs };
    struct rc_config cfg = { .grace_ms = 0, .max_attempts = 3, .workers = test_workers };
    struct reconciler *rc;
    CHECK(rc_new(hv, &st, &cfg, NULL, NULL, &rc) == 0);
    struct desired_set ds = { .n = 1000 };
    ds.insts = calloc(ds.n, sizeof *ds.insts);
    for (size_t i = 0; i < ds.n; i++) {
        snprintf(ds.insts[i].uuid, 37, "%08x-0000-4000-8000-000000000000", (unsigned)i & 0xfffffffu);
        ds.insts[i].power = POWER_RUNNING;
        ds.insts[i].generation = 1;
    }
    struct rc_pass_stats ps;
    CHECK(rc_pass_all(rc, &ds, 1, &ps) == 0);
    CHECK_INT(ps.actions, 1000);
    CHECK(rc_pass_all(rc, &ds, 2, &ps) == 0);
    CHECK_INT(ps.actions, 0);
    fprintf(stderr, "scale: steady-state pass over %u instances: %.2f ms\n", ps.desired,
            (double)ps.duration_ns / 1e6);
    free(ds.insts);
    rc_free(rc);
    hv_close(hv);
}

/* The fake's live migration between two fake nodes of one process. */
static void
test_fake_migrate(void)
{
    struct hv_config ca = { .type = "fake", .node = "node-a" }, cb = ca;
    cb.node = "node-b";
    struct hypervisor *a, *b;
    char err[128];
    CHECK_INT(hv_open(&ca, &a, err, sizeof err), 0);
    CHECK_INT(hv_open(&cb, &b, err, sizeof err), 0);
    static struct inst_desired d;
    snprintf(d.uuid, sizeof d.uuid, "%s", U1);
    d.ram_mb = 64;
    struct hv_create_args args = { .d = &d, .inst_dir = "/a/" U1, .disk_path = "/a/" U1 "/disk.qcow2" };
    CHECK_INT(a->class->create(a, &args, false), 0);
    args.inst_dir = "/b/" U1;
    args.disk_path = "/b/" U1 "/disk.qcow2";
    char *xml = hv_migration_dest_xml(b, &args, 1);
    CHECK(xml && strstr(xml, "node='node-b'") && strstr(xml, "/b/" U1 "/disk.qcow2"));
    struct hv_migrate_args m = { .d = &d, .dest_uri = "fake://node-b", .dest_xml = xml,
                                 .inst_dir_dest = "/b/" U1 };
    /* Not running, no such node, an injected failure: nothing moves. */
    CHECK_INT(a->class->migrate_live(a, &m), -EINVAL);
    CHECK_INT(a->class->start(a, U1), 0);
    m.dest_uri = "fake://node-c";
    CHECK_INT(a->class->migrate_live(a, &m), -EIO);
    m.dest_uri = "fake://node-b";
    hv_fake_fail(a, "migrate_live", -ETIMEDOUT, 1);
    CHECK_INT(a->class->migrate_live(a, &m), -ETIMEDOUT);
    CHECK(hv_fake_disk(a, U1) != NULL);
    CHECK(hv_fake_disk(b, U1) == NULL);
    /* Moved, running, on the destination's disk. */
    CHECK_INT(a->class->migrate_live(a, &m), 0);
    CHECK(hv_fake_disk(a, U1) == NULL);
    CHECK_STR(hv_fake_disk(b, U1), "/b/" U1 "/disk.qcow2");
    struct inst_actual *v;
    size_t n;
    CHECK_INT(b->class->list(b, &v, &n), 0);
    CHECK(n == 1 && v[0].power == POWER_RUNNING);
    free(v);
    CHECK_INT(a->class->migrate_live(a, &m), -ENOENT);
    free(xml);
    hv_close(a);
    hv_close(b);
}

/* Live migration between two reconcilers on fake nodes of this process:
 * the destination ("live_in") prepares the storage once, defines nothing
 * and reports its definition; the source ("live_out") migrates; a failure
 * is recorded on the guest (not tried again) with the reason as the fault
 * and the guest runs on; a success is reported deleted at the generation,
 * also by a restarted source; the arrived guest is only reported by the
 * destination. */
static void
test_live_migration(void)
{
    struct world a, b;
    world_init_on(&a, "live-a");
    world_init_on(&b, "live-b");
    struct inst_desired *da = add(&a, U1, POWER_RUNNING, 1);
    CHECK_INT(pass(&a, 1000), 1);
    CHECK(state(&a, U1) == RC_ACTIVE);

    struct inst_desired *db = add(&b, U1, POWER_RUNNING, 1);
    snprintf(db->action, sizeof db->action, "live_in");
    events[0] = 0;
    CHECK_INT(pass(&b, 1000), 1);
    CHECK_INT(pass(&b, 2000), 0);
    CHECK_INT(b.fs.prepares, 1);
    CHECK_INT((int)hv_count(&b), 0);
    CHECK(strstr(events, "live-prepared") != NULL);
    struct rc_observed *o = NULL;
    size_t n = 0;
    CHECK_INT(rc_observed(b.rc, &o, &n), 0);
    CHECK(n == 1 && o[0].state == RC_BUILDING && o[0].live_xml &&
          strstr(o[0].live_xml, "node='live-b'") && strstr(o[0].live_xml, "/fake/" U1 "/disk.qcow2") &&
          o[0].live_dir && !strcmp(o[0].live_dir, "/fake/" U1));
    char *xml = n == 1 && o[0].live_xml ? strdup(o[0].live_xml) : NULL;
    rc_observed_free(o, n);
    /* A restarted destination prepares again (the storage keeps what is
     * there) and reports again. */
    world_restart(&b);
    CHECK_INT(pass(&b, 3000), 1);
    CHECK_INT(b.fs.prepares, 2);
    CHECK(rc_find(b.rc, U1) && rc_find(b.rc, U1)->live_xml);

    /* The source, to a node it cannot reach: failed once, not again. */
    da->generation = 2;
    snprintf(da->action, sizeof da->action, "live_out");
    snprintf(da->migration_url, sizeof da->migration_url, "fake://live-c");
    snprintf(da->migration_dir, sizeof da->migration_dir, "/fake/%s", U1);
    da->migration_xml = xml;
    events[0] = 0;
    CHECK_INT(pass(&a, 4000), 1);
    const struct rc_inst *ri = rc_find(a.rc, U1);
    CHECK(ri && ri->state == RC_ACTIVE && ri->generation == 2 &&
          strstr(ri->fault, "live migration:"));
    CHECK(t_power(a.hv, U1) == POWER_RUNNING);
    CHECK(strstr(events, "live-migration-failed") != NULL);
    CHECK_INT(pass(&a, 5000), 0);
    ri = rc_find(a.rc, U1);
    CHECK(ri && ri->fault[0]);

    /* To the destination: gone here, running there. */
    da->generation = 3;
    snprintf(da->migration_url, sizeof da->migration_url, "fake://live-b");
    events[0] = 0;
    CHECK_INT(pass(&a, 6000), 1);
    ri = rc_find(a.rc, U1);
    CHECK(ri && ri->state == RC_DELETED && ri->generation == 3 && !ri->fault[0]);
    CHECK(strstr(events, "migrated") != NULL);
    CHECK_INT((int)hv_count(&a), 0);
    CHECK(t_power(b.hv, U1) == POWER_RUNNING);
    CHECK_INT(pass(&b, 7000), 0);
    CHECK(state(&b, U1) == RC_ACTIVE);
    /* A restarted source finds the guest gone: deleted, nothing made. */
    world_restart(&a);
    CHECK_INT(pass(&a, 8000), 0);
    CHECK(state(&a, U1) == RC_DELETED && rc_find(a.rc, U1)->generation == 3);
    CHECK_INT((int)hv_count(&a), 0);
    /* The destination's document becomes the plain instance: its prepared
     * definition is no longer reported. */
    db->action[0] = 0;
    db->generation = 4;
    CHECK_INT(pass(&b, 9000), 1);
    CHECK(state(&b, U1) == RC_ACTIVE && !rc_find(b.rc, U1)->live_xml);
    free(xml);
    world_free(&a);
    world_free(&b);
}

/* A destination whose node has a network agent reports itself prepared
 * only once the ports' devices exist here (waiting meanwhile, as a
 * create does), and its definition names them. */
static void
test_live_waits_for_ports(void)
{
    struct world b;
    world_init_on(&b, "live-w");
    b.hv->network_agent = true;
    struct inst_desired *db = add(&b, U1, POWER_RUNNING, 1);
    snprintf(db->action, sizeof db->action, "live_in");
    db->n_ports = 1;
    snprintf(db->ports[0].id, sizeof db->ports[0].id, "port-1");
    snprintf(db->ports[0].mac, sizeof db->ports[0].mac, "fa:16:3e:00:00:01");
    snprintf(db->ports[0].tap, sizeof db->ports[0].tap, "tapnimbusnone");
    events[0] = 0;
    CHECK_INT(pass(&b, 1000), 0);
    CHECK(strstr(events, "waiting-for-port") != NULL);
    CHECK(strstr(events, "live-prepared") == NULL);
    CHECK(rc_find(b.rc, U1) && !rc_find(b.rc, U1)->live_xml);
    /* The device appears ("lo" is there in every network namespace). */
    snprintf(db->ports[0].tap, sizeof db->ports[0].tap, "lo");
    CHECK_INT(pass(&b, 2000), 1);
    CHECK(strstr(events, "live-prepared") != NULL);
    const struct rc_inst *ri = rc_find(b.rc, U1);
    CHECK(ri && ri->live_xml && strstr(ri->live_xml, "target='lo'"));
    CHECK_INT((int)hv_count(&b), 0);
    world_free(&b);
}

/* The fake's live migration to the fake of another process, through the
 * destination's state_dir/fake-arrivals. */
static void
test_fake_migrate_between_processes(void)
{
    char da[] = "/tmp/nimbus-fake-a-XXXXXX", db[] = "/tmp/nimbus-fake-b-XXXXXX";
    CHECK(mkdtemp(da) && mkdtemp(db));
    struct hv_config ca = { .type = "fake", .node = "proc-a", .state_dir = da }, cb = ca;
    cb.node = "proc-b";
    cb.state_dir = db;
    struct hypervisor *a, *b;
    char err[128], dest[128], arrivals[128];
    CHECK_INT(hv_open(&ca, &a, err, sizeof err), 0);
    CHECK_INT(hv_open(&cb, &b, err, sizeof err), 0);
    static struct inst_desired d;
    snprintf(d.uuid, sizeof d.uuid, "%s", U1);
    struct hv_create_args args = { .d = &d, .inst_dir = da, .disk_path = "/a/disk.qcow2" };
    CHECK_INT(a->class->create(a, &args, true), 0);
    CHECK_INT(a->class->set_generation(a, U1, 7), 0);
    snprintf(dest, sizeof dest, "%s/instances/%s", db, U1);
    snprintf(arrivals, sizeof arrivals, "%s/fake-arrivals", db);
    struct hv_migrate_args m = { .d = &d, .dest_uri = "qemu+tcp://proc-b.example/system",
                                 .inst_dir_dest = dest };
    /* No fake receives there: nothing moves. */
    CHECK_INT(rmdir(arrivals), 0);
    CHECK_INT(a->class->migrate_live(a, &m), -EHOSTUNREACH);
    CHECK(hv_fake_disk(a, U1) != NULL);
    CHECK_INT(mkdir(arrivals, 0755), 0);
    CHECK_INT(a->class->migrate_live(a, &m), 0);
    CHECK(hv_fake_disk(a, U1) == NULL);
    struct inst_actual *v;
    size_t n;
    CHECK_INT(b->class->list(b, &v, &n), 0);
    CHECK(n == 1 && !strcmp(v[0].uuid, U1) && v[0].power == POWER_RUNNING
          && v[0].generation == 7);
    free(v);
    char disk[160];
    snprintf(disk, sizeof disk, "%s/disk.qcow2", dest);
    CHECK_STR(hv_fake_disk(b, U1), disk);
    hv_close(a);
    hv_close(b);
    CHECK_INT(rmdir(arrivals), 0);
    snprintf(arrivals, sizeof arrivals, "%s/fake-arrivals", da);
    CHECK_INT(rmdir(arrivals), 0);
    CHECK_INT(rmdir(da), 0);
    CHECK_INT(rmdir(db), 0);
}

/* ---- the pool: creates outliving the pass that handed them */

static unsigned wakes;

static void
on_wake(void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&test_mu);
    wakes++;
    pthread_mutex_unlock(&test_mu);
}

static unsigned
wakes_now(void)
{
    pthread_mutex_lock(&test_mu);
    unsigned n = wakes;
    pthread_mutex_unlock(&test_mu);
    return n;
}

static uint64_t
ms_since(uint64_t t0)
{
    return (util_now_ns() - t0) / 1000000u;
}

/* Creates handed by two successive passes run at once: each pass returns
 * at once, the second one's creates begin while the first one's still
 * run, and all four are done in about one create's time.  Each done
 * create asks for another pass, which finds nothing left to do. */
static void
test_pool_overlap(void)
{
    enum { DELAY_MS = 300 };
    struct world w;
    world_init(&w);
    rc_set_wake(w.rc, on_wake);
    wakes = 0;
    hv_fake_delay(w.hv, "create", DELAY_MS);
    add(&w, U1, POWER_RUNNING, 1);
    add(&w, U2, POWER_RUNNING, 1);
    uint64_t t0 = util_now_ns();
    struct rc_pass_stats ps;
    CHECK_INT(rc_pass(w.rc, &w.ds, 1000, &ps), 0);
    uint64_t first = ms_since(t0);
    /* A new desired state while the first two are in flight. */
    add(&w, U3, POWER_RUNNING, 1);
    add(&w, UF, POWER_RUNNING, 1);
    uint64_t t1 = util_now_ns();
    CHECK_INT(rc_pass(w.rc, &w.ds, 1001, &ps), 0);
    uint64_t second = ms_since(t1);
    struct rc_pass_stats pool = { 0 };
    rc_drain(w.rc, &pool);
    uint64_t all = ms_since(t0);
    fprintf(stderr, "pool: passes of %llu and %llu ms, 4 creates of %d ms done in %llu ms, "
            "%u at once\n", (unsigned long long)first, (unsigned long long)second, DELAY_MS,
            (unsigned long long)all, hv_fake_max_concurrent(w.hv, "create"));
    CHECK(first < DELAY_MS / 3);
    CHECK(second < DELAY_MS / 3);
    CHECK_INT(hv_fake_max_concurrent(w.hv, "create"), 4);
    CHECK(all >= DELAY_MS && all < 2 * DELAY_MS);
    CHECK_INT(pool.actions, 4);
    CHECK_INT(hv_fake_calls(w.hv, "create"), 4);
    CHECK(state(&w, U1) == RC_ACTIVE && state(&w, U2) == RC_ACTIVE &&
          state(&w, U3) == RC_ACTIVE && state(&w, UF) == RC_ACTIVE);
    CHECK_INT(pass(&w, 2000), 0);
    CHECK_INT(hv_fake_calls(w.hv, "create"), 4);
    /* One wake-up per create (each is asked after the write-back: the
     * pool's threads are joined first). */
    rc_free(w.rc);
    w.rc = NULL;
    CHECK_INT(wakes_now(), 4);
    world_free(&w);
}

/* An instance whose create is in flight is left alone by other passes:
 * a new generation (stop it) waits for the create, a desired state
 * without it neither removes its storage nor forgets it, and a delete
 * waits too, then happens on the pass after the create. */
static void
test_pool_busy(void)
{
    enum { DELAY_MS = 300 };
    struct world w;
    world_init(&w);
    hv_fake_delay(w.hv, "create", DELAY_MS);
    add(&w, U1, POWER_RUNNING, 1);
    struct rc_pass_stats ps;
    CHECK_INT(rc_pass(w.rc, &w.ds, 1000, &ps), 0);
    /* Stop it, generation 2, while it is being created. */
    w.insts[0].power = POWER_SHUTOFF;
    w.insts[0].generation = 2;
    CHECK_INT(rc_pass(w.rc, &w.ds, 1001, &ps), 0);
    CHECK_INT(ps.actions, 0);
    /* Not desired any more: no orphan, no storage removed, not forgotten. */
    w.ds.n = 0;
    CHECK_INT(rc_pass(w.rc, &w.ds, 1002, &ps), 0);
    CHECK_INT(ps.actions, 0);
    CHECK_INT(w.fs.removes, 0);
    CHECK(rc_find(w.rc, U1) != NULL);
    /* Deleted while in flight: nothing destroyed yet. */
    w.ds.n = 1;
    w.insts[0].deleted = true;
    CHECK_INT(rc_pass(w.rc, &w.ds, 1003, &ps), 0);
    CHECK_INT(ps.actions, 0);
    CHECK_INT(hv_fake_calls(w.hv, "destroy"), 0);
    CHECK_INT(hv_fake_calls(w.hv, "stop"), 0);
    rc_drain(w.rc, NULL);
    CHECK_INT(hv_count(&w), 1);
    CHECK_INT(state(&w, U1), RC_ACTIVE);
    CHECK(!strstr(events, "orphan") && !strstr(events, "storage-removed") &&
          !strstr(events, "deleted"));
    /* The create is done: the next pass deletes it and its storage. */
    CHECK(pass(&w, 2000) >= 1);
    CHECK_INT(hv_count(&w), 0);
    CHECK_INT(hv_fake_calls(w.hv, "destroy"), 1);
    CHECK_INT(w.fs.removes, 1);
    CHECK_INT(state(&w, U1), RC_DELETED);
    CHECK_INT(hv_fake_calls(w.hv, "create"), 1);
    world_free(&w);
}

/* rc_free() waits for the creates in flight and queued: none is cut
 * half-way, each instance is defined and running once it returns. */
static void
test_pool_free_waits(void)
{
    enum { DELAY_MS = 200 };
    unsigned workers = test_workers;
    test_workers = 2;
    struct world w;
    world_init(&w);
    test_workers = workers;
    hv_fake_delay(w.hv, "create", DELAY_MS);
    add(&w, U1, POWER_RUNNING, 1);
    add(&w, U2, POWER_RUNNING, 1);
    add(&w, U3, POWER_RUNNING, 1);   /* Queued behind the two threads. */
    uint64_t t0 = util_now_ns();
    struct rc_pass_stats ps;
    CHECK_INT(rc_pass(w.rc, &w.ds, 1000, &ps), 0);
    CHECK(ms_since(t0) < DELAY_MS / 2);
    rc_free(w.rc);
    uint64_t took = ms_since(t0);
    CHECK(took >= 2 * DELAY_MS);
    CHECK_INT(hv_count(&w), 3);
    CHECK(t_power(w.hv, U1) == POWER_RUNNING && t_power(w.hv, U2) == POWER_RUNNING &&
          t_power(w.hv, U3) == POWER_RUNNING);
    w.rc = NULL;
    world_free(&w);
}

int
main(void)
{
    test_decide_table();
    /* Every transcript with one worker (every step in order), then with
     * the default number of workers (the creates of a pass at once). */
    unsigned workers[] = { 1, 0 };
    for (size_t i = 0; i < sizeof workers / sizeof workers[0]; i++) {
        test_workers = workers[i];
        fprintf(stderr, "transcripts with workers = %u\n", test_workers);
        test_create_and_power();
        test_progress();
        test_guest_powers_off();
        test_orphan_grace_and_foreign();
        test_moves();
        test_retries_and_error();
        test_waiting_for_port();
        test_crash_convergence();
        test_scale();
        test_fake_migrate();
        test_live_migration();
        test_live_waits_for_ports();
    }
    test_workers = 0;
    test_parallel_creates();
    test_pool_overlap();
    test_pool_busy();
    test_pool_free_waits();
    test_fake_migrate_between_processes();
    return check_exit();
}
