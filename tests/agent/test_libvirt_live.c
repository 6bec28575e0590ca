/* Live migration between two libvirt "hosts" on this machine: node A on
 * the system libvirtd, node B on a second libvirtd that
 * tests/agent/libvirt_pair.sh starts in namespaces of its own.  Each node
 * has its own state directory and image cache.  The test guest boots on A
 * (direct kernel boot, a qcow2 overlay) printing a heartbeat counter on its
 * serial console every second; the destination's storage is prepared as
 * B's agent would (its cache, its overlay) and A's provider moves the
 * running guest to B with migrate_live(), given the definition B builds
 * (hv_migration_dest_xml()).  What a user would check: the instance runs
 * on B, persistent there with B's node name and B's overlay in use, and is
 * gone from A; the guest did not reboot (one "init started" over both
 * console logs, the heartbeat count and the guest's uptime go on in B's
 * log); then back from B to A the same way, once A has removed its old
 * copy of the storage.  A migration that cannot finish in its time limit
 * (1 MiB/s, 2 s) is aborted with -ETIMEDOUT and the guest runs on on A.  Bad requests (unknown
 * instance, a destination XML with the source's paths) fail and move
 * nothing.  Cleanup leaves no domain, QEMU or daemon.  Exits 77 without
 * root, libvirtd or the test guest. */
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

static char pair_uri[PATH_MAX + 64], system_uri[PATH_MAX + 64];

/* The last heartbeat of a console log: its count and the guest's uptime;
 * 'first': the first one instead.  Count 0 when there is none. */
static long
heartbeat(const char *path, bool first, double *uptime)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[512];
    long k = 0;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "nimbus-guest: heartbeat ");
        double up = 0;
        long n;
        if (p && sscanf(p, "nimbus-guest: heartbeat %ld uptime %lf", &n, &up) == 2) {
            k = n;
            *uptime = up;
            if (first)
                break;
        }
    }
    fclose(f);
    return k;
}

static int
count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

struct node {
    const char *name;
    char dir[PATH_MAX];
    struct hypervisor *hv;
    struct img_cache *cache;
    struct storage *stor;
    struct rc_prepared p;
    struct hv_create_args args;
};

static int
node_open(struct node *n, const char *root, const char *name, const char *uri,
          const char *srcdir)
{
    n->name = name;
    bfmt(n->dir, sizeof n->dir, "%s/%s", root, name);
    mkdir(n->dir, 0755);
    char cachedir[PATH_MAX];
    bfmt(cachedir, sizeof cachedir, "%s/images", n->dir);
    struct hv_config hc = { .type = "libvirt", .libvirt_uri = uri, .virt_type = "qemu",
                            .state_dir = n->dir, .node = name };
    char err[512];
    if (hv_open(&hc, &n->hv, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", name, err);
        return -1;
    }
    struct img_fetcher f = { img_fetch_dir, (void *)srcdir };
    if (img_cache_new(cachedir, f, &n->cache) || storage_new(n->dir, n->cache, false, &n->stor))
        return -1;
    return 0;
}

/* The node's storage for 'd' (image cache, overlay), as its agent
 * prepares it before create or an incoming migration. */
static int
node_prepare(struct node *n, const struct inst_desired *d)
{
    struct rc_storage si = storage_interface(n->stor);
    char err[512];
    int r = si.prepare(si.ctx, d, &n->p, err, sizeof err);
    if (r) {
        fprintf(stderr, "%s: prepare: %s\n", n->name, err);
        return r;
    }
    struct hv_create_args a = {
        .d = d, .inst_dir = n->p.inst_dir, .disk_path = n->p.disk[0] ? n->p.disk : NULL,
        .disk_format = n->p.disk_format[0] ? n->p.disk_format : "qcow2",
        .kernel_path = n->p.kernel[0] ? n->p.kernel : NULL,
        .ramdisk_path = n->p.ramdisk[0] ? n->p.ramdisk : NULL, .console_log = n->p.console_log,
    };
    n->args = a;
    return 0;
}

static void
node_close(struct node *n)
{
    storage_free(n->stor);
    img_cache_free(n->cache);
    hv_close(n->hv);
}

/* Moves 'd' from 'src' to 'dst', live, and checks what a user would. */
static void
migrate(struct node *src, const char *src_uri, struct node *dst, const char *dst_uri,
        const struct inst_desired *d)
{
    CHECK_INT(node_prepare(dst, d), 0);
    char *xml = hv_migration_dest_xml(dst->hv, &dst->args, d->generation);
    CHECK(xml != NULL);
    if (!xml)
        return;
    double before_up = 0;
    long before = heartbeat(src->p.console_log, false, &before_up);
    struct hv_migrate_args m = { .d = d, .dest_uri = dst_uri, .dest_xml = xml,
                                 .inst_dir_dest = dst->p.inst_dir };
    double t0 = t_now();
    int r = src->hv->class->migrate_live(src->hv, &m);
    fprintf(stderr, "live migration %s -> %s: %.2f s%s%s\n", src->name, dst->name,
            t_now() - t0, r ? ": " : "", r ? hv_err(src->hv) : "");
    CHECK_INT(r, 0);
    free(xml);

    /* Runs on the destination, gone from the source. */
    CHECK_INT(t_power(dst->hv, d->uuid), POWER_RUNNING);
    CHECK_INT(t_power(src->hv, d->uuid), POWER_NOSTATE);
    char args[128], out[16384];
    bfmt(args, sizeof args, "dominfo %s", d->uuid);
    CHECK(t_virsh(src_uri, args, NULL, 0) != 0);
    /* The destination's overlay is the one in use, and the definition
     * kept there is the destination's. */
    bfmt(args, sizeof args, "domblklist %s", d->uuid);
    CHECK_INT(t_virsh(dst_uri, args, out, sizeof out), 0);
    CHECK(strstr(out, dst->p.disk) != NULL);
    bfmt(args, sizeof args, "dumpxml --inactive %s", d->uuid);
    CHECK_INT(t_virsh(dst_uri, args, out, sizeof out), 0);
    char want[PATH_MAX + 64];
    bfmt(want, sizeof want, "<nimbus:node>%s</nimbus:node>", dst->name);
    CHECK(strstr(out, want) != NULL);
    bfmt(want, sizeof want, "<source file='%s'/>", dst->p.disk);
    CHECK(strstr(out, want) != NULL);
    CHECK(strstr(out, src->dir) == NULL);

    /* The guest did not reboot: its heartbeat goes on in the
     * destination's console log, counting on, with a growing uptime. */
    CHECK(t_wait_file(dst->p.console_log, "nimbus-guest: heartbeat", 3, 30) >= 0);
    double first_up = 0, last_up = 0;
    long first = heartbeat(dst->p.console_log, true, &first_up);
    long last = heartbeat(dst->p.console_log, false, &last_up);
    fprintf(stderr, "heartbeat on %s: %ld (uptime %.1f s) before, %ld..%ld (uptime %.1f..%.1f s)"
            " after\n", src->name, before, before_up, first, last, first_up, last_up);
    CHECK(before > 0);
    CHECK(first >= before && first <= before + 30);
    CHECK(last > first);
    CHECK(first_up >= before_up && last_up > first_up);
    CHECK_INT(count_in_file(dst->p.console_log, "nimbus-guest: init started"), 0);
}

int
main(void)
{
    const char *src = getenv("NIMBUS_SOURCE");
    if (geteuid() != 0 || !src || system("virsh -c qemu:///system version >/dev/null 2>&1")) {
        fprintf(stderr, "libvirtd not reachable at qemu:///system (run deploy/libvirt-setup): "
                        "skipped\n");
        return 77;
    }
    if (system("command -v libvirtd >/dev/null && command -v qemu-system-x86_64 >/dev/null")) {
        fprintf(stderr, "libvirtd or qemu-system-x86_64 not installed: skipped\n");
        return 77;
    }
    char guest[PATH_MAX];
    if (!t_guest(guest)) {
        fprintf(stderr, "cannot build the test guest (deploy/build-guest): skipped\n");
        return 77;
    }
    char root[] = "/tmp/nimbus-lvlive-XXXXXX";
    if (!mkdtemp(root))
        return 1;
    chmod(root, 0755);
    char srcdir[PATH_MAX], pairdir[PATH_MAX], cmd[4 * PATH_MAX];
    bfmt(srcdir, sizeof srcdir, "%s/src", root);
    bfmt(pairdir, sizeof pairdir, "%s/pair", root);
    mkdir(srcdir, 0755);

    /* The second libvirtd. */
    bfmt(cmd, sizeof cmd, "%s/tests/agent/libvirt_pair.sh start %s >/dev/null", src, pairdir);
    CHECK_INT(system(cmd), 0);
    bfmt(pair_uri, sizeof pair_uri, "qemu+unix:///system?socket=%s/sock/libvirt-sock", pairdir);
    /* The system libvirtd as the second one reaches it (its own
     * /run/libvirt hides the usual socket). */
    FILE *pf = fopen("/run/libvirtd.pid", "r");
    long syspid = 0;
    if (pf) {
        if (fscanf(pf, "%ld", &syspid) != 1)
            syspid = 0;
        fclose(pf);
    }
    CHECK(syspid > 0);
    bfmt(system_uri, sizeof system_uri,
         "qemu+unix:///system?socket=/proc/%ld/root/run/libvirt/libvirt-sock", syspid);
    CHECK_INT(t_virsh(pair_uri, "version", NULL, 0), 0);
    CHECK_INT(t_virsh(system_uri, "version", NULL, 0), 0);

    static struct inst_desired d;
    util_uuid4(d.uuid);
    bfmt(d.name, sizeof d.name, "lvlive");
    d.vcpus = 1;
    d.ram_mb = 128;
    d.disk_gb = 1;
    CHECK(t_image(guest, "disk.qcow2", srcdir, "ami-live", "ami", &d.image));
    CHECK(t_image(guest, "vmlinuz", srcdir, "aki-live", "aki", &d.kernel));
    CHECK(t_image(guest, "initrd.img", srcdir, "ari-live", "ari", &d.ramdisk));
    bfmt(d.image.kernel_id, sizeof d.image.kernel_id, "aki-live");
    bfmt(d.image.ramdisk_id, sizeof d.image.ramdisk_id, "ari-live");
    bfmt(d.image.os_command_line, sizeof d.image.os_command_line,
         "console=ttyS0 quiet nimbus.heartbeat=1");
    d.power = POWER_RUNNING;
    d.generation = 1;

    static struct node a, b;
    char args[128];
    CHECK_INT(node_open(&a, root, "node-a", system_uri, srcdir), 0);
    CHECK_INT(node_open(&b, root, "node-b", pair_uri, srcdir), 0);
    if (!a.hv || !b.hv)
        goto out;
    CHECK(a.hv->class->migrate_live != NULL);

    /* Boots on A. */
    CHECK_INT(node_prepare(&a, &d), 0);
    CHECK_INT(a.hv->class->create(a.hv, &a.args, true), 0);
    CHECK_INT(t_power(a.hv, d.uuid), POWER_RUNNING);
    double boot = t_wait_file(a.p.console_log, "nimbus-guest: ready", 1, 90);
    fprintf(stderr, "guest boot on node-a: %.1f s\n", boot);
    CHECK(boot >= 0);
    CHECK(t_wait_file(a.p.console_log, "nimbus-guest: heartbeat", 3, 30) >= 0);

    /* Bad requests move nothing. */
    static struct inst_desired ghost;
    ghost = d;
    util_uuid4(ghost.uuid);
    CHECK_INT(node_prepare(&b, &d), 0);
    char *bxml = hv_migration_dest_xml(b.hv, &b.args, 1);
    CHECK(bxml != NULL);
    struct hv_migrate_args bad = { .d = &ghost, .dest_uri = pair_uri, .dest_xml = bxml,
                                   .inst_dir_dest = b.p.inst_dir };
    CHECK_INT(a.hv->class->migrate_live(a.hv, &bad), -ENOENT);
    char *axml = hv_migration_dest_xml(a.hv, &a.args, 1);
    bad.d = &d;
    bad.dest_xml = axml;       /* The source's own paths. */
    CHECK_INT(a.hv->class->migrate_live(a.hv, &bad), -EINVAL);
    free(axml);
    free(bxml);
    CHECK_INT(t_power(a.hv, d.uuid), POWER_RUNNING);
    CHECK_INT(t_power(b.hv, d.uuid), POWER_NOSTATE);

    /* A migration that cannot finish in time (1 MiB/s for 128 MiB, a 2 s
     * limit) is aborted: the guest runs on on A, nothing is left on B,
     * whose agent then removes the storage it had prepared. */
    struct hv_config slow_cfg = { .type = "libvirt", .libvirt_uri = system_uri,
                                  .virt_type = "qemu", .state_dir = a.dir, .node = "node-a",
                                  .migrate_timeout_s = 2 };
    struct hypervisor *slow;
    char err[512];
    CHECK_INT(hv_open(&slow_cfg, &slow, err, sizeof err), 0);
    bxml = hv_migration_dest_xml(b.hv, &b.args, 1);
    struct hv_migrate_args sm = { .d = &d, .dest_uri = pair_uri, .dest_xml = bxml,
                                  .inst_dir_dest = b.p.inst_dir, .bandwidth_mib = 1 };
    double t0 = t_now();
    CHECK_INT(slow->class->migrate_live(slow, &sm), -ETIMEDOUT);
    fprintf(stderr, "slow migration: %s after %.1f s\n", hv_err(slow), t_now() - t0);
    CHECK(t_now() - t0 < 30);
    free(bxml);
    hv_close(slow);
    CHECK_INT(t_power(a.hv, d.uuid), POWER_RUNNING);
    CHECK_INT(t_power(b.hv, d.uuid), POWER_NOSTATE);
    bfmt(args, sizeof args, "dominfo %s", d.uuid);
    CHECK(t_virsh(pair_uri, args, NULL, 0) != 0);
    double up0 = 0, up1 = 0;
    long k0 = heartbeat(a.p.console_log, false, &up0);
    CHECK(t_wait_file(a.p.console_log, "nimbus-guest: heartbeat", (int)k0 + 2, 30) >= 0);
    CHECK(heartbeat(a.p.console_log, false, &up1) >= k0 + 2 && up1 > up0);
    struct rc_storage sb = storage_interface(b.stor);
    CHECK_INT(sb.remove(sb.ctx, d.uuid, err, sizeof err), 0);

    /* A to B; A's agent then removes its copy of the instance's storage,
     * as after any move away. */
    migrate(&a, system_uri, &b, pair_uri, &d);
    CHECK_INT(count_in_file(a.p.console_log, "nimbus-guest: init started"), 1);
    struct rc_storage sa = storage_interface(a.stor);
    CHECK_INT(sa.remove(sa.ctx, d.uuid, err, sizeof err), 0);
    /* And back, onto a new overlay on A. */
    migrate(&b, pair_uri, &a, system_uri, &d);

out:
    if (a.hv)
        CHECK_INT(a.hv->class->destroy(a.hv, d.uuid), 0);
    if (b.hv)
        CHECK_INT(b.hv->class->destroy(b.hv, d.uuid), 0);
    bfmt(args, sizeof args, "dominfo %s", d.uuid);
    CHECK(t_virsh(system_uri, args, NULL, 0) != 0);
    node_close(&a);
    node_close(&b);
    /* Stops the second libvirtd and whatever it started; fails if any of
     * its processes survive. */
    bfmt(cmd, sizeof cmd, "%s/tests/agent/libvirt_pair.sh stop %s", src, pairdir);
    CHECK_INT(system(cmd), 0);
    bfmt(cmd, sizeof cmd, "pgrep -f -- '[g]uest=nimbus-%s' >/dev/null", d.uuid);
    CHECK(system(cmd) != 0);
    bfmt(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd)) {
    }
    return check_exit();
}
