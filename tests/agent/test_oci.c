/* Containers through runc: the reconciler with the oci provider runs a
 * container from the image cache's read-only unpacked layer (a busybox
 * rootfs tarball from deploy/build-guest) under an overlayfs upper
 * directory of its own, sees it RUNNING, its stdout in the console log, the
 * flavor's memory and CPU limits in its cgroup, its own network namespace;
 * then stop (SIGTERM), start, pause/unpause, a container that exits by
 * itself reported SHUTOFF, and delete (unmounted, directory gone, cached
 * layer untouched).  Then a container with a port, as the network agent
 * leaves it (a veth pair on a bridge; the test runs in a network namespace
 * of its own): the instance waits for the device, gets eth0 with the
 * port's MAC, MTU, address and default route before its process starts,
 * answers ping from the bridge, gives the device back when stopped, and
 * leaves it where the network agent made it when deleted.  Exits 77
 * without runc or root. */
#include "reconcile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>

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
    rc_drain(rc, &st);   /* The creates it handed to the pool. */
    return t_now() - t0;
}

static enum power_state
power(const char *uuid)
{
    return t_power(hv, uuid);
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

static bool
sh(const char *cmd)
{
    fprintf(stderr, "  $ %s\n", cmd);
    return system(cmd) == 0;
}

/* The output of command 'what' run inside the container. */
static void
inside(const char *root, const char *uuid, const char *what, char *out, size_t len)
{
    char cmd[PATH_MAX + 256];
    bfmt(cmd, sizeof cmd, "runc --root %s/runc exec nimbus-%s %s", root, uuid, what);
    out[0] = 0;
    FILE *f = popen(cmd, "r");
    if (!f)
        return;
    size_t n = fread(out, 1, len - 1, f);
    out[n] = 0;
    pclose(f);
    while (n && out[n - 1] == '\n')
        out[--n] = 0;
}

static void
test_port(const struct inst_desired *tmpl, const char *root)
{
    static struct inst_desired c;
    c = *tmpl;
    util_uuid4(c.uuid);
    bfmt(c.name, sizeof c.name, "cport");
    c.deleted = false;
    c.power = POWER_RUNNING;
    c.generation = 1;
    c.n_ports = 1;
    struct inst_port *p = &c.ports[0];
    memset(p, 0, sizeof *p);
    bfmt(p->id, sizeof p->id, "0b9a3c1e-5f4d-4c2b-9a8e-7d6c5b4a3f21");
    bfmt(p->mac, sizeof p->mac, "fa:16:3e:12:34:56");
    bfmt(p->tap, sizeof p->tap, "tap0b9a3c1e5f4");
    p->kind = INST_PORT_VETH;
    p->mtu = 1400;
    p->n_fixed_ips = 1;
    bfmt(p->fixed_ips[0].ip, sizeof p->fixed_ips[0].ip, "10.9.0.5");
    p->fixed_ips[0].prefixlen = 24;
    bfmt(p->fixed_ips[0].gateway, sizeof p->fixed_ips[0].gateway, "10.9.0.1");
    ds.insts = &c;
    ds.n = 1;
    events[0] = 0;

    /* No device yet: the instance waits. */
    pass();
    CHECK_INT(power(c.uuid), POWER_NOSTATE);
    CHECK(strstr(events, "waiting-for-port") != NULL);
    CHECK_INT(rc_find(rc, c.uuid)->state, RC_BUILDING);

    /* What the network agent makes: a veth pair, one end on the bridge. */
    CHECK(sh("ip link add nbr-test type bridge && ip addr add 10.9.0.1/24 dev nbr-test && "
             "ip link set nbr-test up && "
             "ip link add tap0b9a3c1e5f4 type veth peer name tpp0b9a3c1e5f4 && "
             "ip link set tap0b9a3c1e5f4 master nbr-test mtu 1400 up"));
    double t = pass();
    fprintf(stderr, "container with a port, create pass: %.0f ms\n", t * 1000);
    CHECK_INT(power(c.uuid), POWER_RUNNING);
    CHECK(!hv_netdev_exists("tpp0b9a3c1e5f4"));
    char val[256];
    inside(root, c.uuid, "cat /sys/class/net/eth0/address", val, sizeof val);
    CHECK_STR(val, "fa:16:3e:12:34:56");
    inside(root, c.uuid, "cat /sys/class/net/eth0/mtu", val, sizeof val);
    CHECK_STR(val, "1400");
    /* The default route: destination 0, gateway 10.9.0.1 (in the kernel's
     * byte order). */
    char routes[2048];
    inside(root, c.uuid, "cat /proc/net/route", routes, sizeof routes);
    CHECK(strstr(routes, "eth0\t00000000\t0100090A") != NULL);
    CHECK(sh("ping -c 1 -W 2 10.9.0.5 >/dev/null"));
    /* And out through its default route, with Docker's capabilities (raw
     * sockets for ping). */
    inside(root, c.uuid, "busybox ping -c 1 -W 2 10.9.0.1", val, sizeof val);
    CHECK(strstr(val, "1 packets received") != NULL);

    /* A port attached to the running container (os-interface): eth1, no
     * second default route; detached: given back. */
    CHECK(sh("ip link add nbr-test2 type bridge && ip addr add 10.8.0.1/24 dev nbr-test2 && "
             "ip link set nbr-test2 up && "
             "ip link add tap7e6d5c4b3a2 type veth peer name tpp7e6d5c4b3a2 && "
             "ip link set tap7e6d5c4b3a2 master nbr-test2 up"));
    struct inst_port *q = &c.ports[1];
    memset(q, 0, sizeof *q);
    bfmt(q->id, sizeof q->id, "7e6d5c4b-3a29-4c2b-9a8e-7d6c5b4a3f21");
    bfmt(q->mac, sizeof q->mac, "fa:16:3e:65:43:21");
    bfmt(q->tap, sizeof q->tap, "tap7e6d5c4b3a2");
    q->kind = INST_PORT_VETH;
    q->n_fixed_ips = 1;
    bfmt(q->fixed_ips[0].ip, sizeof q->fixed_ips[0].ip, "10.8.0.5");
    q->fixed_ips[0].prefixlen = 24;
    bfmt(q->fixed_ips[0].gateway, sizeof q->fixed_ips[0].gateway, "10.8.0.1");
    c.n_ports = 2;
    events[0] = 0;
    pass();
    CHECK(strstr(events, "ports-changed") != NULL);
    inside(root, c.uuid, "cat /sys/class/net/eth1/address", val, sizeof val);
    CHECK_STR(val, "fa:16:3e:65:43:21");
    CHECK(sh("ping -c 1 -W 2 10.8.0.5 >/dev/null"));
    inside(root, c.uuid, "cat /proc/net/route", routes, sizeof routes);
    CHECK(strstr(routes, "eth1\t00000000") == NULL);
    CHECK(strstr(routes, "eth0\t00000000\t0100090A") != NULL);
    events[0] = 0;
    pass();
    CHECK(strstr(events, "ports-changed") == NULL);
    c.n_ports = 1;
    pass();
    CHECK(hv_netdev_exists("tpp7e6d5c4b3a2"));
    inside(root, c.uuid, "cat /sys/class/net/eth1/address", val, sizeof val);
    CHECK_STR(val, "");
    CHECK(sh("ip link del tap7e6d5c4b3a2 && ip link del nbr-test2"));

    /* Stopped: the device is back under its own name; started: wired again. */
    c.power = POWER_SHUTOFF;
    c.generation = 2;
    pass();
    CHECK_INT(power(c.uuid), POWER_SHUTOFF);
    CHECK(hv_netdev_exists("tpp0b9a3c1e5f4"));
    CHECK(!sh("ping -c 1 -W 1 10.9.0.5 >/dev/null"));
    c.power = POWER_RUNNING;
    c.generation = 3;
    pass();
    CHECK_INT(power(c.uuid), POWER_RUNNING);
    CHECK(sh("ping -c 1 -W 2 10.9.0.5 >/dev/null"));

    /* Deleted: nothing of the container left, the device is the network
     * agent's again. */
    c.deleted = true;
    pass();
    CHECK_INT(power(c.uuid), POWER_NOSTATE);
    CHECK(hv_netdev_exists("tpp0b9a3c1e5f4"));
    CHECK(hv_netdev_exists("tap0b9a3c1e5f4"));
    CHECK(sh("ip link del tap0b9a3c1e5f4 && ip link del nbr-test"));
}

int
main(void)
{
    util_uuid4(UC);
    if (geteuid() != 0 || system("runc --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "runc missing or not root: skipped\n");
        return 77;
    }
    /* A network namespace of our own for the port test's devices. */
    if (unshare(CLONE_NEWNET) < 0) {
        fprintf(stderr, "cannot make a network namespace: skipped\n");
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

    struct hv_config hc = { .type = "oci", .state_dir = root, .network_agent = true };
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

    test_port(&c, root);

    rc_free(rc);
    storage_free(stor);
    img_cache_free(cache);
    hv_close(hv);
    bfmt(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd)) {
    }
    return check_exit();
}
