/* The Network API as the desired-state source (see netagent_api.h). */
#include "netagent_api.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESP_MAX (64u << 20)       /* Largest answer accepted. */
#define TOKEN_MAX 2048

struct na_api {
    struct na_api_config cfg;
    CURL *curl;
    char token[TOKEN_MAX];
};

struct buf {
    char *data;
    size_t len;
    bool too_big;
};

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    size_t add = size * n;
    if (b->len + add > RESP_MAX) {
        b->too_big = true;
        return 0;
    }
    char *nd = realloc(b->data, b->len + add + 1);
    if (!nd)
        return 0;
    b->data = nd;
    memcpy(b->data + b->len, p, add);
    b->len += add;
    b->data[b->len] = '\0';
    return add;
}

struct hdr_ctx {
    char *token;
};

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
    struct hdr_ctx *h = arg;
    size_t len = size * n;
    static const char name[] = "x-subject-token:";
    if (len > sizeof name && !strncasecmp(p, name, sizeof name - 1)) {
        const char *v = p + sizeof name - 1;
        size_t vl = len - (sizeof name - 1);
        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
            vl--;
        if (vl < TOKEN_MAX) {
            memcpy(h->token, v, vl);
            h->token[vl] = '\0';
        }
    }
    return len;
}

int
na_api_new(const struct na_api_config *cfg, struct na_api **out)
{
    static bool global_done;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
            return -EIO;
        global_done = true;
    }
    struct na_api *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->cfg = *cfg;
    a->curl = curl_easy_init();
    if (!a->curl) {
        free(a);
        return -ENOMEM;
    }
    *out = a;
    return 0;
}

void
na_api_free(struct na_api *api)
{
    if (!api)
        return;
    curl_easy_cleanup(api->curl);
    free(api);
}

/* One request; returns the HTTP status (or a negative errno) and the
 * parsed body in *resp (NULL when none or not JSON). */
static long
request(struct na_api *a, const char *method, const char *url, const char *body,
        json_t **resp, bool auth, char *token_out)
{
    struct buf b = { NULL, 0, false };
    struct curl_slist *h = NULL;
    struct hdr_ctx hc = { token_out };
    char tokhdr[TOKEN_MAX + 32];
    long status = 0;

    if (resp)
        *resp = NULL;
    curl_easy_reset(a->curl);
    curl_easy_setopt(a->curl, CURLOPT_URL, url);
    curl_easy_setopt(a->curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(a->curl, CURLOPT_TIMEOUT_MS, a->cfg.timeout_ms > 0 ? a->cfg.timeout_ms : 30000L);
    curl_easy_setopt(a->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(a->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(a->curl, CURLOPT_WRITEDATA, &b);
    if (token_out) {
        curl_easy_setopt(a->curl, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(a->curl, CURLOPT_HEADERDATA, &hc);
    }
    h = curl_slist_append(h, "Accept: application/json");
    if (body) {
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(a->curl, CURLOPT_POSTFIELDS, body);
    }
    if (auth) {
        snprintf(tokhdr, sizeof tokhdr, "X-Auth-Token: %s", a->token);
        h = curl_slist_append(h, tokhdr);
    }
    curl_easy_setopt(a->curl, CURLOPT_HTTPHEADER, h);
    CURLcode cc = curl_easy_perform(a->curl);
    curl_slist_free_all(h);
    if (cc != CURLE_OK) {
        free(b.data);
        return b.too_big ? -E2BIG : -ECONNREFUSED;
    }
    curl_easy_getinfo(a->curl, CURLINFO_RESPONSE_CODE, &status);
    if (resp && b.data)
        *resp = json_loads(b.data, 0, NULL);
    free(b.data);
    return status;
}

static int
authenticate(struct na_api *a, char *err, size_t errlen)
{
    json_t *body = json_pack("{s:{s:{s:[s],s:{s:{s:s,s:{s:s},s:s}}},s:{s:{s:s,s:{s:s}}}}}",
        "auth", "identity", "methods", "password", "password", "user",
        "name", a->cfg.username, "domain", "name", a->cfg.user_domain ? a->cfg.user_domain : "Default",
        "password", a->cfg.password,
        "scope", "project", "name", a->cfg.project,
        "domain", "name", a->cfg.project_domain ? a->cfg.project_domain : "Default");
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return -ENOMEM;
    char url[1024];
    snprintf(url, sizeof url, "%s/auth/tokens", a->cfg.auth_url);
    a->token[0] = '\0';
    long st = request(a, "POST", url, text, NULL, false, a->token);
    free(text);
    if (st != 201 || !a->token[0]) {
        snprintf(err, errlen, "authentication at %s failed (%ld)", url, st);
        return -EACCES;
    }
    return 0;
}

/* GET with a token, authenticating (again) on 401. */
static int
get_json(struct na_api *a, const char *url, json_t **out, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!a->token[0] || attempt) {
            int rc = authenticate(a, err, errlen);
            if (rc < 0)
                return rc;
        }
        long st = request(a, "GET", url, NULL, out, true, NULL);
        if (st == 401) {
            json_decref(*out);
            *out = NULL;
            continue;
        }
        if (st != 200 || !*out) {
            json_decref(*out);
            *out = NULL;
            snprintf(err, errlen, "GET %s: %ld", url, st);
            return st < 0 ? (int)st : -EIO;
        }
        return 0;
    }
    snprintf(err, errlen, "GET %s: not authorised", url);
    return -EACCES;
}

/* Appends "&key=value" (value URL-encoded) to 'url' of size 'cap'. */
static int
add_param(CURL *c, char *url, size_t cap, const char *key, const char *value)
{
    char *enc = curl_easy_escape(c, value, 0);
    if (!enc)
        return -ENOMEM;
    size_t len = strlen(url);
    int n = snprintf(url + len, cap - len, "%s%s=%s", strchr(url, '?') ? "&" : "?", key, enc);
    curl_free(enc);
    return n < 0 || (size_t)n >= cap - len ? -E2BIG : 0;
}

/* POST with a token (authenticating on 401); *out gets the answer. */
static int
post_json(struct na_api *a, const char *url, json_t *body, json_t **out, char *err, size_t errlen)
{
    char *text = json_dumps(body, JSON_COMPACT);
    if (!text)
        return -ENOMEM;
    long st = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!a->token[0] || attempt) {
            int rc = authenticate(a, err, errlen);
            if (rc < 0) {
                free(text);
                return rc;
            }
        }
        st = request(a, "POST", url, text, out, true, NULL);
        if (st != 401)
            break;
        json_decref(*out);
        *out = NULL;
    }
    free(text);
    if (st != 201 || !*out) {
        json_decref(*out);
        *out = NULL;
        snprintf(err, errlen, "POST %s: %ld", url, st);
        return -EIO;
    }
    return 0;
}

/* The first IPv4 address of 'port' in 'subnet_id', or NULL. */
static const char *
port_ip_in(const json_t *port, const char *subnet_id)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(port, "fixed_ips"), i, f) {
        const char *sid = json_string_value(json_object_get(f, "subnet_id"));
        const char *ip = json_string_value(json_object_get(f, "ip_address"));
        if (sid && ip && !strcmp(sid, subnet_id) && !strchr(ip, ':'))
            return ip;
    }
    return NULL;
}

/* DHCP for network 'net' on this node: the first IPv4 subnet with DHCP on,
 * this host's DHCP port on the network (created on first need, owned by
 * the network's project, as Neutron's DHCP agent does), and a static entry
 * for every other port of the network.  Returns a new "dhcp" object, NULL
 * when the network needs none (or on failure, with 'err' set).  A DHCP
 * port created here is appended to 'keep' for reporting. */
static json_t *
build_dhcp(struct na_api *a, const json_t *net, json_t *peers, json_t *keep, char *url,
           size_t cap, char *err, size_t errlen)
{
    const char *nid = json_string_value(json_object_get(net, "id"));
    json_t *subnets = NULL, *subnet = NULL, *port = NULL;
    size_t i;
    json_t *e;

    snprintf(url, cap, "%s/v2.0/subnets", a->cfg.network_url);
    if (add_param(a->curl, url, cap, "network_id", nid) < 0
        || get_json(a, url, &subnets, err, errlen) < 0)
        return NULL;
    json_array_foreach(json_object_get(subnets, "subnets"), i, e) {
        if (json_integer_value(json_object_get(e, "ip_version")) == 4
            && json_is_true(json_object_get(e, "enable_dhcp"))) {
            subnet = e;
            break;
        }
    }
    if (!subnet) {
        json_decref(subnets);
        return NULL;
    }
    const char *sid = json_string_value(json_object_get(subnet, "id"));
    json_array_foreach(json_object_get(peers, "ports"), i, e) {
        const char *owner = json_string_value(json_object_get(e, "device_owner"));
        const char *host = json_string_value(json_object_get(e, "binding:host_id"));
        if (owner && !strcmp(owner, "network:dhcp") && host && !strcmp(host, a->cfg.host))
            port = e;
    }
    if (!port) {
        char dev[300];
        json_t *created = NULL;
        snprintf(dev, sizeof dev, "dhcp-%s", a->cfg.host);
        /* Network-owned ports are trusted (not filtered), as in Neutron. */
        json_t *body = json_pack("{s:{s:s,s:s,s:s,s:s,s:s,s:O,s:[{s:s}],s:b}}", "port",
                                 "network_id", nid, "name", dev, "device_owner", "network:dhcp",
                                 "device_id", dev, "binding:host_id", a->cfg.host,
                                 "project_id", json_object_get(net, "project_id"),
                                 "fixed_ips", "subnet_id", sid, "port_security_enabled", 0);
        snprintf(url, cap, "%s/v2.0/ports", a->cfg.network_url);
        int rc = body ? post_json(a, url, body, &created, err, errlen) : -ENOMEM;
        json_decref(body);
        if (rc < 0) {
            json_decref(subnets);
            return NULL;
        }
        port = json_object_get(created, "port");
        json_array_append(keep, port);
        json_decref(created);
    }
    const char *ip = port_ip_in(port, sid);
    const char *cidr = json_string_value(json_object_get(subnet, "cidr"));
    const char *slash = cidr ? strchr(cidr, '/') : NULL;
    if (!ip || !slash) {
        snprintf(err, errlen, "DHCP port of network %s has no address in subnet %s", nid, sid);
        json_decref(subnets);
        return NULL;
    }
    char base[64];
    snprintf(base, sizeof base, "%.*s", (int)(slash - cidr), cidr);
    json_t *hosts = json_array();
    json_array_foreach(json_object_get(peers, "ports"), i, e) {
        const char *owner = json_string_value(json_object_get(e, "device_owner"));
        const char *hip = port_ip_in(e, sid);
        if (hip && !(owner && !strcmp(owner, "network:dhcp")))
            json_array_append_new(hosts, json_pack("{s:O,s:s}", "mac",
                                                   json_object_get(e, "mac_address"), "ip", hip));
    }
    json_t *gw = json_object_get(subnet, "gateway_ip");
    json_t *d = json_pack("{s:O,s:O,s:s,s:i,s:s,s:s,s:O,s:o}",
                          "port_id", json_object_get(port, "id"),
                          "mac", json_object_get(port, "mac_address"), "ip", ip,
                          "prefixlen", atoi(slash + 1), "subnet", base,
                          "gateway", json_is_string(gw) ? json_string_value(gw) : "",
                          "dns", json_object_get(subnet, "dns_nameservers"), "hosts", hosts);
    json_decref(subnets);
    return d;
}

/* Addresses (as /32 or /128) of every port in security group 'gid',
 * cached in 'cache' for this pass. */
static json_t *
group_members(struct na_api *a, const char *gid, json_t *cache, char *url, size_t cap,
              char *err, size_t errlen)
{
    json_t *have = json_object_get(cache, gid);
    if (have)
        return have;
    json_t *ports = NULL, *ips = json_array();
    snprintf(url, cap, "%s/v2.0/ports", a->cfg.network_url);
    if (add_param(a->curl, url, cap, "security_groups", gid) == 0
        && get_json(a, url, &ports, err, errlen) == 0) {
        size_t i, j;
        json_t *p, *f;
        json_array_foreach(json_object_get(ports, "ports"), i, p) {
            json_array_foreach(json_object_get(p, "fixed_ips"), j, f) {
                const char *ip = json_string_value(json_object_get(f, "ip_address"));
                char cidr[64];
                if (!ip)
                    continue;
                snprintf(cidr, sizeof cidr, "%s/%s", ip, strchr(ip, ':') ? "128" : "32");
                json_array_append_new(ips, json_string(cidr));
            }
        }
    }
    json_decref(ports);
    json_object_set_new(cache, gid, ips);
    return ips;
}

/* The "security" object of a port: its addresses and the rules of its
 * groups, remote groups resolved to addresses. */
static json_t *
build_security(struct na_api *a, const json_t *port, json_t *groups, json_t *members,
               char *url, size_t cap, char *err, size_t errlen)
{
    if (!json_is_true(json_object_get(port, "port_security_enabled")))
        return json_pack("{s:b}", "enabled", 0);
    json_t *ips = json_array(), *rules = json_array();
    size_t i, j;
    json_t *e, *r;
    json_array_foreach(json_object_get(port, "fixed_ips"), i, e)
        json_array_append(ips, json_object_get(e, "ip_address"));
    json_array_foreach(json_object_get(port, "allowed_address_pairs"), i, e)
        json_array_append(ips, json_object_get(e, "ip_address"));
    json_array_foreach(json_object_get(port, "security_groups"), i, e) {
        const char *gid = json_string_value(e);
        json_t *g = gid ? json_object_get(groups, gid) : NULL;
        if (!g && gid) {
            json_t *got = NULL;
            snprintf(url, cap, "%s/v2.0/security-groups/%s", a->cfg.network_url, gid);
            if (get_json(a, url, &got, err, errlen) == 0)
                json_object_set(groups, gid, json_object_get(got, "security_group"));
            json_decref(got);
            g = json_object_get(groups, gid);
        }
        json_array_foreach(json_object_get(g, "security_group_rules"), j, r) {
            const char *prefix = json_string_value(json_object_get(r, "remote_ip_prefix"));
            const char *rgid = json_string_value(json_object_get(r, "remote_group_id"));
            json_t *remotes = json_null();
            if (prefix)
                remotes = json_pack("[s]", prefix);
            else if (rgid)
                remotes = json_copy(group_members(a, rgid, members, url, cap, err, errlen));
            json_array_append_new(rules, json_pack("{s:O,s:O,s:O,s:O,s:O,s:o}",
                "direction", json_object_get(r, "direction"),
                "ethertype", json_object_get(r, "ethertype"),
                "protocol", json_object_get(r, "protocol"),
                "port_range_min", json_object_get(r, "port_range_min"),
                "port_range_max", json_object_get(r, "port_range_max"),
                "remotes", remotes));
        }
    }
    return json_pack("{s:b,s:O,s:o,s:o}", "enabled", 1, "mac", json_object_get(port, "mac_address"),
                     "ips", ips, "rules", rules);
}

int
na_api_desired(struct na_api *a, json_t **out, char *err, size_t errlen)
{
    const size_t cap = 65536;
    char *url = malloc(cap);
    json_t *mine = NULL, *arriving = NULL, *nets = NULL, *doc = NULL;
    json_t *groups = json_object(), *members = json_object();
    int rc = -ENOMEM;

    *out = NULL;
    if (!url)
        return -ENOMEM;
    snprintf(url, cap, "%s/v2.0/ports", a->cfg.network_url);
    if ((rc = add_param(a->curl, url, cap, "binding:host_id", a->cfg.host)) < 0
        || (rc = get_json(a, url, &mine, err, errlen)) < 0)
        goto out;

    json_t *ports = json_object_get(mine, "ports");
    size_t i;
    json_t *p;
    /* Ports moving live to this host (binding:profile.migrating_to, a
     * filter of the Nimbus port list): their devices are made before the
     * guest arrives, but they are not reported from here (binding,
     * status and vtep_ip stay the source's until the move ends). */
    snprintf(url, cap, "%s/v2.0/ports", a->cfg.network_url);
    if ((rc = add_param(a->curl, url, cap, "binding:profile.migrating_to", a->cfg.host)) < 0
        || (rc = get_json(a, url, &arriving, err, errlen)) < 0)
        goto out;
    if (!json_is_array(ports) && json_object_set_new(mine, "ports", json_array()) == 0)
        ports = json_object_get(mine, "ports");
    json_array_foreach(json_object_get(arriving, "ports"), i, p) {
        const char *host = json_string_value(json_object_get(p, "binding:host_id"));
        if (host && !strcmp(host, a->cfg.host))
            continue;   /* Bound here already: listed above. */
        json_object_set_new(p, "arriving", json_true());
        json_array_append(ports, p);
    }
    snprintf(url, cap, "%s/v2.0/networks", a->cfg.network_url);
    int n_ids = 0;
    json_array_foreach(ports, i, p) {
        const char *nid = json_string_value(json_object_get(p, "network_id"));
        const char *owner = json_string_value(json_object_get(p, "device_owner"));
        /* A network is wanted here for its instance ports; this node's
         * DHCP port alone does not keep it. */
        if (owner && !strcmp(owner, "network:dhcp"))
            continue;
        if (nid && !strstr(url, nid)) {
            if ((rc = add_param(a->curl, url, cap, "id", nid)) < 0)
                goto out;
            n_ids++;
        }
    }
    doc = json_pack("{s:[],s:[],s:[]}", "networks", "ports", "dhcp_ports");
    if (!doc) {
        rc = -ENOMEM;
        goto out;
    }
    if (n_ids == 0) {
        rc = 0;
        goto out;
    }
    if ((rc = get_json(a, url, &nets, err, errlen)) < 0)
        goto out;

    json_t *n;
    json_array_foreach(json_object_get(nets, "networks"), i, n) {
        const char *nid = json_string_value(json_object_get(n, "id"));
        const char *type = json_string_value(json_object_get(n, "provider:network_type"));
        if (!nid || !type || strcmp(type, "vxlan"))
            continue;  /* flat/vlan networks need a provider bridge: not yet. */
        /* Other hosts with ports on this network, and their VTEPs. */
        json_t *peers = NULL, *vteps = json_array();
        snprintf(url, cap, "%s/v2.0/ports", a->cfg.network_url);
        if ((rc = add_param(a->curl, url, cap, "network_id", nid)) < 0
            || (rc = get_json(a, url, &peers, err, errlen)) < 0) {
            json_decref(vteps);
            goto out;
        }
        size_t j;
        json_t *q;
        json_array_foreach(json_object_get(peers, "ports"), j, q) {
            const char *host = json_string_value(json_object_get(q, "binding:host_id"));
            const char *vtep = json_string_value(json_object_get(
                json_object_get(q, "binding:profile"), "vtep_ip"));
            if (!host || !*host || !strcmp(host, a->cfg.host) || !vtep
                || !strcmp(vtep, a->cfg.local_ip))
                continue;
            bool dup = false;
            size_t k;
            json_t *v;
            json_array_foreach(vteps, k, v)
                dup |= !strcmp(json_string_value(v), vtep);
            if (!dup)
                json_array_append_new(vteps, json_string(vtep));
        }
        json_t *created = json_array();
        json_t *dhcp = build_dhcp(a, n, peers, created, url, cap, err, errlen);
        /* The DHCP port is reported like the others once wired. */
        json_array_foreach(json_object_get(peers, "ports"), j, q) {
            const char *owner = json_string_value(json_object_get(q, "device_owner"));
            const char *host = json_string_value(json_object_get(q, "binding:host_id"));
            if (dhcp && owner && !strcmp(owner, "network:dhcp") && host && !strcmp(host, a->cfg.host))
                json_array_append(created, q);
        }
        json_array_foreach(created, j, q)
            json_array_append_new(json_object_get(doc, "dhcp_ports"),
                json_pack("{s:O,s:O,s:O}", "id", json_object_get(q, "id"),
                          "status", json_object_get(q, "status"),
                          "binding:profile", json_object_get(q, "binding:profile")));
        json_decref(created);
        json_decref(peers);
        json_t *entry = json_pack("{s:s,s:O,s:O,s:o}", "id", nid,
                                  "vni", json_object_get(n, "provider:segmentation_id"),
                                  "mtu", json_object_get(n, "mtu"), "remote_vteps", vteps);
        if (dhcp)
            json_object_set_new(entry, "dhcp", dhcp);
        json_array_append_new(json_object_get(doc, "networks"), entry);
    }
    json_array_foreach(ports, i, p) {
        const char *nid = json_string_value(json_object_get(p, "network_id"));
        const char *owner = json_string_value(json_object_get(p, "device_owner"));
        bool have_net = false;
        if (owner && !strcmp(owner, "network:dhcp"))
            continue;
        size_t k;
        json_t *v;
        json_array_foreach(json_object_get(doc, "networks"), k, v)
            have_net |= nid && !strcmp(json_string_value(json_object_get(v, "id")), nid);
        if (!have_net)
            continue;
        /* Containers get veth pairs, everything else a tap. */
        const char *kind = owner && !strncmp(owner, "compute:container", 17) ? "veth" : "tap";
        json_t *entry = json_pack("{s:O,s:s,s:s,s:O,s:O,s:o}", "id", json_object_get(p, "id"),
                                  "network_id", nid, "kind", kind,
                                  "status", json_object_get(p, "status"),
                                  "binding:profile", json_object_get(p, "binding:profile"),
                                  "security", build_security(a, p, groups, members, url, cap,
                                                             err, errlen));
        if (entry && json_is_true(json_object_get(p, "arriving")))
            json_object_set_new(entry, "arriving", json_true());
        json_array_append_new(json_object_get(doc, "ports"), entry);
    }
    rc = 0;
out:
    free(url);
    json_decref(mine);
    json_decref(arriving);
    json_decref(nets);
    json_decref(groups);
    json_decref(members);
    if (rc == 0)
        *out = doc;
    else
        json_decref(doc);
    return rc;
}

static int
report_list(struct na_api *a, const json_t *list, char *err, size_t errlen)
{
    size_t i;
    json_t *p;
    int failures = 0;
    json_array_foreach(list, i, p) {
        const char *status = json_string_value(json_object_get(p, "status"));
        json_t *profile = json_object_get(p, "binding:profile");
        if (json_is_true(json_object_get(p, "arriving")))
            continue;   /* Another host's port until its guest arrives. */
        const char *vtep = json_string_value(json_object_get(profile, "vtep_ip"));
        if (status && !strcmp(status, "ACTIVE") && vtep && !strcmp(vtep, a->cfg.local_ip))
            continue;
        json_t *np = json_is_object(profile) ? json_deep_copy(profile) : json_object();
        json_object_set_new(np, "vtep_ip", json_string(a->cfg.local_ip));
        json_t *body = json_pack("{s:{s:s,s:o}}", "port", "status", "ACTIVE", "binding:profile", np);
        char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        json_decref(body);
        char url[512];
        snprintf(url, sizeof url, "%s/v2.0/ports/%s", a->cfg.network_url,
                 json_string_value(json_object_get(p, "id")));
        long st = text ? request(a, "PUT", url, text, NULL, true, NULL) : -ENOMEM;
        free(text);
        if (st != 200) {
            snprintf(err, errlen, "PUT %s: %ld", url, st);
            failures++;
        }
    }
    return failures;
}

int
na_api_report(struct na_api *a, const json_t *doc, char *err, size_t errlen)
{
    return report_list(a, json_object_get(doc, "ports"), err, errlen)
           + report_list(a, json_object_get(doc, "dhcp_ports"), err, errlen);
}
