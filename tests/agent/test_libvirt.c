/* Integration with real libvirtd and QEMU (TCG on this machine): the
 * reconciler boots the test guest (aki/ari/ami: Debian cloud kernel,
 * busybox initramfs, an empty disk) from the image cache through a qcow2
 * overlay resized to the flavor, sees it RUNNING and its serial console
 * print the guest's own messages; the same guest as a whole-disk qcow2
 * (syslinux) boots from its disk alone; then stop (ACPI), start, hard reboot,
 * pause/unpause, suspend (managed save)/resume, a guest that powers itself
 * off reported SHUTOFF and not restarted, deletion of an instance nobody
 * wants, explicit deletion, and a domain defined by hand (even named like
 * ours) never touched.  Exits 77 when libvirtd or the guest is missing;
 * built only with the libvirt provider. */
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

/* Random per run: concurrent runs (two build directories) never meet. */
static char UA[37], UB[37], UC[37], UF[37];

static char events[8192];

static void
on_event(void *ctx, const char *uuid, const char *event, const char *detail)
{
    size_t n = strlen(events);
    bfmt(events + n, sizeof events - n, "%.8s:%s ", uuid, event);
    fprintf(stderr, "  event %s %s %s\n", uuid, event, detail);
}

static struct reconciler *rc;
static struct hypervisor *hv;
static struct desired_set ds;

static double
pass(uint64_t now)
{
    struct rc_pass_stats st;
    double t0 = t_now();
    int r = rc_pass(rc, &ds, now, &st);
    CHECK_INT(r, 0);
    rc_drain(rc, &st);   /* The creates it handed to the pool. */
    if (st.failures)
        fprintf(stderr, "  pass had %u failed steps\n", st.failures);
    return t_now() - t0;
}

static enum power_state
power(const char *uuid)
{
    return t_power(hv, uuid);
}

static enum rc_state
state(const char *uuid)
{
    const struct rc_inst *ri = rc_find(rc, uuid);
    return ri ? ri->state : RC_N_STATES;
}

static int
virsh(const char *args)
{
    char cmd[1024];
    bfmt(cmd, sizeof cmd, "virsh -q -c qemu:///system %s >/dev/null 2>&1", args);
    return system(cmd);
}

/* virsh VERB nimbus-UUID */
static int
virsh_dom(const char *verb, const char *uuid)
{
    char args[128];
    bfmt(args, sizeof args, "%s nimbus-%s", verb, uuid);
    return virsh(args);
}

int
main(void)
{
    util_uuid4(UA);
    util_uuid4(UB);
    util_uuid4(UC);
    util_uuid4(UF);
    if (geteuid() != 0 || virsh("version") != 0) {
        fprintf(stderr, "libvirtd not reachable at qemu:///system (run deploy/libvirt-setup): skipped\n");
        return 77;
    }
    char guest[PATH_MAX];
    if (!t_guest(guest)) {
        fprintf(stderr, "cannot build the test guest (deploy/build-guest): skipped\n");
        return 77;
    }
    char root[] = "/tmp/nimbus-lvtest-XXXXXX";
    if (!mkdtemp(root))
        return 1;
    chmod(root, 0755);
    char srcdir[PATH_MAX], cachedir[PATH_MAX], console[PATH_MAX], dir[PATH_MAX];
    bfmt(srcdir, sizeof srcdir, "%s/src", root);
    bfmt(cachedir, sizeof cachedir, "%s/images", root);
    mkdir(srcdir, 0755);

    static struct inst_desired insts[2];
    struct inst_desired *a = &insts[0];
    memset(a, 0, sizeof *a);
    bfmt(a->uuid, sizeof a->uuid, "%s", UA);
    bfmt(a->name, sizeof a->name, "lvtest-a");
    a->vcpus = 1;
    a->ram_mb = 128;
    a->disk_gb = 1;
    CHECK(t_image(guest, "disk.qcow2", srcdir, "ami-test", "ami", &a->image));
    CHECK(t_image(guest, "vmlinuz", srcdir, "aki-test", "aki", &a->kernel));
    CHECK(t_image(guest, "initrd.img", srcdir, "ari-test", "ari", &a->ramdisk));
    bfmt(a->image.kernel_id, sizeof a->image.kernel_id, "aki-test");
    bfmt(a->image.ramdisk_id, sizeof a->image.ramdisk_id, "ari-test");
    bfmt(a->image.os_command_line, sizeof a->image.os_command_line, "console=ttyS0 quiet");
    a->power = POWER_RUNNING;
    a->generation = 1;
    ds.insts = insts;
    ds.n = 1;

    /* Whole-disk boot: boot.qcow2 from deploy/build-guest (when syslinux
     * is installed), booted at the same time as A. */
    char bootimg[PATH_MAX];
    bfmt(bootimg, sizeof bootimg, "%s/boot.qcow2", guest);
    bool whole_disk = access(bootimg, F_OK) == 0;
    if (whole_disk) {
        struct inst_desired *c = &insts[1];
        memset(c, 0, sizeof *c);
        bfmt(c->uuid, sizeof c->uuid, "%s", UC);
        bfmt(c->name, sizeof c->name, "lvtest-c");
        c->vcpus = 1;
        c->ram_mb = 128;
        c->disk_gb = 1;
        CHECK(t_image(guest, "boot.qcow2", srcdir, "qcow2-boot", "qcow2", &c->image));
        c->power = POWER_RUNNING;
        c->generation = 1;
        ds.n = 2;
    } else {
        fprintf(stderr, "no boot.qcow2 (syslinux not installed): whole-disk boot not tested\n");
    }

    struct hv_config hc = { .type = "libvirt", .virt_type = "auto", .state_dir = root };
    char err[512];
    if (hv_open(&hc, &hv, err, sizeof err)) {
        fprintf(stderr, "libvirt provider: %s\n", err);
        return 1;
    }
    fprintf(stderr, "virt type: %s\n", hv->class->virt_type(hv));
    struct img_cache *cache;
    struct img_fetcher f = { img_fetch_dir, srcdir };
    CHECK_INT(img_cache_new(cachedir, f, &cache), 0);
    struct storage *stor;
    CHECK_INT(storage_new(root, cache, false, &stor), 0);
    struct rc_storage si = storage_interface(stor);
    struct rc_config cfg = { .grace_ms = 5000, .max_attempts = 3, .stop_timeout_ms = 8000 };
    CHECK_INT(rc_new(hv, &si, &cfg, on_event, NULL, &rc), 0);
    storage_inst_dir(stor, UA, dir);
    bfmt(console, sizeof console, "%s/console.log", dir);

    /* A domain made by hand, named and numbered like ours, no metadata. */
    char fxml[PATH_MAX], cmd[2 * PATH_MAX];
    bfmt(fxml, sizeof fxml, "%s/foreign.xml", root);
    FILE *fx = fopen(fxml, "w");
    fprintf(fx, "<domain type='qemu'><name>nimbus-%s</name><uuid>%s</uuid>"
                "<memory unit='MiB'>32</memory><vcpu>1</vcpu>"
                "<os><type arch='x86_64'>hvm</type></os></domain>\n", UF, UF);
    fclose(fx);
    virsh_dom("undefine", UF);
    bfmt(cmd, sizeof cmd, "define %s", fxml);
    CHECK_INT(virsh(cmd), 0);

    /* Create: cold cache. */
    double t = pass(t_now_ms());
    fprintf(stderr, "create pass (cold cache, overlay, define, start): %.0f ms\n", t * 1000);
    CHECK_INT(power(UA), POWER_RUNNING);
    CHECK_INT(state(UA), RC_ACTIVE);
    double boot = t_wait_file(console, "nimbus-guest: ready", 1, 60);
    fprintf(stderr, "guest boot to 'ready' on the serial console: %.2f s\n", boot);
    CHECK(boot >= 0);
    CHECK(t_wait_file(console, "nimbus-guest: vda 2097152 sectors", 1, 1) >= 0);
    CHECK(t_wait_file(console, "BusyBox", 1, 1) >= 0);
    t = pass(t_now_ms());
    fprintf(stderr, "steady-state pass: %.1f ms\n", t * 1000);

    if (whole_disk) {
        char cdir[PATH_MAX], clog[PATH_MAX];
        storage_inst_dir(stor, UC, cdir);
        bfmt(clog, sizeof clog, "%s/console.log", cdir);
        CHECK_INT(power(UC), POWER_RUNNING);
        double cb = t_wait_file(clog, "nimbus-guest: ready", 1, 60);
        fprintf(stderr, "whole-disk guest to 'ready': %.2f s after A was ready\n", cb);
        CHECK(cb >= 0);
        /* Its own disk is the overlay, grown to the flavor's 1 GiB. */
        CHECK(t_wait_file(clog, "nimbus-guest: vda 2097152 sectors", 1, 1) >= 0);
        insts[1].deleted = true;
        pass(t_now_ms());
        CHECK_INT(power(UC), POWER_NOSTATE);
        CHECK(access(cdir, F_OK) != 0);
        ds.n = 1;
    }

    /* Stop (ACPI: the guest's acpid powers it off). */
    a->power = POWER_SHUTOFF;
    a->generation = 2;
    t = pass(t_now_ms());
    fprintf(stderr, "stop (ACPI): %.2f s\n", t);
    CHECK_INT(power(UA), POWER_SHUTOFF);
    CHECK_INT(state(UA), RC_STOPPED);
    CHECK(t_wait_file(console, "ACPI power button", 1, 1) >= 0);

    /* Start. */
    a->power = POWER_RUNNING;
    a->generation = 3;
    pass(t_now_ms());
    CHECK_INT(power(UA), POWER_RUNNING);
    CHECK(t_wait_file(console, "nimbus-guest: ready", 2, 60) >= 0);

    /* Hard reboot. */
    bfmt(a->reboot, sizeof a->reboot, "hard");
    a->generation = 4;
    pass(t_now_ms());
    CHECK_INT(power(UA), POWER_RUNNING);
    CHECK(t_wait_file(console, "nimbus-guest: ready", 3, 60) >= 0);
    a->reboot[0] = 0;

    /* Pause, unpause. */
    a->power = POWER_PAUSED;
    a->generation = 5;
    pass(t_now_ms());
    CHECK_INT(power(UA), POWER_PAUSED);
    CHECK_INT(state(UA), RC_PAUSED);
    a->power = POWER_RUNNING;
    a->generation = 6;
    pass(t_now_ms());
    CHECK_INT(power(UA), POWER_RUNNING);

    /* Suspend (managed save), resume. */
    a->power = POWER_SUSPENDED;
    a->generation = 7;
    t = pass(t_now_ms());
    fprintf(stderr, "suspend (managed save): %.2f s\n", t);
    CHECK_INT(power(UA), POWER_SUSPENDED);
    CHECK_INT(state(UA), RC_SUSPENDED);
    a->power = POWER_RUNNING;
    a->generation = 8;
    t = pass(t_now_ms());
    fprintf(stderr, "resume: %.2f s\n", t);
    CHECK_INT(power(UA), POWER_RUNNING);
    CHECK_INT(state(UA), RC_ACTIVE);

    /* The guest powers itself off (ACPI from outside, as a person in the
     * guest would): reported SHUTOFF, not restarted. */
    events[0] = 0;
    CHECK_INT(virsh_dom("shutdown", UA), 0);
    for (int i = 0; i < 100 && power(UA) != POWER_SHUTOFF; i++)
        usleep(100000);
    pass(t_now_ms());
    pass(t_now_ms());
    CHECK_INT(power(UA), POWER_SHUTOFF);
    CHECK_INT(state(UA), RC_STOPPED);
    char want[64];
    bfmt(want, sizeof want, "%.8s:power-off-by-guest", UA);
    CHECK(strstr(events, want) != NULL);

    /* A second instance, defined stopped, then deleted explicitly. */
    insts[1] = *a;
    struct inst_desired *b = &insts[1];
    bfmt(b->uuid, sizeof b->uuid, "%s", UB);
    b->power = POWER_SHUTOFF;
    b->generation = 1;
    ds.n = 2;
    t = pass(t_now_ms());
    fprintf(stderr, "create pass (warm cache, define only): %.0f ms\n", t * 1000);
    CHECK_INT(power(UB), POWER_SHUTOFF);
    b->deleted = true;
    pass(t_now_ms());
    CHECK_INT(power(UB), POWER_NOSTATE);
    CHECK_INT(virsh_dom("dominfo", UB) != 0, 1);
    storage_inst_dir(stor, UB, dir);
    CHECK(access(dir, F_OK) != 0);

    /* A not desired any more: kept during the grace period, then deleted
     * with its overlay and console log. */
    ds.n = 0;
    uint64_t t0 = t_now_ms();
    pass(t0);
    CHECK_INT(power(UA), POWER_SHUTOFF);
    CHECK_INT(state(UA), RC_ORPHANED);
    pass(t0 + 5000);
    CHECK_INT(power(UA), POWER_NOSTATE);
    storage_inst_dir(stor, UA, dir);
    CHECK(access(dir, F_OK) != 0);

    /* The foreign domain was never touched. */
    CHECK_INT(virsh_dom("dominfo", UF), 0);
    CHECK_INT(virsh_dom("undefine", UF), 0);

    rc_free(rc);
    storage_free(stor);
    img_cache_free(cache);
    hv_close(hv);
    bfmt(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd)) {
    }
    return check_exit();
}
