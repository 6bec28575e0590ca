/* Overlay network providers: a small table of function pointers with a fake
 * beside the real one (Open vSwitch's netdev-provider.h).
 *
 *   vxlan  Linux: a bridge and a VXLAN device per tenant network, unicast
 *          forwarding entries for remote VTEPs, tap/veth ports on the bridge
 *          (overlay_linux.c, through ip(8) and bridge(8))
 *   fake   in memory, for the reconciler's tests
 *
 * A provider only sees and touches devices Nimbus created: they carry an
 * interface alias "nimbus:<kind>:<id>"; anything else is invisible to
 * list() and never modified.  Every operation is idempotent (ensure of an
 * existing network or port fixes it up, remove of a missing one succeeds),
 * so the reconciler can repeat any step after a crash.  Operations block.
 * All return 0 or a negative errno, with a message for people in
 * ov->err. */
#ifndef NIMBUS_OVERLAY_H
#define NIMBUS_OVERLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OVERLAY_ID_MAX 64          /* Longest resource id accepted. */
#define OVERLAY_MAX_VTEPS 256      /* Remote VTEPs per network. */
#define OVERLAY_IP_MAX 46          /* INET6_ADDRSTRLEN. */

#define OVERLAY_MAX_DNS 4
#define OVERLAY_DIGEST_LEN 33      /* Two 64-bit hashes in hex, and ':'. */

enum overlay_port_kind { OVERLAY_PORT_TAP, OVERLAY_PORT_VETH };

struct overlay_dhcp_host {
    char mac[18];
    char ip[OVERLAY_IP_MAX];
};

/* DHCP for a network on this node: dnsmasq in its own network namespace
 * behind the network's DHCP port, answering only the static entries
 * (MAC → IP) of the network's ports, with the gateway, DNS servers and the
 * network MTU (option 26). */
struct overlay_dhcp {
    bool enabled;
    char port_id[OVERLAY_ID_MAX + 1];
    char mac[18];                   /* The DHCP port's. */
    char ip[OVERLAY_IP_MAX];
    int prefixlen;
    char subnet[OVERLAY_IP_MAX];    /* Network address of the subnet. */
    char gateway[OVERLAY_IP_MAX];   /* "" for none. */
    size_t n_dns;
    char dns[OVERLAY_MAX_DNS][OVERLAY_IP_MAX];
    size_t n_hosts;
    struct overlay_dhcp_host *hosts; /* Owned by whoever built the net. */
};

/* A tenant network as wanted or as found. */
struct overlay_net {
    char id[OVERLAY_ID_MAX + 1];
    uint32_t vni;
    int mtu;
    size_t n_vteps;                 /* Remote VTEPs (unicast flood list). */
    char vteps[OVERLAY_MAX_VTEPS][OVERLAY_IP_MAX];
    struct overlay_dhcp dhcp;       /* Wanted only; found: see dhcp_digest. */
    /* "<base>:<hosts>" digest of the DHCP set-up (see overlay_dhcp_digest),
     * "" when there is none; found: of the running dnsmasq. */
    char dhcp_digest[OVERLAY_DIGEST_LEN + 1];
};

/* A port as wanted or as found. */
struct overlay_port {
    char id[OVERLAY_ID_MAX + 1];
    char network_id[OVERLAY_ID_MAX + 1];
    enum overlay_port_kind kind;
    int mtu;
    bool attached;                  /* Found: enslaved to its network's bridge. */
};

struct overlay_config {
    const char *type;               /* "vxlan" or "fake". */
    const char *local_ip;           /* This node's VTEP address. */
    const char *underlay_dev;       /* Underlay interface, or NULL. */
    int vxlan_port;                 /* UDP port, default 4789. */
    const char *state_dir;          /* DHCP files, default /run/nimbus-network. */
    const char *netns_prefix;       /* DHCP namespaces, default "nqdhcp-". */
};

struct overlay;

struct overlay_class {
    const char *name;
    int (*open)(const struct overlay_config *cfg, struct overlay **out);
    void (*close)(struct overlay *ov);
    /* Nimbus-owned networks and ports; arrays are malloc'd, caller frees. */
    int (*list)(struct overlay *ov, struct overlay_net **nets, size_t *n_nets,
                struct overlay_port **ports, size_t *n_ports);
    /* Creates or fixes the bridge and VXLAN device of 'net' and makes the
     * flood list exactly net->vteps. */
    int (*net_ensure)(struct overlay *ov, const struct overlay_net *net);
    int (*net_remove)(struct overlay *ov, const char *net_id);
    /* Creates or fixes the port device, on its network's bridge. */
    int (*port_ensure)(struct overlay *ov, const struct overlay_port *port);
    int (*port_remove)(struct overlay *ov, const char *port_id);
    /* Makes the packet filter exactly 'ruleset' (nftables text; "" for
     * none), atomically; a no-op when it already is.  Sets *changed. */
    int (*firewall_sync)(struct overlay *ov, const char *ruleset, bool *changed);
};

/* Every provider embeds this first. */
struct overlay {
    const struct overlay_class *cls;
    char err[256];
};

extern const struct overlay_class overlay_vxlan_class;
extern const struct overlay_class overlay_fake_class;

/* Opens the provider named by cfg->type.  The caller owns *out and closes
 * it with overlay_close(). */
int overlay_open(const struct overlay_config *cfg, struct overlay **out)
    __attribute__((warn_unused_result));
void overlay_close(struct overlay *ov);

/* Device names, at most 15 characters (IFNAMSIZ - 1): "nbr-" / "vx-" and
 * the first 10 hex digits of the network id, "tap" and the first 11 of the
 * port id (as Neutron), "tpp" for the peer of a veth port.  'out' holds at
 * least 16 bytes.  Returns -EINVAL for an id with too few hex digits. */
int overlay_dev_name(const char *prefix, const char *id, size_t digits, char out[16])
    __attribute__((warn_unused_result));

/* Digest of a DHCP set-up: "<hash of everything but the hosts>:<hash of
 * the hosts>", so that a change of hosts alone means a reload (SIGHUP) and
 * anything else a restart.  "" when DHCP is off. */
void overlay_dhcp_digest(const struct overlay_net *net, char out[OVERLAY_DIGEST_LEN + 1]);

/* Fake provider introspection for tests: how many device operations
 * (creations, changes, removals) it has performed. */
unsigned overlay_fake_ops(const struct overlay *ov);
/* The fake's current ruleset ("" for none). */
const char *overlay_fake_ruleset(const struct overlay *ov);

#endif
