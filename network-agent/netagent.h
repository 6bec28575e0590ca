/* nimbus-network's reconciler: the desired state of this node (networks
 * with their VNI, MTU and remote VTEPs; ports on them) against what the
 * overlay provider finds, and the actions that make them equal.
 *
 * Planning is a pure function (desired + actual in, actions out), so it is
 * tested with scripted transcripts against the fake provider; applying runs
 * the actions through the provider.  A network is kept while a wanted port
 * needs it; ports go before their network. */
#ifndef NIMBUS_NETAGENT_H
#define NIMBUS_NETAGENT_H

#include <jansson.h>
#include <stddef.h>

#include "overlay.h"

/* Limits on what one desired-state document may hold. */
#define NA_MAX_NETS 4096
#define NA_MAX_PORTS 16384

#define NA_MAX_PORT_IPS 16         /* Fixed IPs plus allowed address pairs. */
#define NA_MAX_RULES 256           /* Security group rules per port. */
#define NA_MAX_REMOTES 1024        /* Addresses behind one remote group. */

/* One security group rule as it applies to a port: remote groups are
 * already resolved to their members' addresses. */
struct na_rule {
    bool ingress;
    int family;                    /* 4 or 6 */
    char protocol[16];             /* "" any, "tcp", "udp", "icmp", a number... */
    int port_min, port_max;        /* -1 when unset. */
    bool any_remote;               /* No prefix and no group. */
    size_t n_remotes;
    char (*remotes)[OVERLAY_IP_MAX + 4]; /* CIDRs. */
};

/* The filtering of a port: anti-spoofing (its MAC and addresses, allowed
 * address pairs included) and its security groups' rules, stateful. */
struct na_port_sec {
    bool enabled;                  /* port_security_enabled */
    char mac[18];
    size_t n_ips;
    char ips[NA_MAX_PORT_IPS][OVERLAY_IP_MAX + 4];
    size_t n_rules;
    struct na_rule *rules;
};

struct na_desired {
    struct overlay_net *nets;
    size_t n_nets;
    struct overlay_port *ports;
    size_t n_ports;
    struct na_port_sec *secs;      /* Parallel to ports. */
};

/* Parses {"networks": [{"id", "vni", "mtu", "remote_vteps": [...],
 * "dhcp"?: {...}}], "ports": [{"id", "network_id", "kind": "tap"|"veth",
 * "mtu"?, "security"?: {"enabled", "mac", "ips": [...], "rules": [{"direction",
 * "ethertype", "protocol", "port_range_min", "port_range_max", "remotes":
 * [cidr...] or null}]}}]}.  A port's
 * MTU defaults to its network's; a port whose network is not listed is an
 * error.  Returns 0 or -EINVAL with a message in 'err'.  Free with
 * na_desired_free(). */
int na_desired_parse(const json_t *doc, struct na_desired *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void na_desired_free(struct na_desired *d);

enum na_action_kind {
    NA_NET_ENSURE,                 /* index into want->nets */
    NA_PORT_REMOVE,                /* id */
    NA_PORT_ENSURE,                /* index into want->ports */
    NA_NET_REMOVE,                 /* id */
};

struct na_action {
    enum na_action_kind kind;
    size_t index;
    char id[OVERLAY_ID_MAX + 1];
};

/* Plans the actions, in the order they must run.  *out is malloc'd
 * (caller frees); an empty plan means the node has converged. */
int na_plan(const struct na_desired *want,
            const struct overlay_net *nets, size_t n_nets,
            const struct overlay_port *ports, size_t n_ports,
            struct na_action **out, size_t *n_out)
    __attribute__((warn_unused_result));

/* Renders the nftables ruleset for every secured port of 'want': one
 * "table inet nimbus" (per-network conntrack zones, stateful per-port
 * chains keyed on the bridge and the port's addresses, as br_netfilter
 * hands bridged IP traffic to the inet hooks) and one "table bridge
 * nimbus" (stateless anti-spoofing on the port device), replaced
 * atomically by one "nft -f".  Returns malloc'd text, "" when nothing is
 * secured (then the tables are removed). */
char *na_firewall_render(const struct na_desired *want);

struct na_result {
    size_t actions;                /* Actions run. */
    size_t failures;               /* Actions that failed (logged). */
    char last_error[256];
};

/* Lists, plans and applies once.  Returns 0 when every action succeeded,
 * else -EIO (details in 'res'), or the list error. */
int na_reconcile(struct overlay *ov, const struct na_desired *want, struct na_result *res)
    __attribute__((warn_unused_result));

#endif
