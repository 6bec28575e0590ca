/* Reconciler transcripts against the fake overlay provider: first wiring,
 * convergence (a second pass does nothing), port and network removal,
 * flood-list and MTU changes, and bad desired-state documents. */
#include "netagent.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"

#define NET_A "11111111-aaaa-4aaa-8aaa-000000000001"
#define NET_B "22222222-bbbb-4bbb-8bbb-000000000002"
#define PORT_1 "33333333-cccc-4ccc-8ccc-000000000003"
#define PORT_2 "44444444-dddd-4ddd-8ddd-000000000004"
#define PORT_3 "55555555-eeee-4eee-8eee-000000000005"

static int
parse(const char *text, struct na_desired *d)
{
    char err[200];
    json_t *j = json_loads(text, 0, NULL);
    int rc = j ? na_desired_parse(j, d, err, sizeof err) : -1;
    json_decref(j);
    return rc;
}

/* Plans against the fake's current state and returns the plan as text:
 * "E:<net> R:<port> P:<port> D:<net>" with ids cut to 8 characters. */
static const char *
plan_text(struct overlay *ov, const struct na_desired *d)
{
    static char out[1024];
    struct overlay_net *nets;
    struct overlay_port *ports;
    size_t nn, np, n;
    struct na_action *a;
    out[0] = '\0';
    CHECK_INT(ov->cls->list(ov, &nets, &nn, &ports, &np), 0);
    CHECK_INT(na_plan(d, nets, nn, ports, np, &a, &n), 0);
    for (size_t i = 0; i < n; i++) {
        static const char kinds[] = "ERPD";
        char one[16];
        snprintf(one, sizeof one, "%s%c:%.8s", i ? " " : "", kinds[a[i].kind], a[i].id);
        strcat(out, one);
    }
    free(a);
    free(nets);
    free(ports);
    return out;
}

static void
apply(struct overlay *ov, const struct na_desired *d)
{
    struct na_result res;
    CHECK_INT(na_reconcile(ov, d, &res), 0);
    CHECK_INT(res.failures, 0);
}

int
main(void)
{
    struct overlay_config cfg = { .type = "fake" };
    struct overlay *ov;
    struct na_desired d;

    CHECK_INT(overlay_open(&cfg, &ov), 0);

    /* First wiring: networks first, then ports. */
    CHECK_INT(parse("{\"networks\":["
                    "{\"id\":\"" NET_A "\",\"vni\":100,\"mtu\":1450,\"remote_vteps\":[\"10.0.0.2\",\"10.0.0.2\"]},"
                    "{\"id\":\"" NET_B "\",\"vni\":200,\"mtu\":1450}],"
                    "\"ports\":[{\"id\":\"" PORT_1 "\",\"network_id\":\"" NET_A "\"},"
                    "{\"id\":\"" PORT_2 "\",\"network_id\":\"" NET_A "\",\"kind\":\"veth\"},"
                    "{\"id\":\"" PORT_3 "\",\"network_id\":\"" NET_B "\",\"mtu\":1400}]}", &d), 0);
    CHECK_INT(d.nets[0].n_vteps, 1);          /* duplicates folded */
    CHECK_INT(d.ports[0].mtu, 1450);          /* the network's */
    CHECK_INT(d.ports[2].mtu, 1400);
    CHECK_STR(plan_text(ov, &d), "E:11111111 E:22222222 P:33333333 P:44444444 P:55555555");
    apply(ov, &d);
    unsigned ops = overlay_fake_ops(ov);
    CHECK_INT(ops, 5);

    /* Converged: nothing to do, nothing done. */
    CHECK_STR(plan_text(ov, &d), "");
    apply(ov, &d);
    CHECK_INT(overlay_fake_ops(ov), ops);
    na_desired_free(&d);

    /* A port goes, another moves to a different network, a VTEP joins. */
    CHECK_INT(parse("{\"networks\":["
                    "{\"id\":\"" NET_A "\",\"vni\":100,\"mtu\":1450,\"remote_vteps\":[\"10.0.0.2\",\"10.0.0.3\"]},"
                    "{\"id\":\"" NET_B "\",\"vni\":200,\"mtu\":1450}],"
                    "\"ports\":[{\"id\":\"" PORT_1 "\",\"network_id\":\"" NET_B "\"},"
                    "{\"id\":\"" PORT_3 "\",\"network_id\":\"" NET_B "\",\"mtu\":1400}]}", &d), 0);
    CHECK_STR(plan_text(ov, &d), "E:11111111 R:33333333 R:44444444 P:33333333");
    apply(ov, &d);
    CHECK_STR(plan_text(ov, &d), "");
    na_desired_free(&d);

    /* Everything goes: ports before networks. */
    CHECK_INT(parse("{\"networks\":[],\"ports\":[]}", &d), 0);
    CHECK_STR(plan_text(ov, &d), "R:55555555 R:33333333 D:11111111 D:22222222");
    apply(ov, &d);
    CHECK_STR(plan_text(ov, &d), "");
    na_desired_free(&d);

    /* Bad documents are refused whole. */
    CHECK(parse("{}", &d) < 0);
    CHECK(parse("{\"networks\":[{\"id\":\"x\",\"vni\":0,\"mtu\":1450}],\"ports\":[]}", &d) < 0);
    CHECK(parse("{\"networks\":[{\"id\":\"x\",\"vni\":16777216,\"mtu\":1450}],\"ports\":[]}", &d) < 0);
    CHECK(parse("{\"networks\":[{\"id\":\"x\",\"vni\":5,\"mtu\":1450,\"remote_vteps\":[\"1.2.3.4; rm\"]}],\"ports\":[]}", &d) < 0);
    CHECK(parse("{\"networks\":[],\"ports\":[{\"id\":\"p\",\"network_id\":\"nope\"}]}", &d) < 0);
    CHECK(parse("{\"networks\":[{\"id\":\"a:b\",\"vni\":5,\"mtu\":1450}],\"ports\":[]}", &d) < 0);

    /* Device names fit IFNAMSIZ and need enough hex digits. */
    char name[16];
    CHECK_INT(overlay_dev_name("nbr-", NET_A, 10, name), 0);
    CHECK_STR(name, "nbr-11111111aa");
    CHECK_INT(overlay_dev_name("tap", PORT_1, 11, name), 0);
    CHECK_STR(name, "tap33333333ccc");
    CHECK(overlay_dev_name("tap", "short", 11, name) < 0);
    CHECK(overlay_dev_name("tap", "zzzzzzzzzzzzzzz", 11, name) < 0);

    /* Security: the ruleset follows the ports' groups, and is applied once. */
    CHECK_INT(parse("{\"networks\":[{\"id\":\"" NET_A "\",\"vni\":100,\"mtu\":1450}],"
                    "\"ports\":[{\"id\":\"" PORT_1 "\",\"network_id\":\"" NET_A "\","
                    "\"security\":{\"enabled\":true,\"mac\":\"fa:16:3e:00:00:01\",\"ips\":[\"10.0.0.5\"],"
                    "\"rules\":[{\"direction\":\"egress\",\"ethertype\":\"IPv4\"},"
                    "{\"direction\":\"ingress\",\"ethertype\":\"IPv4\",\"protocol\":\"tcp\","
                    "\"port_range_min\":22,\"port_range_max\":22,\"remotes\":[\"10.0.0.0/24\"]},"
                    "{\"direction\":\"ingress\",\"ethertype\":\"IPv4\",\"protocol\":\"icmp\",\"remotes\":null},"
                    "{\"direction\":\"ingress\",\"ethertype\":\"IPv4\",\"remotes\":[]},"
                    "{\"direction\":\"ingress\",\"ethertype\":\"IPv6\",\"remotes\":[\"10.0.0.7/32\"]},"
                    "{\"direction\":\"ingress\",\"ethertype\":\"IPv4\",\"remotes\":[\"10.0.0.7/32\",\"fd00::7/128\"]}]}},"
                    "{\"id\":\"" PORT_2 "\",\"network_id\":\"" NET_A "\",\"security\":{\"enabled\":false}}]}", &d), 0);
    apply(ov, &d);
    const char *rs = overlay_fake_ruleset(ov);
    CHECK(strstr(rs, "iifname \"nbr-11111111aa\" ct zone set 101") != NULL);
    CHECK(strstr(rs, "iifname \"nbr-11111111aa\" ip saddr { 10.0.0.5 } jump o_33333333ccc") != NULL);
    CHECK(strstr(rs, "oifname \"nbr-11111111aa\" ip daddr { 10.0.0.5 } jump i_33333333ccc") != NULL);
    CHECK(strstr(rs, "meta nfproto ipv4 return") != NULL);
    CHECK(strstr(rs, "meta nfproto ipv4 ip saddr { 10.0.0.0/24 } meta l4proto tcp tcp dport 22 accept") != NULL);
    CHECK(strstr(rs, "meta nfproto ipv4 meta l4proto icmp accept") != NULL);
    CHECK(strstr(rs, "iifname \"tap33333333ccc\" ether saddr != fa:16:3e:00:00:01 drop") != NULL);
    CHECK(strstr(rs, "ip saddr != { 10.0.0.5, 0.0.0.0 } drop") != NULL);
    CHECK(strstr(rs, "arp saddr ip != { 10.0.0.5 } drop") != NULL);
    CHECK(strstr(rs, "44444444ddd") == NULL);      /* port security off: no rules */
    /* Remotes of the other family are left out; none left: no rule. */
    CHECK(strstr(rs, "meta nfproto ipv4 ip saddr { 10.0.0.7/32 } accept") != NULL);
    CHECK(strstr(rs, "ip6 saddr { 10.0.0.7") == NULL);
    CHECK(strstr(rs, "fd00::7") == NULL);
    ops = overlay_fake_ops(ov);
    apply(ov, &d);
    CHECK_INT(overlay_fake_ops(ov), ops);          /* converged */
    na_desired_free(&d);
    CHECK_INT(parse("{\"networks\":[],\"ports\":[]}", &d), 0);
    apply(ov, &d);
    CHECK_STR(overlay_fake_ruleset(ov), "");
    na_desired_free(&d);
    CHECK(parse("{\"networks\":[{\"id\":\"x1\",\"vni\":5,\"mtu\":1450}],\"ports\":[{\"id\":\"p1\","
                "\"network_id\":\"x1\",\"security\":{\"enabled\":true,\"mac\":\"fa:16:3e:00:00:01\","
                "\"ips\":[\"1.2.3.4; flush ruleset\"]}}]}", &d) < 0);

    overlay_close(ov);
    return check_exit();
}
