/* Network API (Neutron v2.0 compatible) on nimbus-api's network listener:
 * networks, subnets, ports, security groups and rules, quotas, and the
 * /v2.0 and /v2.0/extensions documents.
 *
 * The work is split so that each piece does what it is good at:
 *   - C authenticates, applies the policy table (auth/auth_policy.c) to the
 *     operation and to privileged attributes, and passes the caller, the
 *     body and the configuration to PostgreSQL as one JSON document;
 *   - net.api() (migrations/0004_network.sql) does validation, visibility,
 *     quotas, IPAM and VNI allocation in one statement, hence one
 *     transaction, and answers {"status", "body"} or a Neutron error;
 *   - C applies Neutron's list query (net_list.c) and wraps the answer.
 */
#include "network.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "arena.h"
#include "auth_token.h"
#include "log.h"
#include "net_list.h"

/* Kinds of operation: what the answer needs from C. */
enum net_kind {
    NET_LIST,                      /* Array in "body": filter, sort, page. */
    NET_SHOW,                      /* {"<key>": {...}}: fields= applies. */
    NET_WRITE,                     /* Create/update/delete: body as is. */
};

/* Flags of an operation. */
enum {
    NET_F_BODY = 1 << 0,           /* Needs a JSON body. */
    NET_F_ID = 1 << 1,             /* Has an {id} path capture. */
    NET_F_QUOTA_ADMIN = 1 << 2,    /* Quota change: administrators only. */
    NET_F_QUOTA_READ = 1 << 3,     /* Quota read: own project or admin. */
};

struct net_op {
    const char *method;
    const char *pattern;
    const char *op;                /* net.dispatch() operation name. */
    const char *policy;            /* Policy rule, NULL for quota ops. */
    enum net_kind kind;
    unsigned flags;
    const char *key;               /* Singular (show) or collection (list) key. */
};

/* The operation table.  X(name, method, pattern, op, policy, kind, flags, key) */
#define NET_OPS(X) \
    X(network_list, "GET", "/v2.0/networks", "network_list", "network:list_networks", NET_LIST, 0, "networks") \
    X(network_create, "POST", "/v2.0/networks", "network_create", "network:create_network", NET_WRITE, NET_F_BODY, "network") \
    X(network_show, "GET", "/v2.0/networks/{id}", "network_show", "network:get_network", NET_SHOW, NET_F_ID, "network") \
    X(network_update, "PUT", "/v2.0/networks/{id}", "network_update", "network:update_network", NET_WRITE, NET_F_ID | NET_F_BODY, "network") \
    X(network_delete, "DELETE", "/v2.0/networks/{id}", "network_delete", "network:delete_network", NET_WRITE, NET_F_ID, "network") \
    X(subnet_list, "GET", "/v2.0/subnets", "subnet_list", "network:list_subnets", NET_LIST, 0, "subnets") \
    X(subnet_create, "POST", "/v2.0/subnets", "subnet_create", "network:create_subnet", NET_WRITE, NET_F_BODY, "subnet") \
    X(subnet_show, "GET", "/v2.0/subnets/{id}", "subnet_show", "network:get_subnet", NET_SHOW, NET_F_ID, "subnet") \
    X(subnet_update, "PUT", "/v2.0/subnets/{id}", "subnet_update", "network:update_subnet", NET_WRITE, NET_F_ID | NET_F_BODY, "subnet") \
    X(subnet_delete, "DELETE", "/v2.0/subnets/{id}", "subnet_delete", "network:delete_subnet", NET_WRITE, NET_F_ID, "subnet") \
    X(port_list, "GET", "/v2.0/ports", "port_list", "network:list_ports", NET_LIST, 0, "ports") \
    X(port_create, "POST", "/v2.0/ports", "port_create", "network:create_port", NET_WRITE, NET_F_BODY, "port") \
    X(port_show, "GET", "/v2.0/ports/{id}", "port_show", "network:get_port", NET_SHOW, NET_F_ID, "port") \
    X(port_update, "PUT", "/v2.0/ports/{id}", "port_update", "network:update_port", NET_WRITE, NET_F_ID | NET_F_BODY, "port") \
    X(port_delete, "DELETE", "/v2.0/ports/{id}", "port_delete", "network:delete_port", NET_WRITE, NET_F_ID, "port") \
    X(sg_list, "GET", "/v2.0/security-groups", "sg_list", "network:list_security_groups", NET_LIST, 0, "security_groups") \
    X(sg_create, "POST", "/v2.0/security-groups", "sg_create", "network:create_security_group", NET_WRITE, NET_F_BODY, "security_group") \
    X(sg_show, "GET", "/v2.0/security-groups/{id}", "sg_show", "network:get_security_group", NET_SHOW, NET_F_ID, "security_group") \
    X(sg_update, "PUT", "/v2.0/security-groups/{id}", "sg_update", "network:update_security_group", NET_WRITE, NET_F_ID | NET_F_BODY, "security_group") \
    X(sg_delete, "DELETE", "/v2.0/security-groups/{id}", "sg_delete", "network:delete_security_group", NET_WRITE, NET_F_ID, "security_group") \
    X(sgr_list, "GET", "/v2.0/security-group-rules", "sgr_list", "network:list_security_group_rules", NET_LIST, 0, "security_group_rules") \
    X(sgr_create, "POST", "/v2.0/security-group-rules", "sgr_create", "network:create_security_group_rule", NET_WRITE, NET_F_BODY, "security_group_rule") \
    X(sgr_show, "GET", "/v2.0/security-group-rules/{id}", "sgr_show", "network:get_security_group_rule", NET_SHOW, NET_F_ID, "security_group_rule") \
    X(sgr_delete, "DELETE", "/v2.0/security-group-rules/{id}", "sgr_delete", "network:delete_security_group_rule", NET_WRITE, NET_F_ID, "security_group_rule") \
    X(quota_list, "GET", "/v2.0/quotas", "quota_list", NULL, NET_WRITE, NET_F_QUOTA_ADMIN, "quotas") \
    X(quota_show, "GET", "/v2.0/quotas/{id}", "quota_show", NULL, NET_WRITE, NET_F_ID | NET_F_QUOTA_READ, "quota") \
    X(quota_default, "GET", "/v2.0/quotas/{id}/default", "quota_default", NULL, NET_WRITE, NET_F_ID | NET_F_QUOTA_READ, "quota") \
    X(quota_update, "PUT", "/v2.0/quotas/{id}", "quota_update", NULL, NET_WRITE, NET_F_ID | NET_F_BODY | NET_F_QUOTA_ADMIN, "quota") \
    X(quota_delete, "DELETE", "/v2.0/quotas/{id}", "quota_delete", NULL, NET_WRITE, NET_F_ID | NET_F_QUOTA_ADMIN, "quota")

enum net_op_id {
#define X(name, m, p, o, pol, k, f, key) NET_OP_##name,
    NET_OPS(X)
#undef X
    NET_OP_COUNT
};

static const struct net_op net_ops[NET_OP_COUNT] = {
#define X(name, m, p, o, pol, k, f, key) [NET_OP_##name] = { m, p, o, pol, k, f, key },
    NET_OPS(X)
#undef X
};

/* Per-request state, in the request arena. */
struct net_call {
    const struct net_op *op;
    struct net_list_query q;
};

/* ---- Configuration. */

void
net_conf_defaults(struct net_conf *c)
{
    c->vni_min = NET_DEFAULT_VNI_MIN;
    c->vni_max = NET_DEFAULT_VNI_MAX;
    c->underlay_mtu = NET_DEFAULT_UNDERLAY_MTU;
}

/* The [network] options of api-server/options.c. */
static void
net_conf_load(const struct api *a, struct net_conf *c)
{
    net_conf_defaults(c);
    c->vni_min = (int)conf_int(a->conf, "network", "vni_min");
    c->vni_max = (int)conf_int(a->conf, "network", "vni_max");
    c->underlay_mtu = (int)conf_int(a->conf, "network", "underlay_mtu");
    if (c->vni_max < c->vni_min)
        c->vni_max = c->vni_min;
}

/* ---- Policy on attributes. */

/* Does object 'o' carry a key starting with 'prefix' (with a non-null
 * value when 'non_null')? */
static bool
has_key_prefix(json_t *o, const char *prefix)
{
    const char *k;
    json_t *v;
    size_t n = strlen(prefix);
    json_object_foreach(o, k, v) {
        if (!strncmp(k, prefix, n))
            return true;
    }
    return false;
}

static bool
is_true(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (json_is_true(v))
        return true;
    if (json_is_string(v))
        return !strcasecmp(json_string_value(v), "true") || !strcmp(json_string_value(v), "1");
    return false;
}

/* Applies the rules for privileged attributes; answers 403 and returns
 * -EACCES when one is refused. */
static int
check_attr_policy(http_request *req, struct api_req *ar, enum net_op_id id,
                  json_t *body)
{
    json_t *o;
    switch (id) {
    case NET_OP_network_create:
    case NET_OP_network_update:
        o = json_object_get(body, "network");
        if (!json_is_object(o))
            return 0;
        if (json_object_get(o, "shared") && (is_true(o, "shared") || id == NET_OP_network_update)
            && api_authorize(req, ar, "network:create_network:shared", NULL, NULL) < 0)
            return -EACCES;
        if (json_object_get(o, "router:external")
            && (is_true(o, "router:external") || id == NET_OP_network_update)
            && api_authorize(req, ar, "network:create_network:external", NULL, NULL) < 0)
            return -EACCES;
        if (has_key_prefix(o, "provider:")
            && api_authorize(req, ar, "network:provider_attrs", NULL, NULL) < 0)
            return -EACCES;
        return 0;
    case NET_OP_port_create:
    case NET_OP_port_update:
        o = json_object_get(body, "port");
        if (!json_is_object(o))
            return 0;
        if ((json_object_get(o, "binding:host_id") || json_object_get(o, "binding:profile")
             || json_object_get(o, "status"))
            && api_authorize(req, ar, "network:port_binding_attrs", NULL, NULL) < 0)
            return -EACCES;
        return 0;
    case NET_OP_network_list: case NET_OP_network_show: case NET_OP_network_delete:
    case NET_OP_subnet_list: case NET_OP_subnet_create: case NET_OP_subnet_show:
    case NET_OP_subnet_update: case NET_OP_subnet_delete:
    case NET_OP_port_list: case NET_OP_port_show: case NET_OP_port_delete:
    case NET_OP_sg_list: case NET_OP_sg_create: case NET_OP_sg_show: case NET_OP_sg_update:
    case NET_OP_sg_delete: case NET_OP_sgr_list: case NET_OP_sgr_create: case NET_OP_sgr_show:
    case NET_OP_sgr_delete: case NET_OP_quota_list: case NET_OP_quota_show:
    case NET_OP_quota_default: case NET_OP_quota_update: case NET_OP_quota_delete:
    case NET_OP_COUNT:
    default:
        return 0;
    }
}

/* ---- Answers. */

static void
reply_text_json(http_request *req, int status, json_t *body)
{
    api_reply_json(req, status, body);
}

static void
call_done(http_request *req, struct api_req *ar, db_result *res, void *ctx)
{
    struct net_call *c = ctx;
    const char *text = db_rows(res) > 0 ? db_get(res, 0, 0) : NULL;
    json_error_t jerr;
    json_t *r = text ? json_loads(text, 0, &jerr) : NULL;
    (void)ar;
    if (!r) {
        log_error("network", "%s: unreadable answer from net.api()", c->op->op);
        api_error(req, 500, "An unexpected error prevented the server from fulfilling your request.");
        return;
    }
    int status = (int)json_integer_value(json_object_get(r, "status"));
    const char *type = json_string_value(json_object_get(r, "type"));
    if (type) {
        const char *msg = json_string_value(json_object_get(r, "message"));
        /* Copy: 'r' is freed before answering (the answer may free req). */
        char *m = arena_strdup(http_req_arena(req), msg ? msg : "");
        char *t = arena_strdup(http_req_arena(req), type);
        json_decref(r);
        api_error_typed(req, status ? status : 500, t, "%s", m);
        return;
    }
    if (status == 204) {
        json_decref(r);
        (void)http_respond(req, 204, NULL, NULL, 0);
        return;
    }
    json_t *body = json_incref(json_object_get(r, "body"));
    json_decref(r);
    if (c->op->kind == NET_LIST) {
        const char *base = api_base_url(req, API_NETWORK);
        char *link = arena_printf(http_req_arena(req), "%s%s", base, c->op->pattern);
        json_t *out = net_list_apply(body, &c->q, c->op->key, link);
        json_decref(body);
        if (!out) {
            api_error(req, 500, "Out of memory.");
            return;
        }
        reply_text_json(req, 200, out);
        return;
    }
    if (c->op->kind == NET_SHOW)
        net_list_project(json_object_get(body, c->op->key), &c->q);
    reply_text_json(req, status ? status : 200, body);
}

/* Collects the list query; stops at the first bad parameter. */
struct query_collect {
    struct net_list_query *q;
    struct arena *mem;
    char err[200];
    int rc;
};

static int
collect_param(const char *name, const char *value, void *arg)
{
    struct query_collect *qc = arg;
    if (strlen(name) > 255 || strlen(value) > 1024) {
        snprintf(qc->err, sizeof qc->err, "Query parameter too long.");
        qc->rc = -EINVAL;
        return 1;
    }
    int rc = net_list_query_add(qc->q, arena_strdup(qc->mem, name),
                                arena_strdup(qc->mem, value), qc->err, sizeof qc->err);
    if (rc == -E2BIG)
        snprintf(qc->err, sizeof qc->err, "Too many query parameters.");
    if (rc < 0) {
        qc->rc = rc;
        return 1;
    }
    return 0;
}

/* Query filters that net.dispatch() can apply before building JSON (see
 * net.pre_ok): exact matches on indexed or cheap columns. */
static int
add_prefilter(json_t *r, const struct net_list_query *q)
{
    static const char *const keys[] = {
        "id", "name", "network_id", "device_id", "device_owner", "binding:host_id",
        "project_id", "tenant_id", "security_group_id",
    };
    json_t *pre = NULL;
    for (size_t i = 0; i < q->n_filters; i++) {
        bool known = false;
        for (size_t k = 0; k < sizeof keys / sizeof keys[0] && !known; k++)
            known = !strcmp(keys[k], q->filters[i].name);
        if (!known)
            continue;
        if (!pre && !(pre = json_object()))
            return -ENOMEM;
        json_t *vals = json_object_get(pre, q->filters[i].name);
        if (!vals) {
            vals = json_array();
            if (!vals || json_object_set_new(pre, q->filters[i].name, vals) < 0) {
                json_decref(pre);
                return -ENOMEM;
            }
        }
        json_array_append_new(vals, json_string(q->filters[i].value));
    }
    if (pre && json_object_set_new(r, "pre", pre) < 0)
        return -ENOMEM;
    return 0;
}

static void
net_handle(http_request *req, struct api_req *ar, enum net_op_id id)
{
    const struct net_op *op = &net_ops[id];
    struct arena *mem = http_req_arena(req);
    json_t *body = NULL, *r = NULL;

    if (api_authenticate(req, ar) < 0)
        return;
    const char *pid = ar->token->project_id;
    const char *xid = (op->flags & NET_F_ID) ? http_req_param(req, "id") : NULL;
    if (op->policy) {
        if (api_authorize(req, ar, op->policy, NULL, NULL) < 0)
            return;
    } else if (op->flags & NET_F_QUOTA_ADMIN) {
        if (!api_is_admin(ar)) {
            api_error_typed(req, 403, "PolicyNotAuthorized",
                            "rule:%s is disallowed by policy", op->op);
            return;
        }
    } else if (op->flags & NET_F_QUOTA_READ) {
        if (!api_is_admin(ar) && (!xid || strcmp(xid, pid))) {
            api_error_typed(req, 403, "PolicyNotAuthorized",
                            "rule:get_quota is disallowed by policy");
            return;
        }
    }
    if (xid && strlen(xid) > 64) {
        api_error_typed(req, 404, "NotFound", "The resource could not be found.");
        return;
    }

    struct net_call *c = arena_zalloc(mem, sizeof *c);
    c->op = op;
    net_list_query_init(&c->q);
    if (op->kind != NET_WRITE) {
        struct query_collect qc = { &c->q, mem, "", 0 };
        (void)http_req_query_each(req, collect_param, &qc);
        if (qc.rc < 0) {
            api_error_typed(req, 400, "HTTPBadRequest", "%s", qc.err);
            return;
        }
    }
    if (op->flags & NET_F_BODY) {
        body = api_parse_body(req);
        if (!body)
            return;
        if (check_attr_policy(req, ar, id, body) < 0) {
            json_decref(body);
            return;
        }
    }

    struct net_conf conf;
    net_conf_load(ar->api, &conf);
    r = json_pack("{s:s,s:{s:s,s:s,s:b},s:{s:i,s:i,s:i}}",
                  "op", op->op,
                  "ctx", "project_id", pid, "user_id", ar->token->user_id,
                  "admin", api_is_admin(ar),
                  "conf", "vni_min", conf.vni_min, "vni_max", conf.vni_max,
                  "underlay_mtu", conf.underlay_mtu);
    if (!r) {
        json_decref(body);
        api_error(req, 500, "Out of memory.");
        return;
    }
    if (xid)
        json_object_set_new(r, "id", json_string(xid));
    if (op->kind == NET_LIST && add_prefilter(r, &c->q) < 0) {
        json_decref(r);
        json_decref(body);
        api_error(req, 500, "Out of memory.");
        return;
    }
    if (body)
        json_object_set_new(r, "body", body);
    char *text = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    if (!text) {
        api_error(req, 500, "Out of memory.");
        return;
    }
    const char **params = arena_alloc(mem, sizeof *params);
    params[0] = arena_strdup(mem, text);
    free(text);
    api_query(req, "SELECT net.api($1::jsonb)::text", 1, params, call_done, c);
}

#define X(name, m, p, o, pol, k, f, key) \
    static void h_##name(http_request *req, struct api_req *ar) \
    { net_handle(req, ar, NET_OP_##name); }
NET_OPS(X)
#undef X

static const api_handler_fn net_handlers[NET_OP_COUNT] = {
#define X(name, m, p, o, pol, k, f, key) [NET_OP_##name] = h_##name,
    NET_OPS(X)
#undef X
};

/* ---- /v2.0 and /v2.0/extensions. */

/* What this server implements, and nothing else: clients and Tempest
 * decide what to call from this list. */
static const struct {
    const char *alias, *name, *description;
} extensions[] = {
    { "binding", "Port Binding", "Expose port bindings of a virtual port to external application" },
    { "external-net", "Neutron external network", "Adds external network attribute to network resource." },
    { "l2_adjacency", "L2 network adjacency", "Display L2 Adjacency for Neutron Networks." },
    { "net-mtu", "Network MTU", "Provides MTU attribute for a network resource." },
    { "net-mtu-writable", "Network MTU (writable)", "Provides a writable MTU attribute for a network resource." },
    { "pagination", "Pagination support", "Extension that indicates that pagination is enabled." },
    { "port-security", "Port Security", "Provides port security" },
    { "project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled." },
    { "provider", "Provider Network", "Expose mapping of virtual networks to physical networks" },
    { "quotas", "Quota management support", "Expose functions for quotas management per tenant" },
    { "security-group", "security-group", "The security groups extension." },
    { "sorting", "Sorting support", "Extension that indicates that sorting is enabled." },
    { "standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes" },
    { "standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of neutron resources." },
    { "standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes." },
    { "allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs" },
};

#define EXT_UPDATED "2024-01-01T00:00:00-00:00"

static json_t *
extension_json(size_t i)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:[]}", "alias", extensions[i].alias,
                     "name", extensions[i].name, "description", extensions[i].description,
                     "updated", EXT_UPDATED, "links");
}

static void
h_extensions(http_request *req, struct api_req *ar)
{
    if (api_authenticate(req, ar) < 0)
        return;
    json_t *list = json_array();
    for (size_t i = 0; i < sizeof extensions / sizeof extensions[0]; i++)
        json_array_append_new(list, extension_json(i));
    api_reply_json(req, 200, json_pack("{s:o}", "extensions", list));
}

static void
h_extension(http_request *req, struct api_req *ar)
{
    if (api_authenticate(req, ar) < 0)
        return;
    const char *alias = http_req_param(req, "alias");
    for (size_t i = 0; i < sizeof extensions / sizeof extensions[0]; i++) {
        if (alias && !strcmp(alias, extensions[i].alias)) {
            api_reply_json(req, 200, json_pack("{s:o}", "extension", extension_json(i)));
            return;
        }
    }
    api_error_typed(req, 404, "ExtensionNotFound", "Extension with alias %s does not exist",
                    alias ? alias : "");
}

static void
h_v20(http_request *req, struct api_req *ar)
{
    static const char *const res[][2] = {
        { "network", "networks" }, { "subnet", "subnets" }, { "port", "ports" },
        { "security_group", "security-groups" },
        { "security_group_rule", "security-group-rules" }, { "quota", "quotas" },
    };
    if (api_authenticate(req, ar) < 0)
        return;
    const char *base = api_base_url(req, API_NETWORK);
    json_t *list = json_array();
    for (size_t i = 0; i < sizeof res / sizeof res[0]; i++) {
        char *href = arena_printf(http_req_arena(req), "%s/v2.0/%s", base, res[i][1]);
        json_array_append_new(list, json_pack("{s:s,s:s,s:[{s:s,s:s}]}", "name", res[i][0],
                                              "collection", res[i][1], "links",
                                              "href", href, "rel", "self"));
    }
    api_reply_json(req, 200, json_pack("{s:o}", "resources", list));
}

void
network_register(struct api *a)
{
    for (int i = 0; i < NET_OP_COUNT; i++)
        api_route(a, API_NETWORK, net_ops[i].method, net_ops[i].pattern, net_handlers[i]);
    api_route(a, API_NETWORK, "GET", "/v2.0", h_v20);
    api_route(a, API_NETWORK, "GET", "/v2.0/extensions", h_extensions);
    api_route(a, API_NETWORK, "GET", "/v2.0/extensions/{alias}", h_extension);
}
