/* Containers through runc: the reconciler with the oci provider runs a
 * container from the image cache's read-only unpacked layer (a busybox
 * rootfs tarball from deploy/build-guest) under an overlayfs upper
 * directory of its own, sees it RUNNING, its stdout in the console log, the
 * flavor's memory and CPU limits in its cgroup, its own network namespace;
 * then stop (SIGTERM), start, pause/unpause, a container that exits by
 * itself reported SHUTOFF, and delete (unmounted, directory gone, cached
 * layer untouched).  Exits 77 without runc or root. */
#include "reconcile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hypervisor.h"
#include "image_cache.h"
#include "storage.h"
#include "util.h"
#include "agent_test_util.h"
#include "../check.h"

/* Random per run: concurrent runs never share a cgroup. */
static char UC[37];

static struct reconciler *rc;
static struct hypervisor *hv;
static struct desired_set ds;
static char events[4096];

static void
on_event(void *ctx, const char *uuid, const char *event, const char *detail)
{
    size_t n = strlen(events);
    bfmt(events + n, sizeof events - n, "%.8s:%s ", uuid, event);
    fprintf(stderr, "  event %s %s %s\n", uuid, event, detail);
}

static double
pass(void)
{
    struct rc_pass_stats st;
    double t0 = t_now();
    CHECK_INT(rc_pass(rc, &ds, t_now_ms(), &st), 0);
    return t_now() - t0;
}

static enum power_state
power(const char *uuid)
{
    struct inst_actual *v;
    size_t n;
    enum power_state p = POWER_NOSTATE;
    if (hv->class->list(hv, &v, &n))
        return p;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].uuid, uuid))
            p = v[i].power;
    free(v);
    return p;
}

/* The first line of a cgroup file of the container, v1 or v2 layout. */
static bool
cgroup_value(const char *v1ctl, const char *v1file, const char *v2file, char *out, size_t len)
{
    char p[PATH_MAX];
    bfmt(p, sizeof p, "/sys/fs/cgroup/%s/nimbus/%s/%s", v1ctl, UC, v1file);
    FILE *f = fopen(p, "r");
    if (!f) {
        bfmt(p, sizeof p, "/sys/fs/cgroup/nimbus/%s/%s", UC, v2file);
        f = fopen(p, "r");
    }
    if (!f)
        return false;
    bool ok = fgets(out, (int)len, f) != NULL;
    fclose(f);
    out[strcspn(out, "\n")] = 0;
    return ok;
}

int
main(void)
{
    util_uuid4(UC);
    if (geteuid() != 0 || system("runc --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "runc missing or not root: skipped\n");
        return 77;
    }
    char guest[PATH_MAX];
    if (!t_guest(guest)) {
        fprintf(stderr, "cannot build the test guest's rootfs: skipped\n");
        return 77;
    }
    char root[] = "/tmp/nimbus-ocitest-XXXXXX";
    if (!mkdtemp(root))
        return 1;
    chmod(root, 0755);
    char srcdir[PATH_MAX], cachedir[PATH_MAX], dir[PATH_MAX], log[PATH_MAX], val[128];
    bfmt(srcdir, sizeof srcdir, "%s/src", root);
    bfmt(cachedir, sizeof cachedir, "%s/images", root);
    mkdir(srcdir, 0755);

    static struct inst_desired c;
    bfmt(c.uuid, sizeof c.uuid, "%s", UC);
    bfmt(c.name, sizeof c.name, "ctest");
    c.vcpus = 1;
    c.ram_mb = 64;
    CHECK(t_image(guest, "rootfs.tar", srcdir, "busybox-rootfs", "raw", &c.image));
    bfmt(c.image.container_format, sizeof c.image.container_format, "docker");
    c.power = POWER_RUNNING;
    c.generation = 1;
    ds.insts = &c;
    ds.n = 1;

    struct hv_config hc = { .type = "oci", .state_dir = root };
    char err[512];
    if (hv_open(&hc, &hv, err, sizeof err)) {
        fprintf(stderr, "oci provider: %s: skipped\n", err);
        return 77;
    }
    struct img_cache *cache;
    struct img_fetcher f = { img_fetch_dir, srcdir };
    CHECK_INT(img_cache_new(cachedir, f, &cache), 0);
    struct storage *stor;
    CHECK_INT(storage_new(root, cache, true, &stor), 0);
    struct rc_storage si = storage_interface(stor);
    struct rc_config cfg = { .grace_ms = 0, .max_attempts = 3, .stop_timeout_ms = 5000 };
    CHECK_INT(rc_new(hv, &si, &cfg, on_event, NULL, &rc), 0);
    storage_inst_dir(stor, UC, dir);
    bfmt(log, sizeof log, "%s/console.log", dir);

    double t = pass();
    fprintf(stderr, "container create pass (cold cache: fetch, unpack, overlay, runc run): %.0f ms\n",
            t * 1000);
    CHECK_INT(power(UC), POWER_RUNNING);
    double up = t_wait_file(log, "nimbus-container: started on ctest", 1, 10);
    fprintf(stderr, "container start to its first console line: %.3f s\n", up);
    CHECK(up >= 0);

    /* Limits in its cgroup. */
    if (cgroup_value("memory", "memory.limit_in_bytes", "memory.max", val, sizeof val))
        CHECK_STR(val, "67108864");
    else
        CHECK(!"no memory cgroup for the container");
    if (cgroup_value("cpu", "cpu.cfs_quota_us", "cpu.max", val, sizeof val))
        CHECK(!strcmp(val, "100000") || !strcmp(val, "100000 100000"));
    else
        CHECK(!"no cpu cgroup for the container");

    /* Its own network namespace: only lo inside. */
    char cmd[2 * PATH_MAX];
    bfmt(cmd, sizeof cmd, "runc --root %s/runc exec nimbus-%s cat /proc/net/dev | grep -v -e lo: -e Inter -e face | grep -q .",
         root, UC);
    CHECK(system(cmd) != 0);
    /* Writes go to the upper directory, never to the cached layer. */
    bfmt(cmd, sizeof cmd, "runc --root %s/runc exec nimbus-%s sh -c 'echo x > /written' && "
         "test -f %s/upper/written && ! test -e %s/layers/busybox-rootfs/rootfs/written",
         root, UC, dir, cachedir);
    CHECK_INT(system(cmd), 0);

    /* Stop (SIGTERM, the container's trap answers), start again. */
    c.power = POWER_SHUTOFF;
    c.generation = 2;
    t = pass();
    fprintf(stderr, "container stop: %.2f s\n", t);
    CHECK_INT(power(UC), POWER_SHUTOFF);
    CHECK(t_wait_file(log, "nimbus-container: stopping", 1, 2) >= 0);
    c.power = POWER_RUNNING;
    c.generation = 3;
    pass();
    CHECK_INT(power(UC), POWER_RUNNING);
    CHECK(t_wait_file(log, "nimbus-container: started on ctest", 2, 10) >= 0);

    /* Pause and unpause (cgroup freezer). */
    c.power = POWER_PAUSED;
    c.generation = 4;
    pass();
    CHECK_INT(power(UC), POWER_PAUSED);
    c.power = POWER_RUNNING;
    c.generation = 5;
    pass();
    CHECK_INT(power(UC), POWER_RUNNING);

    /* The container's process ends by itself: SHUTOFF, not restarted. */
    events[0] = 0;
    bfmt(cmd, sizeof cmd, "runc --root %s/runc kill nimbus-%s KILL", root, UC);
    CHECK_INT(system(cmd), 0);
    for (int i = 0; i < 50 && power(UC) != POWER_SHUTOFF; i++)
        usleep(100000);
    pass();
    pass();
    CHECK_INT(power(UC), POWER_SHUTOFF);
    char want[64];
    bfmt(want, sizeof want, "%.8s:power-off-by-guest", UC);
    CHECK(strstr(events, want) != NULL);

    /* Delete. */
    c.deleted = true;
    pass();
    CHECK_INT(power(UC), POWER_NOSTATE);
    CHECK(access(dir, F_OK) != 0);
    char layer[PATH_MAX];
    bfmt(layer, sizeof layer, "%s/layers/busybox-rootfs/rootfs/bin/busybox", cachedir);
    CHECK(access(layer, F_OK) == 0);

    rc_free(rc);
    storage_free(stor);
    img_cache_free(cache);
    hv_close(hv);
    bfmt(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd)) {
    }
    return check_exit();
}
