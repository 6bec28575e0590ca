/* The reconciler (see netagent.h). */
#include "netagent.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
copy_id(char dst[OVERLAY_ID_MAX + 1], const json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) > OVERLAY_ID_MAX || strchr(s, ':') || strchr(s, ' '))
        return -EINVAL;
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

static bool
valid_mac(const char *s)
{
    if (!s || strlen(s) != 17)
        return false;
    for (int i = 0; i < 17; i++)
        if (i % 3 == 2 ? s[i] != ':' : !strchr("0123456789abcdefABCDEF", s[i]))
            return false;
    return true;
}

static bool
valid_ip(const char *s)
{
    return s && *s && strlen(s) < OVERLAY_IP_MAX && strspn(s, "0123456789.") == strlen(s);
}

/* Parses a network's "dhcp" object (IPv4).  The hosts array is malloc'd
 * into d->hosts. */
static int
parse_dhcp(const json_t *o, struct overlay_dhcp *d)
{
    const char *mac = json_string_value(json_object_get(o, "mac"));
    const char *ip = json_string_value(json_object_get(o, "ip"));
    const char *subnet = json_string_value(json_object_get(o, "subnet"));
    const char *gw = json_string_value(json_object_get(o, "gateway"));
    json_int_t plen = json_integer_value(json_object_get(o, "prefixlen"));
    const json_t *dns = json_object_get(o, "dns"), *hosts = json_object_get(o, "hosts");
    size_t i;
    json_t *e;

    if (copy_id(d->port_id, json_object_get(o, "port_id")) < 0 || !valid_mac(mac) || !valid_ip(ip)
        || !valid_ip(subnet) || (gw && *gw && !valid_ip(gw)) || plen < 1 || plen > 30
        || json_array_size(dns) > OVERLAY_MAX_DNS || json_array_size(hosts) > NA_MAX_PORTS)
        return -EINVAL;
    memcpy(d->mac, mac, 18);
    snprintf(d->ip, sizeof d->ip, "%s", ip);
    snprintf(d->subnet, sizeof d->subnet, "%s", subnet);
    snprintf(d->gateway, sizeof d->gateway, "%s", gw ? gw : "");
    d->prefixlen = (int)plen;
    json_array_foreach(dns, i, e) {
        if (!valid_ip(json_string_value(e)))
            return -EINVAL;
        snprintf(d->dns[d->n_dns++], OVERLAY_IP_MAX, "%s", json_string_value(e));
    }
    d->hosts = calloc(json_array_size(hosts) + 1, sizeof *d->hosts);
    if (!d->hosts)
        return -ENOMEM;
    json_array_foreach(hosts, i, e) {
        const char *hm = json_string_value(json_object_get(e, "mac"));
        const char *hi = json_string_value(json_object_get(e, "ip"));
        if (!valid_mac(hm) || !valid_ip(hi))
            return -EINVAL;
        memcpy(d->hosts[d->n_hosts].mac, hm, 18);
        snprintf(d->hosts[d->n_hosts].ip, OVERLAY_IP_MAX, "%s", hi);
        d->n_hosts++;
    }
    d->enabled = true;
    return 0;
}

static bool
valid_cidr(const char *s)
{
    return s && *s && strlen(s) < OVERLAY_IP_MAX + 4
           && strspn(s, "0123456789abcdefABCDEF:./") == strlen(s);
}

static bool
valid_proto(const char *s)
{
    return strlen(s) < 16 && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(s);
}

/* Parses a port's "security" object. */
static int
parse_security(const json_t *o, struct na_port_sec *sec)
{
    const char *mac = json_string_value(json_object_get(o, "mac"));
    const json_t *ips = json_object_get(o, "ips"), *rules = json_object_get(o, "rules");
    size_t i;
    json_t *e;

    sec->enabled = json_is_true(json_object_get(o, "enabled"));
    if (!sec->enabled)
        return 0;
    if (!valid_mac(mac) || json_array_size(ips) > NA_MAX_PORT_IPS
        || json_array_size(rules) > NA_MAX_RULES)
        return -EINVAL;
    memcpy(sec->mac, mac, 18);
    json_array_foreach(ips, i, e) {
        if (!valid_cidr(json_string_value(e)))
            return -EINVAL;
        snprintf(sec->ips[sec->n_ips++], sizeof sec->ips[0], "%s", json_string_value(e));
    }
    sec->rules = calloc(json_array_size(rules) + 1, sizeof *sec->rules);
    if (!sec->rules)
        return -ENOMEM;
    json_array_foreach(rules, i, e) {
        struct na_rule *r = &sec->rules[sec->n_rules++];
        const char *dir = json_string_value(json_object_get(e, "direction"));
        const char *eth = json_string_value(json_object_get(e, "ethertype"));
        const char *proto = json_string_value(json_object_get(e, "protocol"));
        const json_t *pmin = json_object_get(e, "port_range_min");
        const json_t *pmax = json_object_get(e, "port_range_max");
        const json_t *rem = json_object_get(e, "remotes");
        if (!dir || (strcmp(dir, "ingress") && strcmp(dir, "egress"))
            || !eth || (strcmp(eth, "IPv4") && strcmp(eth, "IPv6"))
            || (proto && !valid_proto(proto))
            || json_array_size(rem) > NA_MAX_REMOTES)
            return -EINVAL;
        r->ingress = !strcmp(dir, "ingress");
        r->family = !strcmp(eth, "IPv4") ? 4 : 6;
        snprintf(r->protocol, sizeof r->protocol, "%s", proto ? proto : "");
        r->port_min = json_is_integer(pmin) ? (int)json_integer_value(pmin) : -1;
        r->port_max = json_is_integer(pmax) ? (int)json_integer_value(pmax) : -1;
        if (r->port_min > 65535 || r->port_max > 65535)
            return -EINVAL;
        r->any_remote = !rem || json_is_null(rem);
        if (!r->any_remote) {
            size_t j;
            json_t *c;
            r->remotes = calloc(json_array_size(rem) + 1, sizeof *r->remotes);
            if (!r->remotes)
                return -ENOMEM;
            json_array_foreach(rem, j, c) {
                if (!valid_cidr(json_string_value(c)))
                    return -EINVAL;
                snprintf(r->remotes[r->n_remotes++], sizeof r->remotes[0], "%s",
                         json_string_value(c));
            }
        }
    }
    return 0;
}

int
na_desired_parse(const json_t *doc, struct na_desired *out, char *err, size_t errlen)
{
    const json_t *nets = json_object_get(doc, "networks");
    const json_t *ports = json_object_get(doc, "ports");
    size_t i;
    json_t *e;

    memset(out, 0, sizeof *out);
    if (!json_is_array(nets) || !json_is_array(ports)) {
        snprintf(err, errlen, "desired state: \"networks\" and \"ports\" must be lists");
        return -EINVAL;
    }
    if (json_array_size(nets) > NA_MAX_NETS || json_array_size(ports) > NA_MAX_PORTS) {
        snprintf(err, errlen, "desired state: too many networks or ports");
        return -EINVAL;
    }
    out->nets = calloc(json_array_size(nets) + 1, sizeof *out->nets);
    out->ports = calloc(json_array_size(ports) + 1, sizeof *out->ports);
    out->secs = calloc(json_array_size(ports) + 1, sizeof *out->secs);
    if (!out->nets || !out->ports || !out->secs) {
        na_desired_free(out);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    json_array_foreach(nets, i, e) {
        struct overlay_net *n = &out->nets[out->n_nets];
        json_int_t vni = json_integer_value(json_object_get(e, "vni"));
        json_int_t mtu = json_integer_value(json_object_get(e, "mtu"));
        const json_t *vteps = json_object_get(e, "remote_vteps");
        size_t j;
        json_t *v;
        if (copy_id(n->id, json_object_get(e, "id")) < 0 || vni < 1 || vni > 16777215
            || mtu < 68 || mtu > 65535 || (vteps && !json_is_array(vteps))
            || json_array_size(vteps) > OVERLAY_MAX_VTEPS) {
            snprintf(err, errlen, "desired state: bad network #%zu", i);
            na_desired_free(out);
            return -EINVAL;
        }
        n->vni = (uint32_t)vni;
        n->mtu = (int)mtu;
        out->n_nets++;           /* Counted now so that free() sees its hosts. */
        const json_t *dhcp = json_object_get(e, "dhcp");
        if (dhcp && !json_is_null(dhcp) && parse_dhcp(dhcp, &n->dhcp) < 0) {
            snprintf(err, errlen, "desired state: bad dhcp in network %s", n->id);
            na_desired_free(out);
            return -EINVAL;
        }
        json_array_foreach(vteps, j, v) {
            const char *ip = json_string_value(v);
            if (!ip || strlen(ip) >= OVERLAY_IP_MAX || strspn(ip, "0123456789abcdefABCDEF:.") != strlen(ip)) {
                snprintf(err, errlen, "desired state: bad VTEP in network %s", n->id);
                na_desired_free(out);
                return -EINVAL;
            }
            bool dup = false;
            for (size_t k = 0; k < n->n_vteps && !dup; k++)
                dup = !strcmp(n->vteps[k], ip);
            if (!dup)
                memcpy(n->vteps[n->n_vteps++], ip, strlen(ip) + 1);
        }
        overlay_dhcp_digest(n, n->dhcp_digest);
    }
    json_array_foreach(ports, i, e) {
        struct overlay_port *p = &out->ports[out->n_ports];
        const char *kind = json_string_value(json_object_get(e, "kind"));
        if (copy_id(p->id, json_object_get(e, "id")) < 0
            || copy_id(p->network_id, json_object_get(e, "network_id")) < 0
            || (kind && strcmp(kind, "tap") && strcmp(kind, "veth"))) {
            snprintf(err, errlen, "desired state: bad port #%zu", i);
            na_desired_free(out);
            return -EINVAL;
        }
        p->kind = kind && !strcmp(kind, "veth") ? OVERLAY_PORT_VETH : OVERLAY_PORT_TAP;
        const struct overlay_net *n = NULL;
        for (size_t k = 0; k < out->n_nets && !n; k++)
            if (!strcmp(out->nets[k].id, p->network_id))
                n = &out->nets[k];
        if (!n) {
            snprintf(err, errlen, "desired state: port %s is on unknown network %s", p->id,
                     p->network_id);
            na_desired_free(out);
            return -EINVAL;
        }
        json_int_t mtu = json_integer_value(json_object_get(e, "mtu"));
        p->mtu = mtu >= 68 && mtu <= n->mtu ? (int)mtu : n->mtu;
        p->attached = true;
        out->n_ports++;
        const json_t *sec = json_object_get(e, "security");
        if (sec && !json_is_null(sec) && parse_security(sec, &out->secs[out->n_ports - 1]) < 0) {
            snprintf(err, errlen, "desired state: bad security of port %s", p->id);
            na_desired_free(out);
            return -EINVAL;
        }
    }
    return 0;
}

void
na_desired_free(struct na_desired *d)
{
    if (!d)
        return;
    for (size_t i = 0; d->nets && i < d->n_nets; i++)
        free(d->nets[i].dhcp.hosts);
    for (size_t i = 0; d->secs && i < d->n_ports; i++) {
        for (size_t j = 0; j < d->secs[i].n_rules; j++)
            free(d->secs[i].rules[j].remotes);
        free(d->secs[i].rules);
    }
    free(d->secs);
    free(d->nets);
    free(d->ports);
    memset(d, 0, sizeof *d);
}

static bool
same_vteps(const struct overlay_net *a, const struct overlay_net *b)
{
    if (a->n_vteps != b->n_vteps)
        return false;
    for (size_t i = 0; i < a->n_vteps; i++) {
        bool found = false;
        for (size_t j = 0; j < b->n_vteps && !found; j++)
            found = !strcmp(a->vteps[i], b->vteps[j]);
        if (!found)
            return false;
    }
    return true;
}

int
na_plan(const struct na_desired *want,
        const struct overlay_net *nets, size_t n_nets,
        const struct overlay_port *ports, size_t n_ports,
        struct na_action **out, size_t *n_out)
{
    size_t cap = want->n_nets + want->n_ports + n_nets + n_ports + 1, n = 0;
    struct na_action *a = calloc(cap, sizeof *a);
    *out = NULL;
    *n_out = 0;
    if (!a)
        return -ENOMEM;

    /* 1. Networks that are missing or differ. */
    for (size_t i = 0; i < want->n_nets; i++) {
        const struct overlay_net *w = &want->nets[i], *have = NULL;
        for (size_t j = 0; j < n_nets && !have; j++)
            if (!strcmp(nets[j].id, w->id))
                have = &nets[j];
        if (!have || have->vni != w->vni || have->mtu != w->mtu || !same_vteps(have, w)
            || strcmp(have->dhcp_digest, w->dhcp_digest)) {
            a[n].kind = NA_NET_ENSURE;
            a[n].index = i;
            snprintf(a[n].id, sizeof a[n].id, "%s", w->id);
            n++;
        }
    }
    /* 2. Ports no longer wanted, or wanted differently (another network or
     *    kind: the device must be made again). */
    for (size_t j = 0; j < n_ports; j++) {
        const struct overlay_port *have = &ports[j], *w = NULL;
        for (size_t i = 0; i < want->n_ports && !w; i++)
            if (!strcmp(want->ports[i].id, have->id))
                w = &want->ports[i];
        if (!w || strcmp(w->network_id, have->network_id) || w->kind != have->kind) {
            a[n].kind = NA_PORT_REMOVE;
            snprintf(a[n].id, sizeof a[n].id, "%s", have->id);
            n++;
        }
    }
    /* 3. Ports that are missing, detached or with the wrong MTU. */
    for (size_t i = 0; i < want->n_ports; i++) {
        const struct overlay_port *w = &want->ports[i], *have = NULL;
        for (size_t j = 0; j < n_ports && !have; j++)
            if (!strcmp(ports[j].id, w->id))
                have = &ports[j];
        bool recreated = have && (strcmp(w->network_id, have->network_id) || w->kind != have->kind);
        if (!have || recreated || !have->attached || have->mtu != w->mtu) {
            a[n].kind = NA_PORT_ENSURE;
            a[n].index = i;
            snprintf(a[n].id, sizeof a[n].id, "%s", w->id);
            n++;
        }
    }
    /* 4. Networks no longer wanted. */
    for (size_t j = 0; j < n_nets; j++) {
        bool wanted = false;
        for (size_t i = 0; i < want->n_nets && !wanted; i++)
            wanted = !strcmp(want->nets[i].id, nets[j].id);
        if (!wanted) {
            a[n].kind = NA_NET_REMOVE;
            snprintf(a[n].id, sizeof a[n].id, "%s", nets[j].id);
            n++;
        }
    }
    *out = a;
    *n_out = n;
    return 0;
}

int
na_reconcile(struct overlay *ov, const struct na_desired *want, struct na_result *res)
{
    struct overlay_net *nets = NULL;
    struct overlay_port *ports = NULL;
    size_t n_nets = 0, n_ports = 0, n = 0;
    struct na_action *plan = NULL;

    memset(res, 0, sizeof *res);
    int rc = ov->cls->list(ov, &nets, &n_nets, &ports, &n_ports);
    if (rc < 0) {
        snprintf(res->last_error, sizeof res->last_error, "list: %.240s", ov->err);
        return rc;
    }
    rc = na_plan(want, nets, n_nets, ports, n_ports, &plan, &n);
    free(nets);
    free(ports);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const struct na_action *a = &plan[i];
        switch (a->kind) {
        case NA_NET_ENSURE:
            rc = ov->cls->net_ensure(ov, &want->nets[a->index]);
            break;
        case NA_PORT_REMOVE:
            rc = ov->cls->port_remove(ov, a->id);
            break;
        case NA_PORT_ENSURE:
            rc = ov->cls->port_ensure(ov, &want->ports[a->index]);
            break;
        case NA_NET_REMOVE:
            rc = ov->cls->net_remove(ov, a->id);
            break;
        default:
            rc = -EINVAL;
            break;
        }
        res->actions++;
        if (rc < 0) {
            res->failures++;
            snprintf(res->last_error, sizeof res->last_error, "%.64s: %.180s", a->id, ov->err);
        }
    }
    free(plan);

    /* The packet filter, as one atomic replacement. */
    char *ruleset = na_firewall_render(want);
    bool changed = false;
    if (!ruleset) {
        res->failures++;
        snprintf(res->last_error, sizeof res->last_error, "firewall: out of memory");
    } else if (ov->cls->firewall_sync(ov, ruleset, &changed) < 0) {
        res->failures++;
        snprintf(res->last_error, sizeof res->last_error, "firewall: %.230s", ov->err);
    }
    if (changed)
        res->actions++;
    free(ruleset);
    return res->failures ? -EIO : 0;
}

/* ---- nftables rendering. */

struct sbuf {
    char *s;
    size_t len, cap;
    bool failed;
};

static void
sb_add(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
sb_add(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        if (b->failed)
            return;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = (b->cap ? b->cap : 4096);
        while (ncap <= b->len + (size_t)n)
            ncap *= 2;
        char *ns = realloc(b->s, ncap);
        if (!ns) {
            b->failed = true;
            return;
        }
        b->s = ns;
        b->cap = ncap;
    }
}

/* "{ a, b }" of the port's addresses of one family (4 or 6). */
static size_t
addr_set(const struct na_port_sec *sec, int family, char *out, size_t len)
{
    size_t n = 0, used = 0;
    used += (size_t)snprintf(out, len, "{ ");
    for (size_t i = 0; i < sec->n_ips && used < len; i++) {
        bool v6 = strchr(sec->ips[i], ':') != NULL;
        if (v6 != (family == 6))
            continue;
        used += (size_t)snprintf(out + used, len - used, "%s%s", n ? ", " : "", sec->ips[i]);
        n++;
    }
    if (used < len)
        snprintf(out + used, len - used, " }");
    return n;
}

static void
render_rule(struct sbuf *b, const struct na_rule *r, const char *verdict)
{
    const char *ipf = r->family == 4 ? "ip" : "ip6";
    const char *p = r->protocol;
    size_t n = 0;
    for (size_t i = 0; i < r->n_remotes; i++)
        n += (strchr(r->remotes[i], ':') != NULL) == (r->family == 6);
    if (!r->any_remote && n == 0)
        return;                    /* No remote of this family: matches nothing. */
    sb_add(b, "    meta nfproto %s", r->family == 4 ? "ipv4" : "ipv6");
    if (!r->any_remote) {
        sb_add(b, " %s %s {", ipf, r->ingress ? "saddr" : "daddr");
        n = 0;
        for (size_t i = 0; i < r->n_remotes; i++)
            if ((strchr(r->remotes[i], ':') != NULL) == (r->family == 6))
                sb_add(b, "%s %s", n++ ? "," : "", r->remotes[i]);
        sb_add(b, " }");
    }
    bool icmp = !strcmp(p, "icmp") || !strcmp(p, "ipv6-icmp") || !strcmp(p, "icmpv6")
                || (r->family == 4 && !strcmp(p, "1")) || (r->family == 6 && !strcmp(p, "58"));
    bool ported = !strcmp(p, "tcp") || !strcmp(p, "udp") || !strcmp(p, "sctp") || !strcmp(p, "6")
                  || !strcmp(p, "17") || !strcmp(p, "132");
    if (icmp) {
        const char *kw = r->family == 4 ? "icmp" : "icmpv6";
        sb_add(b, " meta l4proto %s", r->family == 4 ? "icmp" : "ipv6-icmp");
        if (r->port_min >= 0)
            sb_add(b, " %s type %d", kw, r->port_min);
        if (r->port_min >= 0 && r->port_max >= 0)
            sb_add(b, " %s code %d", kw, r->port_max);
    } else if (ported) {
        const char *name = !strcmp(p, "6") ? "tcp" : !strcmp(p, "17") ? "udp"
                         : !strcmp(p, "132") ? "sctp" : p;
        sb_add(b, " meta l4proto %s", name);
        if (r->port_min >= 0) {
            int hi = r->port_max >= 0 ? r->port_max : r->port_min;
            if (hi == r->port_min)
                sb_add(b, " %s dport %d", name, r->port_min);
            else
                sb_add(b, " %s dport %d-%d", name, r->port_min, hi);
        }
    } else if (*p) {
        sb_add(b, " meta l4proto %s", p);
    }
    sb_add(b, " %s\n", verdict);
}

char *
na_firewall_render(const struct na_desired *want)
{
    struct sbuf b = { NULL, 0, 0, false };
    bool any = false;
    char set4[NA_MAX_PORT_IPS * (OVERLAY_IP_MAX + 6) + 8], set6[sizeof set4];

    for (size_t i = 0; i < want->n_ports; i++)
        any |= want->secs[i].enabled;
    if (!any)
        return strdup("");

    /* Conntrack zones: one per network, so that equal addresses in two
     * tenant networks never share connection state. */
    sb_add(&b, "table inet nimbus {\n  chain pre {\n"
               "    type filter hook prerouting priority -300; policy accept;\n");
    for (size_t i = 0; i < want->n_nets; i++) {
        char br[16];
        if (overlay_dev_name("nbr-", want->nets[i].id, 10, br) == 0)
            sb_add(&b, "    iifname \"%s\" ct zone set %u\n", br,
                   want->nets[i].vni % 65535u + 1u);
    }
    sb_add(&b, "  }\n  chain forward {\n"
               "    type filter hook forward priority 0; policy accept;\n"
               "    ct state established,related accept\n");
    for (size_t i = 0; i < want->n_ports; i++) {
        const struct na_port_sec *sec = &want->secs[i];
        char br[16], tap[16];
        if (!sec->enabled || overlay_dev_name("nbr-", want->ports[i].network_id, 10, br) < 0
            || overlay_dev_name("", want->ports[i].id, 11, tap) < 0)
            continue;
        if (addr_set(sec, 4, set4, sizeof set4))
            sb_add(&b, "    iifname \"%s\" ip saddr %s jump o_%s\n"
                       "    oifname \"%s\" ip daddr %s jump i_%s\n", br, set4, tap, br, set4, tap);
        if (addr_set(sec, 6, set6, sizeof set6))
            sb_add(&b, "    iifname \"%s\" ip6 saddr %s jump o_%s\n"
                       "    oifname \"%s\" ip6 daddr %s jump i_%s\n", br, set6, tap, br, set6, tap);
    }
    sb_add(&b, "  }\n");
    for (size_t i = 0; i < want->n_ports; i++) {
        const struct na_port_sec *sec = &want->secs[i];
        char tap[16];
        if (!sec->enabled || overlay_dev_name("", want->ports[i].id, 11, tap) < 0)
            continue;
        /* Egress: an allowed packet returns to be checked against the
         * destination's ingress rules when that port is on this node. */
        sb_add(&b, "  chain o_%s {\n", tap);
        for (size_t j = 0; j < sec->n_rules; j++)
            if (!sec->rules[j].ingress)
                render_rule(&b, &sec->rules[j], "return");
        sb_add(&b, "    drop\n  }\n  chain i_%s {\n"
                   "    udp sport 67 udp dport 68 accept\n"
                   "    meta l4proto ipv6-icmp icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept\n",
               tap);
        for (size_t j = 0; j < sec->n_rules; j++)
            if (sec->rules[j].ingress)
                render_rule(&b, &sec->rules[j], "accept");
        sb_add(&b, "    drop\n  }\n");
    }
    sb_add(&b, "}\n");

    /* Anti-spoofing on the port itself (bridge family, stateless). */
    sb_add(&b, "table bridge nimbus {\n  chain forward {\n"
               "    type filter hook forward priority 0; policy accept;\n");
    for (size_t i = 0; i < want->n_ports; i++) {
        const struct na_port_sec *sec = &want->secs[i];
        char dev[16];
        if (!sec->enabled || overlay_dev_name("tap", want->ports[i].id, 11, dev) < 0)
            continue;
        size_t n4 = addr_set(sec, 4, set4, sizeof set4);
        sb_add(&b, "    iifname \"%s\" ether saddr != %s drop\n", dev, sec->mac);
        if (n4) {
            /* 0.0.0.0: DHCP discovery before the guest has its address. */
            set4[strlen(set4) - 2] = '\0';
            sb_add(&b, "    iifname \"%s\" ether type ip ip saddr != %s, 0.0.0.0 } drop\n", dev, set4);
            addr_set(sec, 4, set4, sizeof set4);
            sb_add(&b, "    iifname \"%s\" ether type arp arp saddr ip != %s drop\n", dev, set4);
        } else {
            sb_add(&b, "    iifname \"%s\" ether type ip ip saddr != 0.0.0.0 drop\n", dev);
            sb_add(&b, "    iifname \"%s\" ether type arp drop\n", dev);
        }
        if (addr_set(sec, 6, set6, sizeof set6)) {
            set6[strlen(set6) - 2] = '\0';
            sb_add(&b, "    iifname \"%s\" ether type ip6 ip6 saddr != %s, fe80::/10, :: } drop\n", dev, set6);
        } else {
            sb_add(&b, "    iifname \"%s\" ether type ip6 ip6 saddr != { fe80::/10, :: } drop\n", dev);
        }
    }
    sb_add(&b, "  }\n}\n");
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
