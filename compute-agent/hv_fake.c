/* The fake hypervisor: instances in memory, with failure injection, for the
 * reconciler's unit tests and the scheduler's scale simulation.  Safe for
 * concurrent operations, like the real providers: one mutex guards the
 * state of every fake in the process (a live migration moves an instance
 * from one fake to another); a delay set by a test is slept outside it. */
#include "hypervisor.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FAKE_OPS(X) X(create) X(start) X(stop) X(reboot) X(pause) X(unpause) \
    X(suspend) X(resume) X(destroy) X(set_generation) X(list) X(migrate_live)

enum fake_op {
#define X(n) FOP_##n,
    FAKE_OPS(X)
#undef X
    FOP_N
};
static const char *const fake_op_names[] = {
#define X(n) #n,
    FAKE_OPS(X)
#undef X
};

struct fake_inst {
    struct inst_actual a;
    bool foreign;
    bool foreign_touched;
    char disk[256];
    char rescue_disk[256];       /* Rescue mode: the disk booted from; "" else. */
    char console[512];           /* Its console log, "" for none. */
    unsigned vcpus, ram_mb, disk_gb;
};

/* Appends one line to the instance's console log, as a guest would print
 * it, so that console output can be tested end to end without a guest. */
static void __attribute__((format(printf, 2, 3)))
fake_console(const struct fake_inst *i, const char *fmt, ...)
{
    if (!i->console[0])
        return;
    FILE *f = fopen(i->console, "ae");
    if (!f)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

struct hv_fake {
    struct hypervisor up;
    struct fake_inst *v;
    size_t n, cap;
    int fail_err[FOP_N];
    unsigned fail_count[FOP_N];
    char fail_uuid[FOP_N][37];   /* Only this instance's calls fail; "" any. */
    unsigned calls[FOP_N];
    unsigned delay_ms[FOP_N];
    unsigned running[FOP_N], max_running[FOP_N];
    char node[256];
    char state_dir[256];         /* cfg->state_dir, "" for none. */
    /* state_dir/fake-arrivals: guests moved live here by the fake of
     * another process on this machine, one file per guest; "" for none. */
    char arrivals[300];
    struct hv_fake *next;        /* In fake_nodes. */
};

/* The open fake providers, by node name: the destinations of live
 * migrations ("fake://<node>") in one process.  fake_mu guards the list
 * and the state of every fake. */
static struct hv_fake *fake_nodes;
static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;

static struct hv_fake *
fake_cast(struct hypervisor *hv)
{
    return (struct hv_fake *)hv;
}

static int
fake_open(const struct hv_config *cfg, struct hypervisor **out)
{
    struct hv_fake *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->up.class = &hv_fake_class;
    *out = &f->up;
    hv_node_name(cfg, f->node, sizeof f->node);
    if (cfg->state_dir && cfg->state_dir[0]
        && strlen(cfg->state_dir) < sizeof f->state_dir) {
        snprintf(f->state_dir, sizeof f->state_dir, "%s", cfg->state_dir);
        snprintf(f->arrivals, sizeof f->arrivals, "%s/fake-arrivals", cfg->state_dir);
        if (mkdir(f->state_dir, 0755) < 0 && errno != EEXIST)
            f->arrivals[0] = 0;
        else if (mkdir(f->arrivals, 0755) < 0 && errno != EEXIST)
            f->arrivals[0] = 0;
    }
    pthread_mutex_lock(&fake_mu);
    f->next = fake_nodes;
    fake_nodes = f;
    pthread_mutex_unlock(&fake_mu);
    return 0;
}

static void
fake_close(struct hypervisor *hv)
{
    struct hv_fake *f = fake_cast(hv);
    pthread_mutex_lock(&fake_mu);
    for (struct hv_fake **p = &fake_nodes; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            break;
        }
    pthread_mutex_unlock(&fake_mu);
    free(f->v);
    free(f);
}

/* Counts a call of 'op' (on instance 'uuid', NULL for list) and answers
 * an injected failure.  With fake_mu held. */
static int
fake_enter(struct hv_fake *f, enum fake_op op, const char *uuid)
{
    f->calls[op]++;
    if (f->fail_count[op] && (!f->fail_uuid[op][0] || (uuid && !strcmp(uuid, f->fail_uuid[op])))) {
        f->fail_count[op]--;
        hv_set_error(&f->up, "fake: injected failure of %s", fake_op_names[op]);
        return f->fail_err[op];
    }
    return 0;
}

/* Takes fake_mu for operation 'op', after the delay a test set for it
 * (slept without the lock, as a real provider waits for its hypervisor). */
static void
fake_begin(struct hv_fake *f, enum fake_op op)
{
    pthread_mutex_lock(&fake_mu);
    if (++f->running[op] > f->max_running[op])
        f->max_running[op] = f->running[op];
    unsigned ms = f->delay_ms[op];
    if (ms) {
        pthread_mutex_unlock(&fake_mu);
        struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0)
            ;
        pthread_mutex_lock(&fake_mu);
    }
}

static int
fake_end(struct hv_fake *f, enum fake_op op, int r)
{
    f->running[op]--;
    pthread_mutex_unlock(&fake_mu);
    return r;
}

static struct fake_inst *
fake_find(struct hv_fake *f, const char *uuid)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->v[i].a.uuid, uuid))
            return &f->v[i];
    return NULL;
}

/* Finds a Nimbus-owned instance; a foreign one is reported missing (and
 * marked touched, which a test then catches). */
static struct fake_inst *
fake_owned(struct hv_fake *f, const char *uuid)
{
    struct fake_inst *i = fake_find(f, uuid);
    if (i && i->foreign) {
        i->foreign_touched = true;
        return NULL;
    }
    if (!i)
        hv_set_error(&f->up, "fake: no instance %s", uuid);
    return i;
}

static struct fake_inst *fake_add(struct hv_fake *f, const char *uuid);

/* Takes in the guests other processes' fakes moved here live
 * (fake_send()): each file of f->arrivals, named after the guest's uuid,
 * holds "<power> <generation> <vcpus> <ram_mb> <disk_gb> <console>".  The
 * guest's disk and console log are in its instance directory here. */
static void
fake_adopt_arrivals(struct hv_fake *f)
{
    DIR *dir = f->arrivals[0] ? opendir(f->arrivals) : NULL;
    struct dirent *e;
    while (dir && (e = readdir(dir))) {
        if (strlen(e->d_name) != 36)
            continue;   /* ".", "..", and files still being written. */
        char path[400];
        snprintf(path, sizeof path, "%s/%s", f->arrivals, e->d_name);
        FILE *in = fopen(path, "re");
        int power = 0, console = 0;
        uint64_t gen = 0;
        unsigned vcpus = 0, ram = 0, disk = 0;
        int n = in ? fscanf(in, "%d %" SCNu64 " %u %u %u %d", &power, &gen, &vcpus, &ram, &disk,
                            &console) : 0;
        if (in)
            fclose(in);
        unlink(path);
        if (n != 6 || fake_find(f, e->d_name))
            continue;
        struct fake_inst *i = fake_add(f, e->d_name);
        if (!i)
            continue;
        i->a.power = (enum power_state)power;
        i->a.generation = gen;
        i->vcpus = vcpus;
        i->ram_mb = ram;
        i->disk_gb = disk;
        if (snprintf(i->disk, sizeof i->disk, "%s/instances/%s/disk.qcow2", f->state_dir,
                     e->d_name) >= (int)sizeof i->disk)
            i->disk[0] = 0;
        if (console && snprintf(i->console, sizeof i->console, "%s/instances/%s/console.log",
                                f->state_dir, e->d_name) >= (int)sizeof i->console)
            i->console[0] = 0;
        fake_console(i, "nimbus-fake: arrived, still running");
    }
    if (dir)
        closedir(dir);
}

static int
locked_list(struct hypervisor *hv, struct inst_actual **out, size_t *n)
{
    struct hv_fake *f = fake_cast(hv);
    int r = fake_enter(f, FOP_list, NULL);
    if (r)
        return r;
    fake_adopt_arrivals(f);
    *out = calloc(f->n ? f->n : 1, sizeof **out);
    if (!*out)
        return -ENOMEM;
    *n = 0;
    for (size_t i = 0; i < f->n; i++)
        if (!f->v[i].foreign)
            (*out)[(*n)++] = f->v[i].a;
    return 0;
}

static struct fake_inst *
fake_add(struct hv_fake *f, const char *uuid)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        struct fake_inst *v = realloc(f->v, cap * sizeof *v);
        if (!v)
            return NULL;
        f->v = v;
        f->cap = cap;
    }
    struct fake_inst *i = &f->v[f->n++];
    memset(i, 0, sizeof *i);
    snprintf(i->a.uuid, sizeof i->a.uuid, "%s", uuid);
    i->a.power = POWER_SHUTOFF;
    return i;
}

static int
locked_create(struct hypervisor *hv, const struct hv_create_args *a, bool start)
{
    struct hv_fake *f = fake_cast(hv);
    int r = fake_enter(f, FOP_create, a->d->uuid);
    if (r)
        return r;
    struct fake_inst *i = fake_find(f, a->d->uuid);
    if (i && i->foreign) {
        /* Refused, as libvirt refuses a uuid in use: not a touch. */
        hv_set_error(hv, "fake: uuid %s belongs to a foreign instance", a->d->uuid);
        return -EEXIST;
    }
    if (!i && !(i = fake_add(f, a->d->uuid)))
        return -ENOMEM;
    snprintf(i->disk, sizeof i->disk, "%s", a->disk_path ? a->disk_path :
             a->rootfs_path ? a->rootfs_path : "");
    if (a->console_log && strlen(a->console_log) < sizeof i->console)
        snprintf(i->console, sizeof i->console, "%s", a->console_log);
    i->vcpus = a->d->vcpus;
    i->ram_mb = a->d->ram_mb;
    i->disk_gb = a->d->disk_gb;
    fake_console(i, "nimbus-fake: %s defined with %u vcpus, %u MiB RAM, %u GiB disk",
                 a->d->name, i->vcpus, i->ram_mb, i->disk_gb);
    snprintf(i->rescue_disk, sizeof i->rescue_disk, "%s",
             a->rescue_disk_path ? a->rescue_disk_path : "");
    if (a->rescue_disk_path)
        fake_console(i, "nimbus-fake: rescue mode: boots %s, second disk %s",
                     a->rescue_disk_path, i->disk);
    if (start && i->a.power == POWER_SHUTOFF) {
        i->a.power = POWER_RUNNING;
        fake_console(i, "nimbus-fake: booted with %u vcpus, %u MiB RAM", i->vcpus, i->ram_mb);
    }
    return 0;
}

#define FAKE_SIMPLE(fn, op, body)                                           \
    static int locked_##fn(struct hypervisor *hv, const char *uuid)         \
    {                                                                       \
        struct hv_fake *f = fake_cast(hv);                                  \
        int r = fake_enter(f, op, uuid);                                          \
        if (r)                                                              \
            return r;                                                       \
        struct fake_inst *i = fake_owned(f, uuid);                          \
        if (!i)                                                             \
            return -ENOENT;                                                 \
        body;                                                               \
        return 0;                                                           \
    }

FAKE_SIMPLE(start, FOP_start,
            if (i->a.power == POWER_SHUTOFF || i->a.power == POWER_CRASHED) {
                i->a.power = POWER_RUNNING;
                fake_console(i, "nimbus-fake: booted with %u vcpus, %u MiB RAM", i->vcpus,
                             i->ram_mb);
            })
FAKE_SIMPLE(pause, FOP_pause,
            if (i->a.power != POWER_RUNNING && i->a.power != POWER_PAUSED) return -EINVAL;
            i->a.power = POWER_PAUSED)
FAKE_SIMPLE(unpause, FOP_unpause,
            if (i->a.power == POWER_PAUSED) i->a.power = POWER_RUNNING)
FAKE_SIMPLE(suspend, FOP_suspend,
            if (i->a.power == POWER_SHUTOFF) return -EINVAL;
            i->a.power = POWER_SUSPENDED)
FAKE_SIMPLE(resume, FOP_resume,
            if (i->a.power == POWER_SUSPENDED) i->a.power = POWER_RUNNING)

static int
locked_stop(struct hypervisor *hv, const char *uuid, unsigned timeout_ms)
{
    struct hv_fake *f = fake_cast(hv);
    int r = fake_enter(f, FOP_stop, uuid);
    if (r)
        return r;
    struct fake_inst *i = fake_owned(f, uuid);
    if (!i)
        return -ENOENT;
    if (i->a.power != POWER_SHUTOFF)
        fake_console(i, "nimbus-fake: powered off");
    i->a.power = POWER_SHUTOFF;
    return 0;
}

static int
locked_reboot(struct hypervisor *hv, const char *uuid, bool hard)
{
    struct hv_fake *f = fake_cast(hv);
    int r = fake_enter(f, FOP_reboot, uuid);
    if (r)
        return r;
    struct fake_inst *i = fake_owned(f, uuid);
    if (!i)
        return -ENOENT;
    i->a.power = POWER_RUNNING;
    return 0;
}

static int
locked_destroy(struct hypervisor *hv, const char *uuid)
{
    struct hv_fake *f = fake_cast(hv);
    int r = fake_enter(f, FOP_destroy, uuid);
    if (r)
        return r;
    struct fake_inst *i = fake_find(f, uuid);
    if (!i)
        return 0;
    if (i->foreign) {
        i->foreign_touched = true;
        return 0;
    }
    *i = f->v[--f->n];
    return 0;
}

static int
locked_set_generation(struct hypervisor *hv, const char *uuid, uint64_t gen)
{
    struct hv_fake *f = fake_cast(hv);
    int r = fake_enter(f, FOP_set_generation, uuid);
    if (r)
        return r;
    struct fake_inst *i = fake_owned(f, uuid);
    if (!i)
        return -ENOENT;
    i->a.generation = gen;
    return 0;
}

char *
hv_fake_dest_xml(struct hypervisor *hv, const struct hv_create_args *a, uint64_t gen)
{
    /* The interfaces name the devices as libvirt's definition does. */
    char ifs[INST_MAX_PORTS * 96 + 1] = "";
    size_t len = 0;
    for (unsigned k = 0; k < a->d->n_ports && len < sizeof ifs; k++) {
        int n = snprintf(ifs + len, sizeof ifs - len, "<interface mac='%s' target='%s'/>",
                         a->d->ports[k].mac, a->d->ports[k].tap);
        len += n > 0 ? (size_t)n : 0;
    }
    char *xml = NULL;
    if (asprintf(&xml, "<fake node='%s' uuid='%s' disk='%s' console='%s' generation='%llu'>"
                 "%s</fake>", fake_cast(hv)->node, a->d->uuid, a->disk_path ? a->disk_path : "",
                 a->console_log ? a->console_log : "", (unsigned long long)gen, ifs) < 0)
        return NULL;
    return xml;
}

/* Hands guest 'i' to the fake of another process on this machine whose
 * instance directory for it is 'inst_dir_dest' (its state_dir/instances/
 * <uuid>): a file in that fake's arrivals directory, written whole and
 * renamed into place.  -EHOSTUNREACH when no fake receives there. */
static int
fake_send(struct hv_fake *f, const struct fake_inst *i, const char *inst_dir_dest)
{
    char dir[400], tmp[480], path[480];
    snprintf(dir, sizeof dir, "%s", inst_dir_dest);
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir) {
            hv_set_error(&f->up, "fake: migrate %s: bad destination directory %s",
                         i->a.uuid, inst_dir_dest);
            return -EINVAL;
        }
        *slash = 0;
    }
    snprintf(path, sizeof path, "%s/fake-arrivals/%s", dir, i->a.uuid);
    snprintf(tmp, sizeof tmp, "%s/fake-arrivals/.%s", dir, i->a.uuid);
    FILE *out = fopen(tmp, "we");
    if (!out) {
        hv_set_error(&f->up, "fake: migrate %s: no fake node receives at %s", i->a.uuid, dir);
        return -EHOSTUNREACH;
    }
    fprintf(out, "%d %" PRIu64 " %u %u %u %d\n", (int)i->a.power, i->a.generation, i->vcpus,
            i->ram_mb, i->disk_gb, i->console[0] != 0);
    if (fclose(out) != 0 || rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        hv_set_error(&f->up, "fake: migrate %s: %s", i->a.uuid, strerror(e));
        return -e;
    }
    return 0;
}

/* Moves the record of a running instance to the fake provider of node
 * "fake://<node>" in this process, its disk and console log now in
 * a->inst_dir_dest; for any other URI, to the fake of another process on
 * this machine that owns a->inst_dir_dest (fake_send()). */
static int
locked_migrate_live(struct hypervisor *hv, const struct hv_migrate_args *a)
{
    struct hv_fake *f = fake_cast(hv);
    int r = fake_enter(f, FOP_migrate_live, a->d->uuid);
    if (r)
        return r;
    struct fake_inst *i = fake_owned(f, a->d->uuid);
    if (!i)
        return -ENOENT;
    if (i->a.power != POWER_RUNNING && i->a.power != POWER_PAUSED) {
        hv_set_error(hv, "fake: migrate %s: not running", a->d->uuid);
        return -EINVAL;
    }
    if (!a->dest_uri || !a->inst_dir_dest) {
        hv_set_error(hv, "fake: migrate %s: bad destination", a->d->uuid);
        return -EINVAL;
    }
    if (strncmp(a->dest_uri, "fake://", 7)) {
        if ((r = fake_send(f, i, a->inst_dir_dest)))
            return r;
        *i = f->v[--f->n];
        return 0;
    }
    struct hv_fake *dst = fake_nodes;
    while (dst && (dst == f || strcmp(dst->node, a->dest_uri + 7)))
        dst = dst->next;
    struct fake_inst *di = NULL;
    if (!dst) {
        hv_set_error(hv, "fake: migrate %s: no node at %s", a->d->uuid, a->dest_uri);
        r = -EIO;
    } else if (fake_find(dst, a->d->uuid)) {
        hv_set_error(hv, "fake: migrate %s: already on %s", a->d->uuid, dst->node);
        r = -EEXIST;
    } else if (!(di = fake_add(dst, a->d->uuid))) {
        r = -ENOMEM;
    }
    if (di) {
        struct fake_inst moved = *i;   /* fake_add() grew dst->v, not f->v. */
        snprintf(moved.disk, sizeof moved.disk, "%s/disk.qcow2", a->inst_dir_dest);
        if (moved.console[0])
            snprintf(moved.console, sizeof moved.console, "%s/console.log", a->inst_dir_dest);
        *di = moved;
        fake_console(di, "nimbus-fake: arrived from %s, still running", f->node);
        *i = f->v[--f->n];
    }
    return r;
}

/* ---- The operations: each under fake_mu. */

#define FAKE_LOCKED(op, call)                                               \
    do {                                                                    \
        struct hv_fake *f_ = fake_cast(hv);                                 \
        fake_begin(f_, op);                                                 \
        return fake_end(f_, op, call);                                      \
    } while (0)

static int
fake_list(struct hypervisor *hv, struct inst_actual **out, size_t *n)
{
    FAKE_LOCKED(FOP_list, locked_list(hv, out, n));
}

static int
fake_create(struct hypervisor *hv, const struct hv_create_args *a, bool start)
{
    FAKE_LOCKED(FOP_create, locked_create(hv, a, start));
}

#define X(fn)                                                               \
    static int fake_##fn(struct hypervisor *hv, const char *uuid)           \
    {                                                                       \
        FAKE_LOCKED(FOP_##fn, locked_##fn(hv, uuid));                       \
    }
X(start) X(pause) X(unpause) X(suspend) X(resume) X(destroy)
#undef X

static int
fake_stop(struct hypervisor *hv, const char *uuid, unsigned timeout_ms)
{
    FAKE_LOCKED(FOP_stop, locked_stop(hv, uuid, timeout_ms));
}

static int
fake_reboot(struct hypervisor *hv, const char *uuid, bool hard)
{
    FAKE_LOCKED(FOP_reboot, locked_reboot(hv, uuid, hard));
}

static int
fake_set_generation(struct hypervisor *hv, const char *uuid, uint64_t gen)
{
    FAKE_LOCKED(FOP_set_generation, locked_set_generation(hv, uuid, gen));
}

static int
fake_migrate_live(struct hypervisor *hv, const struct hv_migrate_args *a)
{
    FAKE_LOCKED(FOP_migrate_live, locked_migrate_live(hv, a));
}

static const char *
fake_virt_type(struct hypervisor *hv)
{
    return "fake";
}

const struct hypervisor_class hv_fake_class = {
    .name = "fake",
    .open = fake_open,
    .close = fake_close,
    .list = fake_list,
    .create = fake_create,
    .start = fake_start,
    .stop = fake_stop,
    .reboot = fake_reboot,
    .pause = fake_pause,
    .unpause = fake_unpause,
    .suspend = fake_suspend,
    .resume = fake_resume,
    .destroy = fake_destroy,
    .set_generation = fake_set_generation,
    .virt_type = fake_virt_type,
    .migrate_live = fake_migrate_live,
};

static int
fake_op_index(const char *op)
{
    for (int i = 0; i < FOP_N; i++)
        if (!strcmp(fake_op_names[i], op))
            return i;
    abort();   /* A test named an operation that does not exist. */
}

void
hv_fake_fail(struct hypervisor *hv, const char *op, int error, unsigned count)
{
    hv_fake_fail_instance(hv, op, NULL, error, count);
}

void
hv_fake_fail_instance(struct hypervisor *hv, const char *op, const char *uuid, int error,
                      unsigned count)
{
    struct hv_fake *f = fake_cast(hv);
    int i = fake_op_index(op);
    pthread_mutex_lock(&fake_mu);
    f->fail_err[i] = error;
    f->fail_count[i] = count;
    snprintf(f->fail_uuid[i], sizeof f->fail_uuid[i], "%s", uuid ? uuid : "");
    pthread_mutex_unlock(&fake_mu);
}

void
hv_fake_delay(struct hypervisor *hv, const char *op, unsigned ms)
{
    int i = fake_op_index(op);
    pthread_mutex_lock(&fake_mu);
    fake_cast(hv)->delay_ms[i] = ms;
    pthread_mutex_unlock(&fake_mu);
}

unsigned
hv_fake_max_concurrent(struct hypervisor *hv, const char *op)
{
    int i = fake_op_index(op);
    pthread_mutex_lock(&fake_mu);
    unsigned m = fake_cast(hv)->max_running[i];
    pthread_mutex_unlock(&fake_mu);
    return m;
}

int
hv_fake_set_power(struct hypervisor *hv, const char *uuid, enum power_state p)
{
    pthread_mutex_lock(&fake_mu);
    struct fake_inst *i = fake_find(fake_cast(hv), uuid);
    if (i)
        i->a.power = p;
    pthread_mutex_unlock(&fake_mu);
    return i ? 0 : -ENOENT;
}

void
hv_fake_add_foreign(struct hypervisor *hv, const char *uuid)
{
    pthread_mutex_lock(&fake_mu);
    struct fake_inst *i = fake_add(fake_cast(hv), uuid);
    if (i) {
        i->foreign = true;
        i->a.power = POWER_RUNNING;
    }
    pthread_mutex_unlock(&fake_mu);
}

bool
hv_fake_foreign_intact(struct hypervisor *hv, const char *uuid)
{
    pthread_mutex_lock(&fake_mu);
    struct fake_inst *i = fake_find(fake_cast(hv), uuid);
    bool ok = i && i->foreign && !i->foreign_touched && i->a.power == POWER_RUNNING;
    pthread_mutex_unlock(&fake_mu);
    return ok;
}

unsigned
hv_fake_calls(struct hypervisor *hv, const char *op)
{
    int i = fake_op_index(op);
    pthread_mutex_lock(&fake_mu);
    unsigned n = fake_cast(hv)->calls[i];
    pthread_mutex_unlock(&fake_mu);
    return n;
}

/* The two below return pointers into the fake's state: for tests, between
 * operations. */
const char *
hv_fake_rescue_disk(struct hypervisor *hv, const char *uuid)
{
    pthread_mutex_lock(&fake_mu);
    struct fake_inst *i = fake_find(fake_cast(hv), uuid);
    pthread_mutex_unlock(&fake_mu);
    return i ? i->rescue_disk : NULL;
}

const char *
hv_fake_disk(struct hypervisor *hv, const char *uuid)
{
    pthread_mutex_lock(&fake_mu);
    struct fake_inst *i = fake_find(fake_cast(hv), uuid);
    pthread_mutex_unlock(&fake_mu);
    return i ? i->disk : NULL;
}

int
hv_fake_flavor(struct hypervisor *hv, const char *uuid, unsigned *vcpus, unsigned *ram_mb)
{
    pthread_mutex_lock(&fake_mu);
    struct fake_inst *i = fake_owned(fake_cast(hv), uuid);
    if (i) {
        *vcpus = i->vcpus;
        *ram_mb = i->ram_mb;
    }
    pthread_mutex_unlock(&fake_mu);
    return i ? 0 : -ENOENT;
}
