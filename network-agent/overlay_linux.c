/* The Linux VXLAN overlay provider: per network a bridge "nbr-<net>" and a
 * VXLAN device "vx-<net>" (no learning, no multicast: the flood list is
 * unicast forwarding entries "00:00:00:00:00:00 dst <remote VTEP>", written
 * by the agent as Neutron's l2population does), ports "tap<port>" (tap for
 * VMs, veth with peer "tpp<port>" for containers) enslaved to the bridge.
 *
 * It drives ip(8) and bridge(8) from iproute2 and reads their JSON output:
 * that keeps this file small and the commands visible in logs; a netlink
 * implementation can replace it behind the same interface. */
#include "overlay.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <net/if.h>
#include <poll.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


#define ALIAS_PREFIX "nimbus:"
#define CMD_OUT_MAX (16u << 20)    /* Largest command output read. */

struct overlay_linux {
    struct overlay up;
    char local_ip[OVERLAY_IP_MAX];
    char underlay_dev[IFNAMSIZ];
    int vxlan_port;
    char state_dir[512];
    char netns_prefix[24];
};

static struct overlay_linux *
lx(struct overlay *ov)
{
    return (struct overlay_linux *)ov;
}

/* Runs argv (NULL-terminated) to completion.  stdout goes into *out when
 * 'out' is not NULL (malloc'd, NUL-terminated; caller frees).  Returns 0
 * when it exits 0, else -ECHILD with stderr in ov->err. */
static int
run(struct overlay *ov, char **out, char *const argv[])
{
    int po[2] = { -1, -1 }, pe[2] = { -1, -1 };
    posix_spawn_file_actions_t fa;
    pid_t pid;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    char errbuf[sizeof ov->err];
    size_t elen = 0;
    int rc, status = 0;

    if (out)
        *out = NULL;
    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) {
        rc = -errno;
        goto out;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    po[1] = pe[1] = -1;
    if (rc) {
        snprintf(ov->err, sizeof ov->err, "cannot run %s: %s", argv[0], strerror(rc));
        rc = -rc;
        goto out;
    }
    struct pollfd fds[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
    int open_fds = 2;
    while (open_fds > 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char tmp[4096];
            ssize_t n = read(fds[i].fd, tmp, sizeof tmp);
            if (n <= 0) {
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            if (i == 0) {
                if (len + (size_t)n + 1 > cap && len + (size_t)n < CMD_OUT_MAX) {
                    size_t ncap = (len + (size_t)n + 1) * 2;
                    char *nb = realloc(buf, ncap);
                    if (nb) {
                        buf = nb;
                        cap = ncap;
                    }
                }
                if (len + (size_t)n + 1 <= cap) {
                    memcpy(buf + len, tmp, (size_t)n);
                    len += (size_t)n;
                    buf[len] = '\0';
                }
            } else {
                size_t room = sizeof errbuf - 1 - elen;
                size_t take = (size_t)n < room ? (size_t)n : room;
                memcpy(errbuf + elen, tmp, take);
                elen += take;
            }
        }
    }
    errbuf[elen] = '\0';
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        while (elen && (errbuf[elen - 1] == '\n'))
            errbuf[--elen] = '\0';
        snprintf(ov->err, sizeof ov->err, "%.40s %.40s: %.160s", argv[0], argv[1] ? argv[1] : "",
                 elen ? errbuf : "failed");
        rc = -ECHILD;
        goto out;
    }
    rc = 0;
    if (out) {
        *out = buf ? buf : strdup("");
        buf = NULL;
        if (!*out)
            rc = -ENOMEM;
    }
out:
    free(buf);
    for (int i = 0; i < 2; i++) {
        if (po[i] >= 0)
            close(po[i]);
        if (pe[i] >= 0)
            close(pe[i]);
    }
    return rc;
}

/* run() with a printf-built argument list split on spaces; every argument
 * here is a device name, a number or an address, never free text. */
static int
runf(struct overlay *ov, char **out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
runf(struct overlay *ov, char **out, const char *fmt, ...)
{
    char line[1024];
    char *argv[48];
    int argc = 0;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line)
        return -E2BIG;
    for (char *save = NULL, *t = strtok_r(line, " ", &save); t && argc < 47;
         t = strtok_r(NULL, " ", &save))
        argv[argc++] = t;
    argv[argc] = NULL;
    return run(ov, out, argv);
}

static bool
dev_exists(const char *name)
{
    return if_nametoindex(name) != 0;
}

/* The alias of a device (netlink, through ip(8), so that it is right in
 * whatever network namespace the agent runs); "" when none or absent. */
static void
dev_alias(struct overlay *ov, const char *name, char *out, size_t outlen)
{
    char *text = NULL;
    out[0] = '\0';
    if (!dev_exists(name) || runf(ov, &text, "ip -j link show dev %s", name) < 0)
        return;
    json_t *arr = json_loads(text, 0, NULL);
    free(text);
    const char *alias = json_string_value(json_object_get(json_array_get(arr, 0), "ifalias"));
    if (alias)
        snprintf(out, outlen, "%s", alias);
    json_decref(arr);
}

static bool
owned_by(struct overlay *ov, const char *dev, const char *kind, const char *id)
{
    char alias[256], want[256];
    dev_alias(ov, dev, alias, sizeof alias);
    snprintf(want, sizeof want, ALIAS_PREFIX "%s:%s", kind, id);
    return !strncmp(alias, want, strlen(want));
}

static int dhcp_ensure(struct overlay *ov, const struct overlay_net *net);
static int dhcp_stop(struct overlay *ov, const char *net_id);
static void dhcp_read_digest(struct overlay *ov, const char *net_id,
                             char out[OVERLAY_DIGEST_LEN + 1]);
static void dhcp_orphans(struct overlay *ov, struct overlay_net *nets, size_t *n_nets,
                         size_t cap);

static int
lx_open(const struct overlay_config *cfg, struct overlay **out)
{
    struct overlay_linux *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->up.cls = &overlay_vxlan_class;
    snprintf(l->local_ip, sizeof l->local_ip, "%s", cfg->local_ip ? cfg->local_ip : "");
    snprintf(l->underlay_dev, sizeof l->underlay_dev, "%s", cfg->underlay_dev ? cfg->underlay_dev : "");
    l->vxlan_port = cfg->vxlan_port > 0 ? cfg->vxlan_port : 4789;
    snprintf(l->state_dir, sizeof l->state_dir, "%s",
             cfg->state_dir && *cfg->state_dir ? cfg->state_dir : "/run/nimbus-network");
    const char *pfx = cfg->netns_prefix && *cfg->netns_prefix ? cfg->netns_prefix : "nqdhcp-";
    if (strlen(pfx) >= sizeof l->netns_prefix || strspn(pfx, "abcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(pfx)) {
        free(l);
        return -EINVAL;
    }
    snprintf(l->netns_prefix, sizeof l->netns_prefix, "%s", pfx);
    *out = &l->up;
    return 0;
}

static void
lx_close(struct overlay *ov)
{
    free(ov);
}

/* Remote VTEPs in the flood list of 'vx'. */
static int
read_vteps(struct overlay *ov, const char *vx, struct overlay_net *net)
{
    char *text = NULL;
    int rc = runf(ov, &text, "bridge -j fdb show dev %s", vx);
    if (rc < 0)
        return rc;
    json_t *arr = json_loads(text, 0, NULL);
    free(text);
    size_t i;
    json_t *e;
    net->n_vteps = 0;
    json_array_foreach(arr, i, e) {
        const char *mac = json_string_value(json_object_get(e, "mac"));
        const char *dst = json_string_value(json_object_get(e, "dst"));
        if (mac && dst && !strcmp(mac, "00:00:00:00:00:00") && net->n_vteps < OVERLAY_MAX_VTEPS)
            snprintf(net->vteps[net->n_vteps++], OVERLAY_IP_MAX, "%s", dst);
    }
    json_decref(arr);
    return 0;
}

static int
lx_list(struct overlay *ov, struct overlay_net **nets, size_t *n_nets,
        struct overlay_port **ports, size_t *n_ports)
{
    char *text = NULL;
    int rc = runf(ov, &text, "ip -j -d link show");
    *nets = NULL;
    *ports = NULL;
    *n_nets = *n_ports = 0;
    if (rc < 0)
        return rc;
    json_t *arr = json_loads(text, 0, NULL);
    free(text);
    size_t n = json_array_size(arr), i;
    json_t *e;
    *nets = calloc(n + 1, sizeof **nets);
    *ports = calloc(n + 1, sizeof **ports);
    if (!arr || !*nets || !*ports) {
        json_decref(arr);
        free(*nets);
        free(*ports);
        *nets = NULL;
        *ports = NULL;
        snprintf(ov->err, sizeof ov->err, "cannot read the device list");
        return -EIO;
    }
    /* Bridges first: they define the networks. */
    json_array_foreach(arr, i, e) {
        const char *alias = json_string_value(json_object_get(e, "ifalias"));
        if (!alias || strncmp(alias, ALIAS_PREFIX "net:", 11))
            continue;
        struct overlay_net *net = &(*nets)[(*n_nets)++];
        snprintf(net->id, sizeof net->id, "%s", alias + 11);
        net->mtu = (int)json_integer_value(json_object_get(e, "mtu"));
        dhcp_read_digest(ov, net->id, net->dhcp_digest);
    }
    json_array_foreach(arr, i, e) {
        const char *alias = json_string_value(json_object_get(e, "ifalias"));
        const char *name = json_string_value(json_object_get(e, "ifname"));
        const char *master = json_string_value(json_object_get(e, "master"));
        if (!alias || !name)
            continue;
        if (!strncmp(alias, ALIAS_PREFIX "vx:", 10)) {
            for (size_t k = 0; k < *n_nets; k++) {
                struct overlay_net *net = &(*nets)[k];
                char br[16];
                if (strcmp(net->id, alias + 10))
                    continue;
                json_t *vni = json_object_get(json_object_get(json_object_get(e, "linkinfo"),
                                                              "info_data"), "id");
                /* Only a VXLAN device on its bridge counts. */
                if (overlay_dev_name("nbr-", net->id, 10, br) == 0 && master && !strcmp(master, br))
                    net->vni = (uint32_t)json_integer_value(vni);
                if (net->mtu != (int)json_integer_value(json_object_get(e, "mtu")))
                    net->mtu = -1;
                (void)read_vteps(ov, name, net);
            }
        } else if (!strncmp(alias, ALIAS_PREFIX "port:", 12)) {
            /* "nimbus:port:<port id>:<network id>:<tap|veth>" */
            struct overlay_port *p = &(*ports)[*n_ports];
            char tmp[256];
            snprintf(tmp, sizeof tmp, "%s", alias + 12);
            char *save = NULL;
            char *pid = strtok_r(tmp, ":", &save);
            char *nid = strtok_r(NULL, ":", &save);
            char *kind = strtok_r(NULL, ":", &save);
            if (!pid || !nid)
                continue;
            snprintf(p->id, sizeof p->id, "%s", pid);
            snprintf(p->network_id, sizeof p->network_id, "%s", nid);
            p->kind = kind && !strcmp(kind, "veth") ? OVERLAY_PORT_VETH : OVERLAY_PORT_TAP;
            p->mtu = (int)json_integer_value(json_object_get(e, "mtu"));
            char br[16];
            p->attached = overlay_dev_name("nbr-", nid, 10, br) == 0 && master && !strcmp(master, br);
            (*n_ports)++;
        }
    }
    /* DHCP set-ups left without their bridge (a crash between steps). */
    dhcp_orphans(ov, *nets, n_nets, n);
    json_decref(arr);
    return 0;
}

static int
lx_net_ensure(struct overlay *ov, const struct overlay_net *net)
{
    struct overlay_linux *l = lx(ov);
    char br[16], vx[16];
    int rc;

    if (overlay_dev_name("nbr-", net->id, 10, br) < 0 || overlay_dev_name("vx-", net->id, 10, vx) < 0) {
        snprintf(ov->err, sizeof ov->err, "bad network id %s", net->id);
        return -EINVAL;
    }
    if (net->vni < 1 || net->vni > 16777215 || net->mtu < 68 || net->mtu > 65535) {
        snprintf(ov->err, sizeof ov->err, "bad VNI %u or MTU %d", net->vni, net->mtu);
        return -EINVAL;
    }
    if (dev_exists(br) && !owned_by(ov, br, "net", net->id)) {
        snprintf(ov->err, sizeof ov->err, "%s exists and is not Nimbus's", br);
        return -EEXIST;
    }
    if (!dev_exists(br) && (rc = runf(ov, NULL, "ip link add %s type bridge", br)) < 0)
        return rc;
    if ((rc = runf(ov, NULL, "ip link set dev %s alias " ALIAS_PREFIX "net:%s", br, net->id)) < 0
        || (rc = runf(ov, NULL, "ip link set dev %s mtu %d up", br, net->mtu)) < 0)
        return rc;

    if (dev_exists(vx)) {
        if (!owned_by(ov, vx, "vx", net->id)) {
            snprintf(ov->err, sizeof ov->err, "%s exists and is not Nimbus's", vx);
            return -EEXIST;
        }
        /* A VXLAN device's VNI cannot change: replace it if it differs. */
        struct overlay_net cur;
        memset(&cur, 0, sizeof cur);
        char *text = NULL;
        if (runf(ov, &text, "ip -j -d link show dev %s", vx) == 0) {
            json_t *arr = json_loads(text, 0, NULL);
            json_t *id = json_object_get(json_object_get(json_object_get(
                json_array_get(arr, 0), "linkinfo"), "info_data"), "id");
            cur.vni = (uint32_t)json_integer_value(id);
            json_decref(arr);
        }
        free(text);
        if (cur.vni != net->vni && (rc = runf(ov, NULL, "ip link del dev %s", vx)) < 0)
            return rc;
    }
    if (!dev_exists(vx)) {
        char devpart[64] = "";
        if (l->underlay_dev[0])
            snprintf(devpart, sizeof devpart, " dev %s", l->underlay_dev);
        rc = runf(ov, NULL, "ip link add %s type vxlan id %u local %s%s dstport %d nolearning",
                  vx, net->vni, l->local_ip, devpart, l->vxlan_port);
        if (rc < 0)
            return rc;
    }
    if ((rc = runf(ov, NULL, "ip link set dev %s alias " ALIAS_PREFIX "vx:%s", vx, net->id)) < 0
        || (rc = runf(ov, NULL, "ip link set dev %s master %s mtu %d up", vx, br, net->mtu)) < 0)
        return rc;

    /* The flood list: exactly the wanted remote VTEPs. */
    struct overlay_net *cur = calloc(1, sizeof *cur);
    if (!cur)
        return -ENOMEM;
    rc = read_vteps(ov, vx, cur);
    for (size_t i = 0; rc == 0 && i < net->n_vteps; i++) {
        bool have = false;
        for (size_t j = 0; j < cur->n_vteps && !have; j++)
            have = !strcmp(cur->vteps[j], net->vteps[i]);
        if (!have)
            rc = runf(ov, NULL, "bridge fdb append 00:00:00:00:00:00 dev %s dst %s", vx,
                      net->vteps[i]);
    }
    for (size_t j = 0; rc == 0 && j < cur->n_vteps; j++) {
        bool want = false;
        for (size_t i = 0; i < net->n_vteps && !want; i++)
            want = !strcmp(cur->vteps[j], net->vteps[i]);
        if (!want)
            rc = runf(ov, NULL, "bridge fdb del 00:00:00:00:00:00 dev %s dst %s", vx, cur->vteps[j]);
    }
    free(cur);
    if (rc == 0)
        rc = net->dhcp.enabled ? dhcp_ensure(ov, net) : dhcp_stop(ov, net->id);
    return rc;
}

static int
lx_net_remove(struct overlay *ov, const char *id)
{
    char br[16], vx[16];
    int rc = dhcp_stop(ov, id);
    if (overlay_dev_name("nbr-", id, 10, br) < 0 || overlay_dev_name("vx-", id, 10, vx) < 0)
        return -EINVAL;
    if (rc == 0 && dev_exists(vx) && owned_by(ov, vx, "vx", id))
        rc = runf(ov, NULL, "ip link del dev %s", vx);
    if (rc == 0 && dev_exists(br) && owned_by(ov, br, "net", id))
        rc = runf(ov, NULL, "ip link del dev %s", br);
    return rc;
}

static int
lx_port_ensure(struct overlay *ov, const struct overlay_port *p)
{
    char dev[16], peer[16], br[16];
    int rc;
    if (overlay_dev_name("tap", p->id, 11, dev) < 0 || overlay_dev_name("tpp", p->id, 11, peer) < 0
        || overlay_dev_name("nbr-", p->network_id, 10, br) < 0) {
        snprintf(ov->err, sizeof ov->err, "bad port %s or network %s id", p->id, p->network_id);
        return -EINVAL;
    }
    if (dev_exists(dev) && !owned_by(ov, dev, "port", p->id)) {
        /* A tap made by the hypervisor (libvirt) for this port is ours to
         * plug, once: it has no alias yet. */
        char alias[256];
        dev_alias(ov, dev, alias, sizeof alias);
        if (alias[0]) {
            snprintf(ov->err, sizeof ov->err, "%s exists and is not Nimbus's", dev);
            return -EEXIST;
        }
    }
    if (!dev_exists(dev)) {
        rc = p->kind == OVERLAY_PORT_VETH
             ? runf(ov, NULL, "ip link add %s type veth peer name %s", dev, peer)
             : runf(ov, NULL, "ip tuntap add dev %s mode tap", dev);
        if (rc < 0)
            return rc;
    }
    if ((rc = runf(ov, NULL, "ip link set dev %s alias " ALIAS_PREFIX "port:%s:%s:%s", dev, p->id,
                   p->network_id, p->kind == OVERLAY_PORT_VETH ? "veth" : "tap")) < 0
        || (rc = runf(ov, NULL, "ip link set dev %s master %s mtu %d up", dev, br, p->mtu)) < 0)
        return rc;
    if (p->kind == OVERLAY_PORT_VETH && dev_exists(peer))
        (void)runf(ov, NULL, "ip link set dev %s mtu %d up", peer, p->mtu);
    return 0;
}

static int
lx_port_remove(struct overlay *ov, const char *id)
{
    char dev[16];
    if (overlay_dev_name("tap", id, 11, dev) < 0)
        return -EINVAL;
    if (dev_exists(dev) && owned_by(ov, dev, "port", id))
        return runf(ov, NULL, "ip link del dev %s", dev);
    return 0;
}

/* ---- DHCP: dnsmasq in namespace "nqdhcp-<net>" behind the DHCP port's
 * veth ("tap<port>" on the bridge, "tpp<port>" inside), with its files in
 * <state_dir>/<network id>/: hosts (MAC,IP), pid, leases, dev (the bridge
 * side's name) and digest (what runs). */

/* "<prefix><first 10 hex digits>" (prefix "nqdhcp-" by default; one agent
 * per machine owns it): namespace names are not bound by IFNAMSIZ. */
static int
ns_name(struct overlay *ov, const char *net_id, char out[40])
{
    char hex[16];
    if (overlay_dev_name("", net_id, 10, hex) < 0)
        return -EINVAL;
    snprintf(out, 40, "%s%s", lx(ov)->netns_prefix, hex);
    return 0;
}

static void
dhcp_paths(struct overlay *ov, const char *net_id, const char *file, char *out, size_t len)
{
    snprintf(out, len, "%s/%s%s%s", lx(ov)->state_dir, net_id, file ? "/" : "", file ? file : "");
}

static int
read_small(const char *path, char *out, size_t len)
{
    FILE *f = fopen(path, "re");
    out[0] = '\0';
    if (!f)
        return -errno;
    if (!fgets(out, (int)len, f))
        out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    fclose(f);
    return 0;
}

static int
write_file(const char *path, const char *text)
{
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "we");
    if (!f)
        return -errno;
    fchmod(fileno(f), 0644);
    int ok = fputs(text, f) >= 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) < 0) {
        unlink(tmp);
        return -EIO;
    }
    return 0;
}

/* The dnsmasq serving 'net_id', or 0: the pid file's process must be a
 * dnsmasq started with this pid file. */
static pid_t
dhcp_pid(struct overlay *ov, const char *net_id)
{
    char path[600], text[32], cmd[4096];
    dhcp_paths(ov, net_id, "pid", path, sizeof path);
    if (read_small(path, text, sizeof text) < 0)
        return 0;
    long pid = strtol(text, NULL, 10);
    if (pid <= 1)
        return 0;
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/%ld/cmdline", pid);
    FILE *f = fopen(proc, "re");
    if (!f)
        return 0;
    size_t n = fread(cmd, 1, sizeof cmd - 1, f);
    fclose(f);
    cmd[n] = '\0';
    for (size_t i = 0; i + 1 < n; i++)
        if (!cmd[i])
            cmd[i] = ' ';
    return strstr(cmd, "dnsmasq") && strstr(cmd, path) ? (pid_t)pid : 0;
}

static void
dhcp_read_digest(struct overlay *ov, const char *net_id, char out[OVERLAY_DIGEST_LEN + 1])
{
    char path[600];
    out[0] = '\0';
    if (!dhcp_pid(ov, net_id))
        return;
    dhcp_paths(ov, net_id, "digest", path, sizeof path);
    (void)read_small(path, out, OVERLAY_DIGEST_LEN + 1);
}

static void
dhcp_orphans(struct overlay *ov, struct overlay_net *nets, size_t *n_nets, size_t cap)
{
    DIR *d = opendir(lx(ov)->state_dir);
    struct dirent *de;
    if (!d)
        return;
    while ((de = readdir(d)) != NULL && *n_nets < cap) {
        bool known = de->d_name[0] == '.' || de->d_type != DT_DIR;
        for (size_t i = 0; i < *n_nets && !known; i++)
            known = !strcmp(nets[i].id, de->d_name);
        if (known || strlen(de->d_name) > OVERLAY_ID_MAX)
            continue;
        struct overlay_net *n = &nets[(*n_nets)++];
        memset(n, 0, sizeof *n);
        snprintf(n->id, sizeof n->id, "%s", de->d_name);
        n->mtu = -1;
        snprintf(n->dhcp_digest, sizeof n->dhcp_digest, "orphan");
    }
    closedir(d);
}

/* Runs a command with stdio on /dev/null (dnsmasq daemonises and keeps
 * whatever it was given); returns 0 when it exits 0. */
static int
run_quiet(struct overlay *ov, char *const argv[])
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int status = 0;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) {
        snprintf(ov->err, sizeof ov->err, "cannot run %s: %s", argv[0], strerror(rc));
        return -rc;
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(ov->err, sizeof ov->err, "%s failed (status %d)", argv[0], status);
        return -ECHILD;
    }
    return 0;
}

static void
dhcp_kill(struct overlay *ov, const char *net_id)
{
    pid_t pid = dhcp_pid(ov, net_id);
    if (!pid)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 50 && kill(pid, 0) == 0; i++) {
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    if (kill(pid, 0) == 0)
        kill(pid, SIGKILL);
}

static int
dhcp_stop(struct overlay *ov, const char *net_id)
{
    char dir[600], path[600], dev[32], ns[40];
    struct stat st;
    if (ns_name(ov, net_id, ns) < 0) {
        snprintf(ov->err, sizeof ov->err, "bad network id %s", net_id);
        return -EINVAL;
    }
    dhcp_paths(ov, net_id, NULL, dir, sizeof dir);
    if (stat(dir, &st) < 0)
        return 0;
    dhcp_kill(ov, net_id);
    dhcp_paths(ov, net_id, "dev", path, sizeof path);
    if (read_small(path, dev, sizeof dev) == 0 && dev[0] && dev_exists(dev)
        && owned_by(ov, dev, "dhcp", net_id))
        (void)runf(ov, NULL, "ip link del dev %s", dev);
    char nspath[64];
    snprintf(nspath, sizeof nspath, "/run/netns/%s", ns);
    if (access(nspath, F_OK) == 0)
        (void)runf(ov, NULL, "ip netns del %s", ns);
    static const char *const files[] = { "hosts", "pid", "leases", "dev", "digest" };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        dhcp_paths(ov, net_id, files[i], path, sizeof path);
        unlink(path);
    }
    if (rmdir(dir) < 0 && errno != ENOENT) {
        snprintf(ov->err, sizeof ov->err, "cannot remove %.160s: %s", dir, strerror(errno));
        return -errno;
    }
    return 0;
}

static int
dhcp_ensure(struct overlay *ov, const struct overlay_net *net)
{
    const struct overlay_dhcp *d = &net->dhcp;
    char dir[600], path[600], ns[40], dev[16], peer[16], br[16], nspath[64];
    char want[OVERLAY_DIGEST_LEN + 1], have[OVERLAY_DIGEST_LEN + 1];
    int rc;

    if (ns_name(ov, net->id, ns) < 0 || overlay_dev_name("tap", d->port_id, 11, dev) < 0
        || overlay_dev_name("tpp", d->port_id, 11, peer) < 0
        || overlay_dev_name("nbr-", net->id, 10, br) < 0) {
        snprintf(ov->err, sizeof ov->err, "bad network %s or DHCP port %s id", net->id, d->port_id);
        return -EINVAL;
    }
    dhcp_paths(ov, net->id, NULL, dir, sizeof dir);
    mkdir(lx(ov)->state_dir, 0755);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        snprintf(ov->err, sizeof ov->err, "cannot create %.160s: %s", dir, strerror(errno));
        return -errno;
    }
    snprintf(nspath, sizeof nspath, "/run/netns/%s", ns);
    if (access(nspath, F_OK) != 0 && (rc = runf(ov, NULL, "ip netns add %s", ns)) < 0)
        return rc;
    dhcp_paths(ov, net->id, "dev", path, sizeof path);
    if ((rc = write_file(path, dev)) < 0)
        return rc;
    /* The DHCP port: host side on the bridge, the other end inside. */
    if (dev_exists(dev) && !owned_by(ov, dev, "dhcp", net->id)) {
        snprintf(ov->err, sizeof ov->err, "%s exists and is not Nimbus's", dev);
        return -EEXIST;
    }
    if (!dev_exists(dev) && (rc = runf(ov, NULL, "ip link add %s type veth peer name %s netns %s",
                                       dev, peer, ns)) < 0)
        return rc;
    if ((rc = runf(ov, NULL, "ip link set dev %s alias " ALIAS_PREFIX "dhcp:%s", dev, net->id)) < 0
        || (rc = runf(ov, NULL, "ip link set dev %s master %s mtu %d up", dev, br, net->mtu)) < 0
        || (rc = runf(ov, NULL, "ip netns exec %s ip link set dev %s address %s mtu %d up", ns, peer,
                      d->mac, net->mtu)) < 0
        || (rc = runf(ov, NULL, "ip netns exec %s ip addr replace %s/%d dev %s", ns, d->ip,
                      d->prefixlen, peer)) < 0
        || (rc = runf(ov, NULL, "ip netns exec %s ip link set dev lo up", ns)) < 0)
        return rc;

    /* Static hosts, MAC → IP. */
    size_t cap = d->n_hosts * 64 + 1, len = 0;
    char *hosts = malloc(cap);
    if (!hosts)
        return -ENOMEM;
    hosts[0] = '\0';
    for (size_t i = 0; i < d->n_hosts; i++)
        len += (size_t)snprintf(hosts + len, cap - len, "%s,%s\n", d->hosts[i].mac, d->hosts[i].ip);
    dhcp_paths(ov, net->id, "hosts", path, sizeof path);
    rc = write_file(path, hosts);
    free(hosts);
    if (rc < 0)
        return rc;

    overlay_dhcp_digest(net, want);
    dhcp_read_digest(ov, net->id, have);
    pid_t pid = dhcp_pid(ov, net->id);
    if (pid && !strncmp(want, have, 16)) {
        /* Same set-up, maybe other hosts: reload them. */
        if (strcmp(want, have))
            kill(pid, SIGHUP);
    } else {
        dhcp_kill(ov, net->id);
        unsigned mask = d->prefixlen ? 0xffffffffu << (32 - d->prefixlen) : 0;
        char a_conf[] = "--conf-file=/dev/null";
        char a_pid[700], a_hosts[700], a_lease[700], a_iface[64], a_range[160], a_mtu[64];
        char a_router[128], a_dns[400];
        char dhcp_dir_pid[600];
        dhcp_paths(ov, net->id, "pid", dhcp_dir_pid, sizeof dhcp_dir_pid);
        snprintf(a_pid, sizeof a_pid, "--pid-file=%s", dhcp_dir_pid);
        dhcp_paths(ov, net->id, "hosts", path, sizeof path);
        snprintf(a_hosts, sizeof a_hosts, "--dhcp-hostsfile=%s", path);
        dhcp_paths(ov, net->id, "leases", path, sizeof path);
        snprintf(a_lease, sizeof a_lease, "--dhcp-leasefile=%s", path);
        snprintf(a_iface, sizeof a_iface, "--interface=%s", peer);
        snprintf(a_range, sizeof a_range, "--dhcp-range=set:net,%s,static,%u.%u.%u.%u,86400s",
                 d->subnet, mask >> 24, (mask >> 16) & 255, (mask >> 8) & 255, mask & 255);
        snprintf(a_mtu, sizeof a_mtu, "--dhcp-option=tag:net,option:mtu,%d", net->mtu);
        if (d->gateway[0])
            snprintf(a_router, sizeof a_router, "--dhcp-option=tag:net,option:router,%s", d->gateway);
        else
            snprintf(a_router, sizeof a_router, "--dhcp-option=tag:net,option:router");
        size_t dl = (size_t)snprintf(a_dns, sizeof a_dns, "--dhcp-option=tag:net,option:dns-server");
        for (size_t i = 0; i < d->n_dns; i++)
            dl += (size_t)snprintf(a_dns + dl, sizeof a_dns - dl, ",%s", d->dns[i]);
        char *argv[] = { (char *)"ip", (char *)"netns", (char *)"exec", ns, (char *)"dnsmasq",
                         a_conf, (char *)"--no-hosts", (char *)"--no-resolv", (char *)"--port=0",
                         (char *)"--bind-interfaces", a_iface, (char *)"--except-interface=lo",
                         a_pid, a_hosts, a_lease, a_range, a_mtu, a_router,
                         d->n_dns ? a_dns : (char *)"--dhcp-option=tag:net,option:dns-server",
                         (char *)"--dhcp-lease-max=65536", NULL };
        if ((rc = run_quiet(ov, argv)) < 0)
            return rc;
    }
    dhcp_paths(ov, net->id, "digest", path, sizeof path);
    return write_file(path, want);
}

/* ---- Packet filter: one nft -f that deletes and recreates Nimbus's two
 * tables, so a ruleset is never half applied.  What was applied last is
 * kept in <state_dir>/firewall.nft to skip identical updates. */

static bool
nft_table_exists(struct overlay *ov)
{
    return runf(ov, NULL, "nft list table inet nimbus") == 0;
}

static int
lx_firewall_sync(struct overlay *ov, const char *ruleset, bool *changed)
{
    char path[600], tmp[620];
    *changed = false;
    snprintf(path, sizeof path, "%s/firewall.nft", lx(ov)->state_dir);
    FILE *f = fopen(path, "re");
    char *old = NULL;
    size_t oldlen = 0;
    if (f) {
        FILE *m = open_memstream(&old, &oldlen);
        char buf[4096];
        size_t n;
        while (m && (n = fread(buf, 1, sizeof buf, f)) > 0)
            fwrite(buf, 1, n, m);
        if (m)
            fclose(m);
        fclose(f);
    }
    static const char preamble[] = "table inet nimbus\ndelete table inet nimbus\n"
                                   "table bridge nimbus\ndelete table bridge nimbus\n";
    bool same = old && oldlen >= sizeof preamble - 1
                && !strcmp(old + sizeof preamble - 1, ruleset);
    free(old);
    if (!*ruleset) {
        if (!nft_table_exists(ov) && access(path, F_OK) != 0)
            return 0;
    } else if (same && nft_table_exists(ov)) {
        return 0;
    }
    mkdir(lx(ov)->state_dir, 0755);
    snprintf(tmp, sizeof tmp, "%s.new", path);
    f = fopen(tmp, "we");
    if (!f) {
        snprintf(ov->err, sizeof ov->err, "cannot write %.200s: %s", tmp, strerror(errno));
        return -errno;
    }
    fputs(preamble, f);
    fputs(ruleset, f);
    if (fclose(f) != 0)
        return -EIO;
    int rc = runf(ov, NULL, "nft -f %s", tmp);
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    if (*ruleset)
        rename(tmp, path);
    else {
        unlink(tmp);
        unlink(path);
    }
    *changed = true;
    return 0;
}

const struct overlay_class overlay_vxlan_class = {
    .name = "vxlan",
    .open = lx_open,
    .close = lx_close,
    .list = lx_list,
    .net_ensure = lx_net_ensure,
    .net_remove = lx_net_remove,
    .port_ensure = lx_port_ensure,
    .port_remove = lx_port_remove,
    .firewall_sync = lx_firewall_sync,
};
