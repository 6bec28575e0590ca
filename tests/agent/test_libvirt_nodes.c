/* Two nodes on one libvirtd (two "hosts" on this machine in tests): each
 * agent sees and touches only the domains whose Nimbus metadata names its
 * node.  Node B's provider does not list node A's domain, cannot stop,
 * start or re-mark it, its destroy leaves it alone, and node B's reconciler
 * with nothing desired and no grace period does not delete it; node A
 * still owns it.  Ports: a create whose tap the network agent has not made
 * yet is -EAGAIN and defines nothing; once the tap exists the domain is
 * defined with an ethernet interface on it (managed='no', the port's MAC
 * and MTU), as libvirt itself reads it back.  Domains are only defined,
 * never started (no QEMU needed); the test runs in a network namespace of
 * its own for its tap.  Exits 77 without root or libvirtd. */
#include "reconcile.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hypervisor.h"
#include "util.h"
#include "agent_test_util.h"
#include "../check.h"

static int
virsh(const char *args, char *out, size_t len)
{
    return t_virsh("qemu:///system", args, out, len);
}

static bool
listed(struct hypervisor *h, const char *uuid)
{
    struct inst_actual *v;
    size_t n;
    bool found = false;
    if (h->class->list(h, &v, &n))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].uuid, uuid))
            found = true;
    free(v);
    return found;
}

static bool
defined(const char *uuid)
{
    char args[128];
    bfmt(args, sizeof args, "dominfo %s", uuid);
    return virsh(args, NULL, 0) == 0;
}

static void
no_storage_event(void *ctx, const char *uuid, const char *event, const char *detail)
{
    fprintf(stderr, "  event %s %s %s\n", uuid, event, detail);
}

static int
st_prepare(void *ctx, const struct inst_desired *d, struct rc_prepared *out, char *err,
           size_t errlen)
{
    return -ENOTSUP;
}

static int
st_remove(void *ctx, const char *uuid, char *err, size_t errlen)
{
    return 0;
}

int
main(void)
{
    if (geteuid() != 0 || virsh("version", NULL, 0) != 0) {
        fprintf(stderr, "libvirtd not reachable at qemu:///system: skipped\n");
        return 77;
    }
    if (unshare(CLONE_NEWNET) < 0) {
        fprintf(stderr, "cannot make a network namespace: skipped\n");
        return 77;
    }
    char root[] = "/tmp/nimbus-lvnodes-XXXXXX";
    if (!mkdtemp(root))
        return 1;
    struct hv_config ca = { .type = "libvirt", .virt_type = "qemu", .state_dir = root,
                            .node = "node-a", .network_agent = true };
    struct hv_config cb = ca;
    cb.node = "node-b";
    struct hypervisor *ha, *hb;
    char err[512];
    if (hv_open(&ca, &ha, err, sizeof err) || hv_open(&cb, &hb, err, sizeof err)) {
        fprintf(stderr, "libvirt provider: %s: skipped\n", err);
        return 77;
    }

    static struct inst_desired d;
    util_uuid4(d.uuid);
    bfmt(d.name, sizeof d.name, "lvnodes");
    d.vcpus = 1;
    d.ram_mb = 32;
    d.power = POWER_SHUTOFF;
    d.generation = 1;
    d.n_ports = 1;
    struct inst_port *p = &d.ports[0];
    bfmt(p->id, sizeof p->id, "5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b");
    bfmt(p->mac, sizeof p->mac, "fa:16:3e:aa:bb:cc");
    bfmt(p->tap, sizeof p->tap, "tap5e1f0a2b3c4");
    p->mtu = 1450;
    char disk[PATH_MAX];
    bfmt(disk, sizeof disk, "%s/disk.qcow2", root);
    struct hv_create_args a = { .d = &d, .inst_dir = root, .disk_path = disk,
                                .disk_format = "qcow2", .console_log = "/dev/null" };

    /* The network agent has not made the tap: nothing is defined. */
    CHECK_INT(ha->class->create(ha, &a, false), -EAGAIN);
    CHECK(strstr(hv_err(ha), "tap5e1f0a2b3c4") != NULL);
    CHECK(!defined(d.uuid));

    /* It has: defined, with the interface on the tap. */
    CHECK_INT(system("ip tuntap add dev tap5e1f0a2b3c4 mode tap"), 0);
    CHECK_INT(ha->class->create(ha, &a, false), 0);
    CHECK(defined(d.uuid));
    char xml[16384], args[128];
    bfmt(args, sizeof args, "dumpxml %s", d.uuid);
    CHECK_INT(virsh(args, xml, sizeof xml), 0);
    CHECK(strstr(xml, "<interface type='ethernet'>") != NULL);
    CHECK(strstr(xml, "<target dev='tap5e1f0a2b3c4' managed='no'/>") != NULL);
    CHECK(strstr(xml, "<mac address='fa:16:3e:aa:bb:cc'/>") != NULL);
    CHECK(strstr(xml, "<mtu size='1450'/>") != NULL);
    CHECK(strstr(xml, "<nimbus:node>node-a</nimbus:node>") != NULL);

    /* An interface attached, then detached (os-interface), in the
     * definition. */
    CHECK_INT(system("ip tuntap add dev tap7e6d5c4b3a2 mode tap"), 0);
    static struct inst_desired d2;
    d2 = d;
    d2.n_ports = 2;
    bfmt(d2.ports[1].id, sizeof d2.ports[1].id, "7e6d5c4b-3a29-4c2b-9a8e-7d6c5b4a3f21");
    bfmt(d2.ports[1].mac, sizeof d2.ports[1].mac, "fa:16:3e:dd:ee:ff");
    bfmt(d2.ports[1].tap, sizeof d2.ports[1].tap, "tap7e6d5c4b3a2");
    CHECK_INT(ha->class->sync_ports(ha, &d2), 1);
    CHECK_INT(ha->class->sync_ports(ha, &d2), 0);
    CHECK_INT(virsh(args, xml, sizeof xml), 0);
    CHECK(strstr(xml, "<target dev='tap7e6d5c4b3a2' managed='no'/>") != NULL);
    CHECK(strstr(xml, "<target dev='tap5e1f0a2b3c4' managed='no'/>") != NULL);
    CHECK_INT(ha->class->sync_ports(ha, &d), 1);
    CHECK_INT(virsh(args, xml, sizeof xml), 0);
    CHECK(strstr(xml, "tap7e6d5c4b3a2") == NULL);
    CHECK(strstr(xml, "<target dev='tap5e1f0a2b3c4' managed='no'/>") != NULL);
    /* Node B cannot change another node's domain. */
    CHECK_INT(hb->class->sync_ports(hb, &d2), 0);
    CHECK_INT(virsh(args, xml, sizeof xml), 0);
    CHECK(strstr(xml, "tap7e6d5c4b3a2") == NULL);

    /* Node B does not see it, cannot act on it, and leaves it alone. */
    CHECK(listed(ha, d.uuid));
    CHECK(!listed(hb, d.uuid));
    CHECK_INT(hb->class->start(hb, d.uuid), -ENOENT);
    CHECK_INT(hb->class->stop(hb, d.uuid, 0), -ENOENT);
    CHECK_INT(hb->class->set_generation(hb, d.uuid, 9), -ENOENT);
    CHECK_INT(hb->class->destroy(hb, d.uuid), 0);
    CHECK(defined(d.uuid));
    CHECK_INT(hb->class->create(hb, &a, false), -EEXIST);
    struct rc_storage st = { st_prepare, st_remove, NULL, NULL };
    struct rc_config cfg = { .grace_ms = 0, .max_attempts = 3 };
    struct reconciler *rcb;
    CHECK_INT(rc_new(hb, &st, &cfg, no_storage_event, NULL, &rcb), 0);
    struct desired_set none = { 0 };
    for (int i = 0; i < 2; i++)
        CHECK_INT(rc_pass(rcb, &none, 1000000 + (uint64_t)i * 1000, NULL), 0);
    CHECK(defined(d.uuid));
    rc_free(rcb);

    /* Node A still owns it, and removes it. */
    CHECK_INT(ha->class->set_generation(ha, d.uuid, 2), 0);
    CHECK(listed(ha, d.uuid));
    CHECK_INT(ha->class->destroy(ha, d.uuid), 0);
    CHECK(!defined(d.uuid));

    hv_close(ha);
    hv_close(hb);
    char cmd[PATH_MAX + 16];
    bfmt(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd)) {
    }
    return check_exit();
}
