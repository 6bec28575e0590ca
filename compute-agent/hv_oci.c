/* The OCI hypervisor provider: containers through runc.
 *
 * An instance is a bundle in its instance directory (<state_dir>/instances/
 * <uuid>): config.json (from "runc spec", with the flavor's CPU and memory
 * limits, its own network, PID, IPC, UTS and mount namespaces, and the
 * command), rootfs/ (an overlayfs whose lower layer is the image cache's
 * read-only unpacked image and whose upper and work directories are the
 * instance's own), and nimbus-oci.json, the marker that says the container
 * is Nimbus's, names the node that owns it and holds its applied
 * generation.  runc keeps its state under <state_dir>/runc, so containers
 * of anyone else are never seen.  The container's stdout and stderr go to
 * the console log.
 *
 * Ports: the network agent of the node makes a veth pair per port,
 * "tap<id>" on the tenant bridge and its peer "tpp<id>".  Starting is
 * "runc create" (the namespaces exist, the process waits), then each peer
 * is moved into the container's network namespace as eth0, eth1... with
 * the port's MAC, MTU, addresses and default route (containers run no DHCP
 * client), then "runc start".  Stopping and deleting move the devices back
 * out under their own names first, so that the network agent finds its
 * ports where it left them (and removes them when the port is unbound);
 * the ports of an instance are kept in ports.json beside the marker. */
#include "hypervisor.h"

#include <errno.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "proc.h"
#include "util.h"

struct hv_oci {
    struct hypervisor up;
    char node[256];
    bool network_agent;
    char inst_root[PATH_MAX - 128];
    char runc_root[PATH_MAX - 128];
    char runc[128];
};

static struct hv_oci *
oci_cast(struct hypervisor *hv)
{
    return (struct hv_oci *)hv;
}

static void
inst_path(const struct hv_oci *o, const char *uuid, const char *leaf, char out[PATH_MAX])
{
    snprintf(out, PATH_MAX, "%s/%s%s%s", o->inst_root, uuid, leaf ? "/" : "", leaf ? leaf : "");
}

static int
oci_open(const struct hv_config *cfg, struct hypervisor **out)
{
    struct hv_oci *o = calloc(1, sizeof *o);
    if (!o)
        return -ENOMEM;
    o->up.class = &hv_oci_class;
    *out = &o->up;
    const char *sd = cfg->state_dir && cfg->state_dir[0] ? cfg->state_dir : "/var/lib/nimbus/compute";
    snprintf(o->inst_root, sizeof o->inst_root, "%s/instances", sd);
    snprintf(o->runc_root, sizeof o->runc_root, "%s/runc", sd);
    snprintf(o->runc, sizeof o->runc, "%s", cfg->runc && cfg->runc[0] ? cfg->runc : "runc");
    hv_node_name(cfg, o->node, sizeof o->node);
    o->network_agent = cfg->network_agent;
    mkdir(sd, 0755);
    mkdir(o->inst_root, 0755);
    mkdir(o->runc_root, 0700);
    const char *argv[] = { o->runc, "--version", NULL };
    char err[256];
    if (proc_run(argv, NULL, 0, err, sizeof err)) {
        hv_set_error(&o->up, "runc is not usable: %s", err);
        return -ENOTSUP;
    }
    return 0;
}

static void
oci_close(struct hypervisor *hv)
{
    free(hv);
}

/* Reads the marker; -ENOENT when the instance is not Nimbus's (or gone). */
static int
read_marker(struct hv_oci *o, const char *uuid, uint64_t *gen, char *rootfs, size_t rlen)
{
    char p[PATH_MAX];
    inst_path(o, uuid, "nimbus-oci.json", p);
    json_t *j = json_load_file(p, 0, NULL);
    if (!j)
        return -ENOENT;
    const char *node = json_string_value(json_object_get(j, "node"));
    if (node && strcmp(node, o->node)) {
        json_decref(j);
        return -ENOENT;   /* Another node's, sharing the state directory. */
    }
    if (gen)
        *gen = (uint64_t)json_integer_value(json_object_get(j, "generation"));
    if (rootfs)
        snprintf(rootfs, rlen, "%s", json_string_value(json_object_get(j, "lower")) ?
                 json_string_value(json_object_get(j, "lower")) : "");
    json_decref(j);
    return 0;
}

static int
write_marker(struct hv_oci *o, const char *uuid, uint64_t gen, const char *lower)
{
    char p[PATH_MAX], tmp[PATH_MAX + 8];
    inst_path(o, uuid, "nimbus-oci.json", p);
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    json_t *j = json_pack("{s:s, s:I, s:s, s:s}", "uuid", uuid, "generation", (json_int_t)gen,
                          "lower", lower, "node", o->node);
    int r = j && json_dump_file(j, tmp, JSON_COMPACT) == 0 ? 0 : -EIO;
    json_decref(j);
    if (!r && rename(tmp, p) < 0)
        r = -errno;
    if (r)
        hv_set_error(&o->up, "writing %s failed", p);
    return r;
}

/* runc's view of a container: "running", "paused", "created", "stopped",
 * or "" when runc does not know it. */
static void
runc_status(struct hv_oci *o, const char *uuid, char *status, size_t len)
{
    char id[64], out[8192], err[256];
    snprintf(id, sizeof id, "nimbus-%s", uuid);
    const char *argv[] = { o->runc, "--root", o->runc_root, "state", id, NULL };
    status[0] = 0;
    if (proc_run(argv, out, sizeof out, err, sizeof err))
        return;
    json_t *j = json_loads(out, 0, NULL);
    snprintf(status, len, "%s", json_string_value(json_object_get(j, "status")) ?
             json_string_value(json_object_get(j, "status")) : "");
    json_decref(j);
}

static enum power_state
oci_power(struct hv_oci *o, const char *uuid)
{
    char st[32];
    runc_status(o, uuid, st, sizeof st);
    if (!strcmp(st, "running"))
        return POWER_RUNNING;
    if (!strcmp(st, "paused"))
        return POWER_PAUSED;
    return POWER_SHUTOFF;
}

static int
runc_cmd(struct hv_oci *o, const char *verb, const char *uuid, const char *extra)
{
    char id[64], err[512];
    snprintf(id, sizeof id, "nimbus-%s", uuid);
    const char *argv[8] = { o->runc, "--root", o->runc_root, (char *)verb };
    int i = 4;
    if (!strcmp(verb, "delete"))
        argv[i++] = "--force";
    argv[i++] = id;
    if (extra)
        argv[i++] = (char *)extra;
    argv[i] = NULL;
    int r = proc_run(argv, NULL, 0, err, sizeof err);
    if (r)
        hv_set_error(&o->up, "runc %s %s: %s", verb, id, err);
    return r;
}

/* The pid of the container's init (in the agent's pid namespace), or 0. */
static long
runc_pid(struct hv_oci *o, const char *uuid)
{
    char id[64], out[8192], err[256];
    snprintf(id, sizeof id, "nimbus-%s", uuid);
    const char *argv[] = { o->runc, "--root", o->runc_root, "state", id, NULL };
    if (proc_run(argv, out, sizeof out, err, sizeof err))
        return 0;
    json_t *j = json_loads(out, 0, NULL);
    long pid = (long)json_integer_value(json_object_get(j, "pid"));
    json_decref(j);
    return pid;
}

/* ---- Ports */

/* A port as kept in ports.json: the port and its name inside the
 * container. */
struct oci_port {
    struct inst_port p;
    char ifname[16];
};

static int
write_ports(struct hv_oci *o, const char *uuid, const struct oci_port *ports, unsigned n)
{
    json_t *arr = json_array();
    for (unsigned i = 0; i < n; i++) {
        const struct inst_port *p = &ports[i].p;
        json_t *ips = json_array();
        for (unsigned k = 0; k < p->n_fixed_ips; k++)
            json_array_append_new(ips, json_pack("{s:s, s:i, s:s}", "ip_address",
                                                 p->fixed_ips[k].ip, "prefixlen",
                                                 (int)p->fixed_ips[k].prefixlen, "gateway",
                                                 p->fixed_ips[k].gateway));
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:i, s:s, s:o}", "id", p->id,
                                             "mac", p->mac, "tap", p->tap, "mtu", (int)p->mtu,
                                             "ifname", ports[i].ifname, "fixed_ips", ips));
    }
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    inst_path(o, uuid, "ports.json", path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int r = json_dump_file(arr, tmp, JSON_COMPACT) == 0 && rename(tmp, path) == 0 ? 0 : -EIO;
    json_decref(arr);
    if (r)
        hv_set_error(&o->up, "writing %s failed", path);
    return r;
}

/* The ports of 'd' a container wires (none without a network agent), as
 * eth0, eth1... */
static unsigned
wanted_ports(struct hv_oci *o, const struct inst_desired *d, struct oci_port *out)
{
    unsigned n = 0;
    for (unsigned i = 0; o->network_agent && i < d->n_ports; i++) {
        memset(&out[n], 0, sizeof out[n]);
        out[n].p = d->ports[i];
        snprintf(out[n].ifname, sizeof out[n].ifname, "eth%u", n);
        n++;
    }
    return n;
}

/* The ports written at create (and changed by sync_ports). */
static int
read_ports(struct hv_oci *o, const char *uuid, struct oci_port *ports, unsigned *n)
{
    char path[PATH_MAX];
    inst_path(o, uuid, "ports.json", path);
    *n = 0;
    json_t *arr = json_load_file(path, 0, NULL);
    if (!arr)
        return 0;   /* Created before ports were kept: none. */
    size_t i, k;
    json_t *p, *f;
    json_array_foreach(arr, i, p) {
        if (*n == INST_MAX_PORTS)
            break;
        struct oci_port *op = &ports[(*n)++];
        struct inst_port *ip = &op->p;
        memset(op, 0, sizeof *op);
        const char *s;
        snprintf(ip->id, sizeof ip->id, "%s", (s = json_string_value(json_object_get(p, "id"))) ? s : "");
        snprintf(ip->mac, sizeof ip->mac, "%s", (s = json_string_value(json_object_get(p, "mac"))) ? s : "");
        snprintf(ip->tap, sizeof ip->tap, "%s", (s = json_string_value(json_object_get(p, "tap"))) ? s : "");
        s = json_string_value(json_object_get(p, "ifname"));
        if (s)
            snprintf(op->ifname, sizeof op->ifname, "%s", s);
        else
            snprintf(op->ifname, sizeof op->ifname, "eth%u", *n - 1);
        ip->mtu = (unsigned)json_integer_value(json_object_get(p, "mtu"));
        ip->kind = INST_PORT_VETH;
        json_array_foreach(json_object_get(p, "fixed_ips"), k, f) {
            if (ip->n_fixed_ips == INST_MAX_FIXED_IPS)
                break;
            struct inst_fixed_ip *fi = &ip->fixed_ips[ip->n_fixed_ips++];
            snprintf(fi->ip, sizeof fi->ip, "%s",
                     (s = json_string_value(json_object_get(f, "ip_address"))) ? s : "");
            snprintf(fi->gateway, sizeof fi->gateway, "%s",
                     (s = json_string_value(json_object_get(f, "gateway"))) ? s : "");
            fi->prefixlen = (unsigned)json_integer_value(json_object_get(f, "prefixlen"));
        }
    }
    json_decref(arr);
    return 0;
}

/* Runs "ip ARGS..." in the network namespace of process 'pid' (0: the
 * agent's own). */
static int
ip_in(long pid, const char *const args[], char *err, size_t errlen)
{
    const char *argv[24];
    char t[32];
    int n = 0;
    if (pid) {
        snprintf(t, sizeof t, "%ld", pid);
        argv[n++] = "nsenter";
        argv[n++] = "-t";
        argv[n++] = t;
        argv[n++] = "-n";
    }
    argv[n++] = "ip";
    for (int i = 0; args[i] && n < 23; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return proc_run(argv, NULL, 0, err, errlen);
}

/* Moves one port's device out of container 'pid' back into the agent's
 * namespace under its own name.  Best effort: a device already gone (the
 * container's namespace died with its process) is the network agent's to
 * make again.  A start cut short (kill -9) between moving the device in
 * and renaming it left it in the container under its own name: it is
 * moved out as it is. */
static void
unplug_one(long pid, const struct oci_port *op)
{
    char self[32], err[256], peer[16];
    snprintf(self, sizeof self, "%ld", (long)getpid());
    inst_port_peer(&op->p, peer);
    const char *down[] = { "link", "set", "dev", op->ifname, "down", NULL };
    const char *ren[] = { "link", "set", "dev", op->ifname, "name", peer, NULL };
    const char *out[] = { "link", "set", "dev", peer, "netns", self, NULL };
    if (ip_in(pid, down, err, sizeof err) == 0)
        (void)ip_in(pid, ren, err, sizeof err);
    (void)ip_in(pid, out, err, sizeof err);
}

static void
unplug_ports(struct hv_oci *o, const char *uuid, long pid)
{
    struct oci_port ports[INST_MAX_PORTS];
    unsigned n;
    if (!pid || read_ports(o, uuid, ports, &n))
        return;
    for (unsigned i = 0; i < n; i++)
        unplug_one(pid, &ports[i]);
}

/* Moves a port's peer into container 'pid' as its ifname and configures
 * it; the default route via its first IPv4 gateway when 'route'. */
static int
plug_one(struct hv_oci *o, const char *uuid, long pid, const struct oci_port *op, bool route)
{
    const struct inst_port *p = &op->p;
    char t[32], err[256], peer[16], mtu[16];
    int r;
    snprintf(t, sizeof t, "%ld", pid);
    inst_port_peer(p, peer);
    snprintf(mtu, sizeof mtu, "%u", p->mtu ? p->mtu : 1500);
    const char *in[] = { "link", "set", "dev", peer, "netns", t, NULL };
    const char *ren[] = { "link", "set", "dev", peer, "name", op->ifname, "address", p->mac,
                          "mtu", mtu, NULL };
    const char *up[] = { "link", "set", "dev", op->ifname, "up", NULL };
    if ((r = ip_in(0, in, err, sizeof err)) || (r = ip_in(pid, ren, err, sizeof err)))
        goto fail;
    for (unsigned k = 0; k < p->n_fixed_ips; k++) {
        char cidr[64];
        snprintf(cidr, sizeof cidr, "%s/%u", p->fixed_ips[k].ip, p->fixed_ips[k].prefixlen);
        const char *add[] = { strchr(cidr, ':') ? "-6" : "-4", "addr", "add", cidr, "dev",
                              op->ifname, NULL };
        if ((r = ip_in(pid, add, err, sizeof err)))
            goto fail;
    }
    if ((r = ip_in(pid, up, err, sizeof err)))
        goto fail;
    for (unsigned k = 0; k < p->n_fixed_ips && route; k++) {
        const char *gw = p->fixed_ips[k].gateway;
        if (!gw[0] || strchr(gw, ':'))
            continue;
        const char *rt[] = { "-4", "route", "add", "default", "via", gw, "dev", op->ifname, NULL };
        if ((r = ip_in(pid, rt, err, sizeof err)))
            goto fail;
        break;
    }
    return 0;
fail:
    hv_set_error(&o->up, "container %s: wiring port %s: %s", uuid, p->id, err);
    unplug_one(pid, op);
    return r;
}

/* Wires every port into container 'pid': lo up, each port as its ifname,
 * the default route via the first port with an IPv4 gateway. */
static int
plug_ports(struct hv_oci *o, const char *uuid, long pid, const struct oci_port *ports,
           unsigned n)
{
    char err[256];
    const char *lo[] = { "link", "set", "dev", "lo", "up", NULL };
    int r = ip_in(pid, lo, err, sizeof err);
    if (r) {
        hv_set_error(&o->up, "container %s: lo: %s", uuid, err);
        return r;
    }
    bool routed = false;
    for (unsigned i = 0; i < n; i++) {
        bool gw = false;
        for (unsigned k = 0; k < ports[i].p.n_fixed_ips; k++)
            gw = gw || (ports[i].p.fixed_ips[k].gateway[0] &&
                        !strchr(ports[i].p.fixed_ips[k].gateway, ':'));
        if ((r = plug_one(o, uuid, pid, &ports[i], gw && !routed))) {
            for (unsigned j = 0; j < i; j++)
                unplug_one(pid, &ports[j]);
            return r;
        }
        routed = routed || gw;
    }
    return 0;
}

static const struct oci_port *
find_port(const struct oci_port *v, unsigned n, const struct inst_port *p)
{
    for (unsigned i = 0; i < n; i++)
        if (!strcmp(v[i].p.id, p->id) && !strcmp(v[i].p.mac, p->mac) &&
            !strcmp(v[i].p.tap, p->tap))
            return &v[i];
    return NULL;
}

static int
oci_list(struct hypervisor *hv, struct inst_actual **out, size_t *n)
{
    struct hv_oci *o = oci_cast(hv);
    *n = 0;
    size_t cap = 16;
    *out = calloc(cap, sizeof **out);
    if (!*out)
        return -ENOMEM;
    DIR *d = opendir(o->inst_root);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        uint64_t gen;
        if (strlen(e->d_name) != 36 || read_marker(o, e->d_name, &gen, NULL, 0))
            continue;
        if (*n == cap) {
            cap *= 2;
            struct inst_actual *v = realloc(*out, cap * sizeof *v);
            if (!v) {
                closedir(d);
                return -ENOMEM;
            }
            *out = v;
        }
        struct inst_actual *a = &(*out)[(*n)++];
        memset(a, 0, sizeof *a);
        snprintf(a->uuid, sizeof a->uuid, "%s", e->d_name);
        a->generation = gen;
        a->power = oci_power(o, e->d_name);
    }
    closedir(d);
    return 0;
}

static bool
is_mountpoint(const char *path)
{
    char parent[PATH_MAX + 4];
    struct stat a, b;
    snprintf(parent, sizeof parent, "%s/..", path);
    return stat(path, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

static int
mount_rootfs(struct hv_oci *o, const char *uuid)
{
    char lower[PATH_MAX], upper[PATH_MAX], work[PATH_MAX], merged[PATH_MAX];
    int r = read_marker(o, uuid, NULL, lower, sizeof lower);
    if (r) {
        hv_set_error(&o->up, "container %s is not Nimbus's", uuid);
        return r;
    }
    inst_path(o, uuid, "upper", upper);
    inst_path(o, uuid, "work", work);
    inst_path(o, uuid, "rootfs", merged);
    mkdir(upper, 0755);
    mkdir(work, 0755);
    mkdir(merged, 0755);
    if (is_mountpoint(merged))
        return 0;
    char opts[3 * PATH_MAX + 64];
    snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);
    if (mount("overlay", merged, "overlay", 0, opts) < 0) {
        r = -errno;
        hv_set_error(&o->up, "mount overlay on %s: %s", merged, strerror(-r));
        return r;
    }
    return 0;
}

static void
umount_rootfs(struct hv_oci *o, const char *uuid)
{
    char merged[PATH_MAX];
    inst_path(o, uuid, "rootfs", merged);
    if (is_mountpoint(merged))
        umount2(merged, MNT_DETACH);
}

/* config.json: runc's default spec, adjusted. */
static int
write_config(struct hv_oci *o, const struct hv_create_args *a)
{
    const struct inst_desired *d = a->d;
    char cfg[PATH_MAX], err[512];
    snprintf(cfg, sizeof cfg, "%s/config.json", a->inst_dir);
    unlink(cfg);
    const char *argv[] = { o->runc, "spec", "--bundle", (char *)a->inst_dir, NULL };
    int r = proc_run(argv, NULL, 0, err, sizeof err);
    if (r) {
        hv_set_error(&o->up, "runc spec: %s", err);
        return r;
    }
    json_t *j = json_load_file(cfg, 0, NULL);
    if (!j) {
        hv_set_error(&o->up, "cannot read %s", cfg);
        return -EIO;
    }
    json_t *proc = json_object_get(j, "process");
    json_object_set_new(proc, "terminal", json_false());
    const char *cmd = d->image.os_command_line[0] ? d->image.os_command_line :
        "trap 'echo nimbus-container: stopping; exit 0' TERM; "
        "echo \"nimbus-container: started on $(hostname)\"; "
        "while :; do sleep 1; done";
    json_object_set_new(proc, "args", json_pack("[s, s, s]", "/bin/sh", "-c", cmd));
    /* Docker's default capability set, which images built for Docker
     * expect (runc's default lacks NET_RAW, so ping would not work). */
    static const char *const caps[] = {
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
        "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    };
    json_t *capset = json_array();
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++)
        json_array_append_new(capset, json_string(caps[c]));
    json_object_set_new(proc, "capabilities",
                        json_pack("{s:O, s:O, s:O, s:O}", "bounding", capset, "effective", capset,
                                  "permitted", capset, "ambient", capset));
    json_decref(capset);
    char host[64];
    snprintf(host, sizeof host, "%.63s", d->name[0] ? d->name : d->uuid);
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-'))
            *p = '-';
    json_object_set_new(j, "hostname", json_string(host));
    /* The root is the overlay: writable, its writes land in upper/. */
    json_object_set_new(j, "root", json_pack("{s:s, s:b}", "path", "rootfs", "readonly", 0));
    json_t *linux_ = json_object_get(j, "linux");
    json_t *res = json_object_get(linux_, "resources");
    if (!res) {
        res = json_object();
        json_object_set_new(linux_, "resources", res);
    }
    json_object_set_new(res, "memory", json_pack("{s:I}", "limit",
                        (json_int_t)d->ram_mb * 1024 * 1024));
    json_object_set_new(res, "cpu", json_pack("{s:I, s:I}", "quota",
                        (json_int_t)(d->vcpus ? d->vcpus : 1) * 100000, "period",
                        (json_int_t)100000));
    char cg[80];
    snprintf(cg, sizeof cg, "/nimbus/%s", d->uuid);
    json_object_set_new(linux_, "cgroupsPath", json_string(cg));
    /* runc spec's namespaces lack "network" only when asked; make sure the
     * container has its own (the network agent wires the port into it). */
    json_t *ns = json_object_get(linux_, "namespaces");
    bool has_net = false;
    size_t i;
    json_t *v;
    json_array_foreach(ns, i, v)
        if (!strcmp(json_string_value(json_object_get(v, "type")) ?
                    json_string_value(json_object_get(v, "type")) : "", "network"))
            has_net = true;
    if (!has_net)
        json_array_append_new(ns, json_pack("{s:s}", "type", "network"));
    r = json_dump_file(j, cfg, JSON_INDENT(1)) ? -EIO : 0;
    json_decref(j);
    if (r)
        hv_set_error(&o->up, "cannot write %s", cfg);
    return r;
}

static int oci_start(struct hypervisor *hv, const char *uuid);

static int
oci_create(struct hypervisor *hv, const struct hv_create_args *a, bool start)
{
    struct hv_oci *o = oci_cast(hv);
    if (!a->rootfs_path) {
        hv_set_error(hv, "instance %s: no container rootfs (image %s is not a container image?)",
                     a->d->uuid, a->d->image.id);
        return -EINVAL;
    }
    for (unsigned i = 0; o->network_agent && i < a->d->n_ports; i++)
        if (a->d->ports[i].kind != INST_PORT_VETH) {
            hv_set_error(hv, "instance %s: port %s is a tap; containers need a veth port "
                         "(device_owner compute:container)", a->d->uuid, a->d->ports[i].id);
            return -EINVAL;
        }
    /* Nothing is made before the ports' devices are there. */
    int r = o->network_agent ? hv_ports_ready(hv, a->d) : 0;
    if (r)
        return r;
    uint64_t t0 = util_now_ns();
    r = write_config(o, a);
    struct oci_port ports[INST_MAX_PORTS];
    unsigned n_ports = wanted_ports(o, a->d, ports);
    if (!r)
        r = write_ports(o, a->d->uuid, ports, n_ports);
    if (!r)
        r = write_marker(o, a->d->uuid, 0, a->rootfs_path);
    uint64_t t1 = util_now_ns();
    hv_timing(hv)->define_ns = t1 - t0;
    if (!r && start) {
        r = oci_start(hv, a->d->uuid);
        hv_timing(hv)->start_ns = util_now_ns() - t1;
    }
    return r;
}

static int
oci_start(struct hypervisor *hv, const char *uuid)
{
    struct hv_oci *o = oci_cast(hv);
    char st[32];
    if (read_marker(o, uuid, NULL, NULL, 0)) {
        hv_set_error(hv, "no Nimbus container %s", uuid);
        return -ENOENT;
    }
    runc_status(o, uuid, st, sizeof st);
    if (!strcmp(st, "running") || !strcmp(st, "paused"))
        return 0;
    if (!strcmp(st, "created")) {
        /* A start cut short (crash): its ports are moved back, begin again. */
        unplug_ports(o, uuid, runc_pid(o, uuid));
    }
    if (st[0] && runc_cmd(o, "delete", uuid, NULL))
        return -EIO;
    struct oci_port ports[INST_MAX_PORTS];
    unsigned n_ports;
    int r = read_ports(o, uuid, ports, &n_ports);
    if (r)
        return r;
    for (unsigned i = 0; i < n_ports; i++) {
        char peer[16];
        inst_port_peer(&ports[i].p, peer);
        if (!hv_netdev_exists(peer)) {
            hv_set_error(hv, "waiting for the network agent to create %s for port %s",
                         peer, ports[i].p.id);
            return -EAGAIN;
        }
    }
    if ((r = mount_rootfs(o, uuid)))
        return r;
    char bundle[PATH_MAX], log[PATH_MAX], id[64], err[512];
    inst_path(o, uuid, NULL, bundle);
    inst_path(o, uuid, "console.log", log);
    snprintf(id, sizeof id, "nimbus-%s", uuid);
    /* create: the namespaces exist and the process waits for start. */
    const char *argv[] = { o->runc, "--root", o->runc_root, "create", "--bundle", bundle,
                     id, NULL };
    r = proc_run_logged(argv, log, err, sizeof err);
    if (r) {
        hv_set_error(hv, "runc create %s: %s", id, err);
        return r;
    }
    long pid = runc_pid(o, uuid);
    if (!pid) {
        hv_set_error(hv, "runc create %s: no process", id);
        r = -EIO;
    } else {
        r = plug_ports(o, uuid, pid, ports, n_ports);
    }
    if (!r)
        r = runc_cmd(o, "start", uuid, NULL);
    if (r) {
        char keep[512];
        snprintf(keep, sizeof keep, "%s", hv_err(hv));
        unplug_ports(o, uuid, pid);
        (void)runc_cmd(o, "delete", uuid, NULL);
        hv_set_error(hv, "%s", keep);
    }
    return r;
}

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int
oci_stop(struct hypervisor *hv, const char *uuid, unsigned timeout_ms)
{
    struct hv_oci *o = oci_cast(hv);
    if (read_marker(o, uuid, NULL, NULL, 0)) {
        hv_set_error(hv, "no Nimbus container %s", uuid);
        return -ENOENT;
    }
    char st[32];
    runc_status(o, uuid, st, sizeof st);
    if (!strcmp(st, "paused"))
        runc_cmd(o, "resume", uuid, NULL);
    /* The ports go back to the node first: they outlive the container's
     * namespace, which ends with its process. */
    if (st[0] && strcmp(st, "stopped"))
        unplug_ports(o, uuid, runc_pid(o, uuid));
    if (!strcmp(st, "running") || !strcmp(st, "paused")) {
        if (timeout_ms && runc_cmd(o, "kill", uuid, "TERM") == 0) {
            for (unsigned w = 0; w < timeout_ms; w += 100) {
                runc_status(o, uuid, st, sizeof st);
                if (strcmp(st, "running"))
                    break;
                sleep_ms(100);
            }
        }
        runc_status(o, uuid, st, sizeof st);
        if (!strcmp(st, "running") && runc_cmd(o, "kill", uuid, "KILL") == 0) {
            for (unsigned w = 0; w < 5000; w += 50) {
                runc_status(o, uuid, st, sizeof st);
                if (strcmp(st, "running"))
                    break;
                sleep_ms(50);
            }
        }
    }
    runc_status(o, uuid, st, sizeof st);
    if (st[0] && runc_cmd(o, "delete", uuid, NULL))
        return -EIO;
    umount_rootfs(o, uuid);
    return 0;
}

static int
oci_reboot(struct hypervisor *hv, const char *uuid, bool hard)
{
    int r = oci_stop(hv, uuid, hard ? 0 : 10000);
    return r ? r : oci_start(hv, uuid);
}

static int
oci_pause(struct hypervisor *hv, const char *uuid)
{
    struct hv_oci *o = oci_cast(hv);
    char st[32];
    runc_status(o, uuid, st, sizeof st);
    if (!strcmp(st, "paused"))
        return 0;
    return runc_cmd(o, "pause", uuid, NULL) ? -EIO : 0;
}

static int
oci_unpause(struct hypervisor *hv, const char *uuid)
{
    struct hv_oci *o = oci_cast(hv);
    char st[32];
    runc_status(o, uuid, st, sizeof st);
    if (strcmp(st, "paused"))
        return 0;
    return runc_cmd(o, "resume", uuid, NULL) ? -EIO : 0;
}

static int
oci_suspend(struct hypervisor *hv, const char *uuid)
{
    hv_set_error(hv, "containers cannot be suspended (no memory image to save)");
    return -ENOTSUP;
}

static int
oci_destroy(struct hypervisor *hv, const char *uuid)
{
    struct hv_oci *o = oci_cast(hv);
    if (read_marker(o, uuid, NULL, NULL, 0))
        return 0;
    char st[32];
    runc_status(o, uuid, st, sizeof st);
    if (st[0] && strcmp(st, "stopped"))
        unplug_ports(o, uuid, runc_pid(o, uuid));
    if (st[0] && runc_cmd(o, "delete", uuid, NULL))
        return -EIO;
    umount_rootfs(o, uuid);
    char p[PATH_MAX];
    inst_path(o, uuid, "nimbus-oci.json", p);
    if (unlink(p) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

static int
oci_set_generation(struct hypervisor *hv, const char *uuid, uint64_t gen)
{
    struct hv_oci *o = oci_cast(hv);
    char lower[PATH_MAX];
    int r = read_marker(o, uuid, NULL, lower, sizeof lower);
    if (r) {
        hv_set_error(hv, "no Nimbus container %s", uuid);
        return r;
    }
    return write_marker(o, uuid, gen, lower);
}

/* Interfaces attached or detached after create: a running container gets
 * the new ports' devices as the next free ethN (no default route unless it
 * has no other port) and gives back the removed ones; a stopped one only
 * has its list changed, which its next start wires. */
static int
oci_sync_ports(struct hypervisor *hv, const struct inst_desired *d)
{
    struct hv_oci *o = oci_cast(hv);
    struct oci_port cur[INST_MAX_PORTS], want[INST_MAX_PORTS], next[INST_MAX_PORTS];
    unsigned n_cur, n_want = wanted_ports(o, d, want), n_next = 0;
    if (read_marker(o, d->uuid, NULL, NULL, 0) || read_ports(o, d->uuid, cur, &n_cur))
        return 0;
    char st[32];
    runc_status(o, d->uuid, st, sizeof st);
    long pid = (!strcmp(st, "running") || !strcmp(st, "paused")) ? runc_pid(o, d->uuid) : 0;
    bool changed = false;
    for (unsigned i = 0; i < n_cur; i++) {
        if (find_port(want, n_want, &cur[i].p)) {
            next[n_next++] = cur[i];
            continue;
        }
        if (pid)
            unplug_one(pid, &cur[i]);
        changed = true;
    }
    int r = 0;
    for (unsigned i = 0; i < n_want && !r; i++) {
        if (find_port(cur, n_cur, &want[i].p))
            continue;
        if (want[i].p.kind != INST_PORT_VETH) {
            hv_set_error(hv, "instance %s: port %s is a tap; containers need a veth port",
                         d->uuid, want[i].p.id);
            r = -EINVAL;
            break;
        }
        struct oci_port np = want[i];
        for (unsigned k = 0; k < INST_MAX_PORTS * 2; k++) {
            snprintf(np.ifname, sizeof np.ifname, "eth%u", k);
            bool used = false;
            for (unsigned j = 0; j < n_next; j++)
                used = used || !strcmp(next[j].ifname, np.ifname);
            if (!used)
                break;
        }
        if (pid) {
            char peer[16];
            inst_port_peer(&np.p, peer);
            if (!hv_netdev_exists(peer)) {
                hv_set_error(hv, "waiting for the network agent to create %s for port %s",
                             peer, np.p.id);
                r = -EAGAIN;
                break;
            }
            if ((r = plug_one(o, d->uuid, pid, &np, n_next == 0)))
                break;
        }
        next[n_next++] = np;
        changed = true;
    }
    if (changed) {
        int w = write_ports(o, d->uuid, next, n_next);
        if (!r)
            r = w;
    }
    return r ? r : changed ? 1 : 0;
}

static const char *
oci_virt_type(struct hypervisor *hv)
{
    return "runc";
}

const struct hypervisor_class hv_oci_class = {
    .name = "oci",
    .open = oci_open,
    .close = oci_close,
    .list = oci_list,
    .create = oci_create,
    .start = oci_start,
    .stop = oci_stop,
    .reboot = oci_reboot,
    .pause = oci_pause,
    .unpause = oci_unpause,
    .suspend = oci_suspend,
    .resume = oci_start,
    .destroy = oci_destroy,
    .set_generation = oci_set_generation,
    .sync_ports = oci_sync_ports,
    .virt_type = oci_virt_type,
};
