/* Servers: create, list (with Nova's filters and paging), show, rename,
 * delete, addresses, metadata, the server actions and instance actions.
 *
 * Creation and every action are one statement each calling a function of
 * the compute migration (compute_server_create, compute_server_action), so
 * the quota check and the rows of a create, or the state check and the
 * change of an action, are one transaction. */
#include "compute.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <strings.h>
#include <time.h>

#include "arena.h"
#include "compute_version.h"
#include "jbuf.h"
#include "util.h"

/* Nova's limits. */
#define USER_DATA_MAX 65535
#define METADATA_ITEMS_MAX 128
#define MAX_COUNT_MAX 1000
#define LIST_MAX_LIMIT 1000
/* Longest adminPass a rescue accepts (Nova's password fields hold 255). */
#define RESCUE_PASS_MAX 255
/* NICs per server: what the compute agent plugs (INST_MAX_PORTS). */
#define SERVER_PORTS_MAX 8

static void
admin_pass(char out[13])
{
    static const char chars[] = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    unsigned char r[12];
    util_random(r, sizeof r);
    for (size_t i = 0; i < sizeof r; i++)
        out[i] = chars[r[i] % (sizeof chars - 1)];
    out[12] = '\0';
}

static bool
base64_valid(const char *s)
{
    size_t n = strlen(s), pad = 0;
    if (n % 4)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '=') {
            pad++;
            continue;
        }
        if (pad || !(isalnum(c) || c == '+' || c == '/'))
            return false;
    }
    return pad <= 2;
}

/* A positive integer given as a JSON integer or a digit string. */
static int
positive_int(json_t *v, long max, long *out)
{
    if (json_is_integer(v)) {
        *out = (long)json_integer_value(v);
    } else if (json_is_string(v) && *json_string_value(v)) {
        char *end;
        *out = strtol(json_string_value(v), &end, 10);
        if (*end)
            return -EINVAL;
    } else {
        return -EINVAL;
    }
    return *out >= 1 && *out <= max ? 0 : -EINVAL;
}

/* A reference given as an id or as a URL ending in the id. */
static const char *
ref_id(json_t *v, char *buf, size_t len)
{
    if (json_is_integer(v)) {
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) >= len)
        return NULL;
    const char *slash = strrchr(s, '/');
    snprintf(buf, len, "%s", slash ? slash + 1 : s);
    return *buf ? buf : NULL;
}

static bool
name_valid(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= COMPUTE_NAME_MAX && !isspace((unsigned char)s[0])
           && !isspace((unsigned char)s[n - 1]);
}

static int
check_metadata(http_request *req, json_t *md)
{
    const char *k;
    json_t *v;
    if (!json_is_object(md)) {
        api_error(req, 400, "Invalid input for field/attribute metadata. Value must be an "
                  "object.");
        return -EINVAL;
    }
    if (json_object_size(md) > METADATA_ITEMS_MAX) {
        api_error(req, 403, "Quota exceeded for metadata_items: at most %d items.",
                  METADATA_ITEMS_MAX);
        return -EDQUOT;
    }
    json_object_foreach(md, k, v) {
        if (!*k || strlen(k) > 255 || !json_is_string(v) || strlen(json_string_value(v)) > 255) {
            api_error(req, 400, "Invalid input for field/attribute metadata: keys of 1 to 255 "
                      "characters with string values of at most 255.");
            return -EINVAL;
        }
    }
    return 0;
}

static int
check_uuid_or_list(json_t *v)
{
    if (json_is_string(v))
        return util_is_uuid(json_string_value(v)) ? 0 : -EINVAL;
    if (!json_is_array(v) || json_array_size(v) > 100)
        return -EINVAL;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
        if (!json_is_string(e) || !util_is_uuid(json_string_value(e)))
            return -EINVAL;
    return 0;
}

static int
check_hints(http_request *req, json_t *h, json_t *r)
{
    if (!json_is_object(h)) {
        api_error(req, 400, "Invalid input for field/attribute os:scheduler_hints.");
        return -EINVAL;
    }
    json_t *g = json_object_get(h, "group");
    if (g) {
        if (!json_is_string(g) || !util_is_uuid(json_string_value(g))) {
            api_error(req, 400, "Invalid input for field/attribute group. Value must be a "
                      "UUID.");
            return -EINVAL;
        }
        json_object_set(r, "group", g);
    }
    static const char *const lists[] = { "same_host", "different_host" };
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(h, lists[i]);
        if (v && check_uuid_or_list(v) < 0) {
            api_error(req, 400, "Invalid input for field/attribute %s. Value must be a UUID "
                      "or a list of UUIDs.", lists[i]);
            return -EINVAL;
        }
    }
    json_object_set(r, "hints", h);
    return 0;
}

static int
check_networks(http_request *req, json_t *nets)
{
    size_t i;
    json_t *n;
    if (!json_is_array(nets)) {
        api_error(req, 400, "Bad networks format");
        return -EINVAL;
    }
    if (json_array_size(nets) > SERVER_PORTS_MAX) {
        api_error(req, 400, "Bad networks format: at most %d networks or ports per server.",
                  SERVER_PORTS_MAX);
        return -EINVAL;
    }
    json_array_foreach(nets, i, n) {
        json_t *uuid = json_object_get(n, "uuid");
        json_t *port = json_object_get(n, "port");
        json_t *ip = json_object_get(n, "fixed_ip");
        const char *k;
        json_t *v;
        if (!json_is_object(n)) {
            api_error(req, 400, "Bad networks format");
            return -EINVAL;
        }
        json_object_foreach(n, k, v) {
            if (strcmp(k, "uuid") && strcmp(k, "port") && strcmp(k, "fixed_ip")
                && strcmp(k, "tag")) {
                api_error(req, 400, "Invalid input for field/attribute networks: unknown "
                          "key '%s'.", k);
                return -EINVAL;
            }
        }
        if (uuid && !json_is_null(uuid)
            && (!json_is_string(uuid) || !util_is_uuid(json_string_value(uuid)))) {
            api_error(req, 400, "Bad networks format: network uuid is not in proper format "
                      "(%s)", json_is_string(uuid) ? json_string_value(uuid) : "?");
            return -EINVAL;
        }
        if (port && !json_is_null(port)
            && (!json_is_string(port) || !util_is_uuid(json_string_value(port)))) {
            api_error(req, 400, "Bad networks format: port uuid is not in proper format");
            return -EINVAL;
        }
        if ((!uuid || json_is_null(uuid)) && (!port || json_is_null(port))) {
            api_error(req, 400, "Bad networks format: each network needs a uuid or a port");
            return -EINVAL;
        }
        if (ip && !json_is_null(ip)) {
            unsigned char buf[16];
            const char *s = json_string_value(ip);
            if (!s || (inet_pton(AF_INET, s, buf) != 1 && inet_pton(AF_INET6, s, buf) != 1)) {
                api_error(req, 400, "Invalid fixed IP address (%s)", s ? s : "?");
                return -EINVAL;
            }
        }
    }
    return 0;
}

struct create_ctx {
    const char *pass;
    const char *sg;
};

static void
create_done(http_request *req, struct api_req *ar, db_result *res, void *arg)
{
    (void)ar;
    (void)arg;
    const char *c = db_rows(res) > 0 ? db_getn(res, 0, "code") : NULL;
    int code = c ? atoi(c) : 500;
    if (code != 202) {
        const char *msg = db_rows(res) > 0 ? db_getn(res, 0, "message") : NULL;
        api_error(req, code, "%s", msg ? msg : "Server creation failed.");
        return;
    }
    const char *body = db_getn(res, 0, "body");
    const char *loc = db_getn(res, 0, "location");
    http_resp_header(req, "Location", loc);
    (void)http_respond(req, 202, "application/json", body, strlen(body));
}

static const char *const create_keys[] = {
    "name", "imageRef", "flavorRef", "networks", "key_name", "security_groups",
    "user_data", "metadata", "availability_zone", "min_count", "max_count",
    "config_drive", "OS-DCF:diskConfig", "accessIPv4", "accessIPv6", "adminPass",
    "personality", "block_device_mapping", "block_device_mapping_v2",
    "return_reservation_id",
};

static void
servers_create(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_SERVERS_CREATE) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *r = json_object();
    json_t *s = json_object_get(body, "server");
    json_t *v;
    const char *k;
    char buf[256];
    long minc = 1, maxc = 1;
    if (!json_is_object(s)) {
        api_error(req, 400, "Invalid input for field/attribute server. Value: None.");
        goto out;
    }
    json_object_foreach(s, k, v) {
        bool known = false;
        for (size_t i = 0; i < sizeof create_keys / sizeof create_keys[0]; i++)
            known = known || !strcmp(k, create_keys[i]);
        if (!known) {
            api_error(req, 400, "Invalid input for field/attribute server. Additional "
                      "properties are not allowed ('%s' was unexpected)", k);
            goto out;
        }
    }
    v = json_object_get(s, "name");
    if (!json_is_string(v) || !name_valid(json_string_value(v))) {
        api_error(req, 400, "Invalid input for field/attribute name. Value must be a string "
                  "of 1 to 255 characters without leading or trailing whitespace.");
        goto out;
    }
    json_object_set(r, "name", v);
    if (json_object_get(s, "block_device_mapping") || json_object_get(s, "block_device_mapping_v2")) {
        api_error(req, 400, "Block device mappings are not supported: this cloud has no "
                  "volume service.");
        goto out;
    }
    v = json_object_get(s, "imageRef");
    const char *img = v ? ref_id(v, buf, sizeof buf) : NULL;
    if (!img || !util_is_uuid(img)) {
        api_error(req, 400, "Invalid imageRef provided.");
        goto out;
    }
    json_object_set_new(r, "image_ref", json_string(img));
    v = json_object_get(s, "flavorRef");
    const char *fl = v ? ref_id(v, buf, sizeof buf) : NULL;
    if (!fl) {
        api_error(req, 400, "Invalid flavorRef provided.");
        goto out;
    }
    json_object_set_new(r, "flavor_ref", json_string(fl));
    if ((v = json_object_get(s, "networks")) && !json_is_null(v)) {
        if (json_is_string(v) && (!strcmp(json_string_value(v), "auto")
                                  || !strcmp(json_string_value(v), "none"))) {
            api_error(req, 400, "Bad networks format: 'auto' and 'none' need microversion "
                      "2.37.");
            goto out;
        }
        if (check_networks(req, v) < 0)
            goto out;
        json_object_set(r, "networks", v);
    }
    /* No networks (omitted or an empty list): Nova's rule with Neutron, the
     * one network the project can use if there is exactly one. */
    if (!json_array_size(json_object_get(r, "networks")))
        json_object_set_new(r, "auto_network", json_true());
    if ((v = json_object_get(s, "key_name")) && !json_is_null(v)) {
        if (!json_is_string(v) || !*json_string_value(v)
            || strlen(json_string_value(v)) > COMPUTE_NAME_MAX) {
            api_error(req, 400, "Invalid input for field/attribute key_name.");
            goto out;
        }
        json_object_set(r, "key_name", v);
    }
    if ((v = json_object_get(s, "security_groups"))) {
        size_t i;
        json_t *g;
        if (!json_is_array(v) || json_array_size(v) > 100) {
            api_error(req, 400, "Invalid input for field/attribute security_groups.");
            goto out;
        }
        json_array_foreach(v, i, g) {
            json_t *gn = json_object_get(g, "name");
            if (!json_is_object(g) || !json_is_string(gn) || !*json_string_value(gn)
                || strlen(json_string_value(gn)) > COMPUTE_NAME_MAX) {
                api_error(req, 400, "Invalid input for field/attribute security_groups.");
                goto out;
            }
        }
        if (json_array_size(v))
            json_object_set(r, "security_groups", v);
    }
    if ((v = json_object_get(s, "user_data")) && !json_is_null(v)) {
        const char *ud = json_string_value(v);
        if (!ud || strlen(ud) > USER_DATA_MAX || !base64_valid(ud)) {
            api_error(req, 400, "Invalid input for field/attribute user_data: base64 text of "
                      "at most %d bytes.", USER_DATA_MAX);
            goto out;
        }
        json_object_set(r, "user_data", v);
    }
    if ((v = json_object_get(s, "metadata"))) {
        if (check_metadata(req, v) < 0)
            goto out;
        json_object_set(r, "metadata", v);
    }
    if ((v = json_object_get(s, "availability_zone")) && !json_is_null(v)) {
        const char *az = json_string_value(v);
        if (!az || strlen(az) > COMPUTE_NAME_MAX) {
            api_error(req, 400, "Invalid input for field/attribute availability_zone.");
            goto out;
        }
        const char *colon = strchr(az, ':');
        if (colon && !api_is_admin(ar)) {
            api_error(req, 403, "Policy doesn't allow os_compute_api:servers:create:forced_host "
                      "to be performed.");
            goto out;
        }
        json_object_set_new(r, "availability_zone",
                            colon ? json_stringn(az, (size_t)(colon - az)) : json_string(az));
        if (colon && colon[1])
            json_object_set_new(r, "force_host", json_string(colon + 1));
    }
    if ((v = json_object_get(s, "min_count")) && positive_int(v, MAX_COUNT_MAX, &minc) < 0) {
        api_error(req, 400, "Invalid input for field/attribute min_count.");
        goto out;
    }
    maxc = minc;
    if ((v = json_object_get(s, "max_count")) && positive_int(v, MAX_COUNT_MAX, &maxc) < 0) {
        api_error(req, 400, "Invalid input for field/attribute max_count.");
        goto out;
    }
    if (maxc < minc) {
        api_error(req, 400, "min_count must be <= max_count");
        goto out;
    }
    json_object_set_new(r, "min_count", json_integer(minc));
    json_object_set_new(r, "max_count", json_integer(maxc));
    if ((v = json_object_get(s, "config_drive")) && !json_is_null(v)) {
        if (!json_is_boolean(v) && !json_is_string(v)) {
            api_error(req, 400, "Invalid input for field/attribute config_drive.");
            goto out;
        }
        json_object_set_new(r, "config_drive", json_string(
            json_is_true(v) || (json_is_string(v) && (!strcasecmp(json_string_value(v), "true")
                                                      || !strcmp(json_string_value(v), "1")))
            ? "True" : ""));
    }
    if ((v = json_object_get(s, "OS-DCF:diskConfig")) && !json_is_null(v)
        && (!json_is_string(v) || (strcmp(json_string_value(v), "AUTO")
                                   && strcmp(json_string_value(v), "MANUAL")))) {
        api_error(req, 400, "Invalid input for field/attribute OS-DCF:diskConfig.");
        goto out;
    }
    if ((v = json_object_get(s, "personality")) && json_is_array(v) && json_array_size(v) > 5) {
        api_error(req, 403, "Personality file limit exceeded");
        goto out;
    }
    v = json_object_get(body, "os:scheduler_hints");
    if (!v)
        v = json_object_get(body, "OS-SCH-HNT:scheduler_hints");
    if (v && check_hints(req, v, r) < 0)
        goto out;

    json_object_set_new(r, "project_id", json_string(ar->token->project_id));
    json_object_set_new(r, "user_id", json_string(ar->token->user_id));
    json_object_set_new(r, "admin", json_boolean(api_is_admin(ar)));
    json_object_set_new(r, "request_id", json_string(http_req_id(req)));

    const char **p = compute_params(req, ar, 6);
    char pass[13];
    admin_pass(pass);
    p[3] = compute_json_text(req, r);
    p[4] = compute_dup(req, pass);
    json_t *sg = json_object_get(r, "security_groups");
    p[5] = sg ? compute_json_text(req, sg) : "[{\"name\": \"default\"}]";
    compute_query(req,
        "SELECT (r->>'code')::int AS code, r->>'message' AS message,"
        " $1 || '/v2.1/servers/' || (r->>'id') AS location,"
        " jsonb_build_object('server', jsonb_build_object('id', r->>'id',"
        "  'links', jsonb_build_array("
        "   jsonb_build_object('rel', 'self', 'href', $1 || '/v2.1/servers/' || (r->>'id')),"
        "   jsonb_build_object('rel', 'bookmark', 'href', $1 || '/servers/' || (r->>'id'))),"
        "  'OS-DCF:diskConfig', 'MANUAL', 'security_groups', $6::jsonb,"
        "  'adminPass', $5))::text AS body"
        " FROM (SELECT compute_server_create($4::jsonb) AS r) x",
        6, p, create_done, NULL);
out:
    json_decref(r);
    json_decref(body);
}

/* ---- The server view: GET /servers, /servers/detail and /servers/{id}.
 *
 * One statement selects the page (or the one server) and joins the ports
 * and addresses of its servers, as plain rows: one per server and address
 * (a server without ports, or a port without an address, still gets one),
 * ordered so that a server's rows are consecutive and its addresses are
 * grouped by network.  The JSON is written here from those rows in one
 * pass.  Building it in PostgreSQL (compute_server_json, a plpgsql call
 * per server) cost about a quarter of a millisecond per server; rows and
 * writer cost a few microseconds (docs/compute.md).  compute_server_json
 * still answers PUT /servers/{id} and rebuild: the tests compare its
 * document with GET /servers/{id} and with the detail list. */

/* The document is written into a struct jbuf (lib/jbuf.h). */

/* The columns of VIEW_COLS, in order. */
enum view_col {
    VC_FOUND, VC_UUID, VC_NAME, VC_STATUS, VC_TENANT, VC_USER, VC_METADATA,
    VC_IMAGE, VC_FLAVOR, VC_CREATED, VC_UPDATED, VC_IPV4, VC_IPV6, VC_AZ, VC_CONFIG_DRIVE,
    VC_KEY_NAME, VC_LAUNCHED, VC_TERMINATED, VC_TASK, VC_VM, VC_POWER, VC_SGS, VC_PROGRESS,
    VC_ID, VC_HOST, VC_NODE, VC_FAULT, VC_NET, VC_ADDR, VC_FAMILY, VC_MAC,
};

/* A timestamp as microseconds since 1970 (written by write_time), far
 * cheaper than to_char, which cost as much as the rest of a row.  The
 * float8 of date_part is within a tenth of a microsecond of the exact
 * value for this century, so the rounding cast gives it back exactly; it
 * costs half of extract's numeric. */
#define USEC(t) "(date_part('epoch', " t ") * 1000000)::int8"

/* The rows of the CTE 'page' (whole instances rows) with their addresses,
 * after a first column VC_FOUND that the statement supplies.  $3 is "true"
 * for admins, who see a fault's details even when its code is 500. */
#define VIEW_COLS \
    " x.uuid, x.name, compute_status(x.vm_state, x.task_state), x.project_id, x.user_id," \
    " x.metadata," \
    " x.image_ref, x.flavor_id, " USEC("x.created_at") ", " USEC("x.updated_at") "," \
    " x.access_ip_v4, x.access_ip_v6, coalesce(x.availability_zone, ''), x.config_drive," \
    " x.key_name, " USEC("x.launched_at") ", " USEC("x.terminated_at") "," \
    " x.task_state, x.vm_state, x.power_state, x.security_groups, x.progress, x.id, x.host," \
    " x.node, CASE WHEN x.fault IS NOT NULL AND x.vm_state IN ('error', 'deleted') THEN" \
    "  CASE WHEN $3::boolean OR (x.fault->>'code')::int <> 500 THEN x.fault" \
    "  ELSE x.fault - 'details' END END," \
    " n.name, host(a.ip_address), family(a.ip_address), p.mac_address::text" \
    " FROM (SELECT 1) h LEFT JOIN page x ON true" \
    " LEFT JOIN (instance_ports ip JOIN net.ports p ON p.id = ip.port_id" \
    "  JOIN net.networks n ON n.id = p.network_id" \
    "  LEFT JOIN net.ip_allocations a ON a.port_id = p.id) ON ip.instance_uuid = x.uuid" \
    " ORDER BY x.created_at DESC, x.uuid DESC, n.name, ip.position, family(a.ip_address)," \
    "  a.ip_address"

/* GET /servers: the same rows with ids and names only. */
#define VIEW_BRIEF_COLS \
    " x.uuid, x.name FROM (SELECT 1) h LEFT JOIN page x ON true" \
    " ORDER BY x.created_at DESC, x.uuid DESC"

struct view {
    const char *base;       /* The compute base URL, escaped for JSON. */
    bool detail, admin;
    bool show;              /* GET /servers/{id}: one server or 404. */
    const char *missing;    /* Show: the 404 message. */
    long limit;             /* Lists: the page size. */
    const char *marker;     /* Lists: the marker given, or NULL. */
    const char *next;       /* Lists: the next link up to "limit=" (escaped). */
};

/* SHA-224 (FIPS 180-4) for Nova's hostId, sha224(project_id + host) in
 * hex: a fifth of the statement's time when PostgreSQL computed it for
 * every row, a fraction of a microsecond here. */
static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
};

#define ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void
sha256_block(uint32_t h[8], const unsigned char *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16
               | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR32(w[i - 15], 7) ^ ROR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR32(w[i - 2], 17) ^ ROR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROR32(e, 6) ^ ROR32(e, 11) ^ ROR32(e, 25)) + ((e & f) ^ (~e & g))
                      + sha256_k[i] + w[i];
        uint32_t t2 = (ROR32(a, 2) ^ ROR32(a, 13) ^ ROR32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

/* The hex SHA-224 of 'a' followed by 'b' into 'out' (57 bytes). */
static void
sha224_hex2(const char *a, const char *b, char out[57])
{
    uint32_t h[8] = { 0xc1059ed8, 0x367cd507, 0x3070dd17, 0xf70e5939,
                      0xffc00b31, 0x68581511, 0x64f98fa7, 0xbefa4fa4 };
    unsigned char block[64];
    size_t na = strlen(a), nb = strlen(b), fill = 0;
    uint64_t bits = (uint64_t)(na + nb) * 8;
    for (int part = 0; part < 2; part++) {
        const unsigned char *s = (const unsigned char *)(part ? b : a);
        for (size_t n = part ? nb : na; n; n--) {
            block[fill++] = *s++;
            if (fill == 64) {
                sha256_block(h, block);
                fill = 0;
            }
        }
    }
    block[fill++] = 0x80;
    if (fill > 56) {
        memset(block + fill, 0, 64 - fill);
        sha256_block(h, block);
        fill = 0;
    }
    memset(block + fill, 0, 56 - fill);
    for (int i = 0; i < 8; i++)
        block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_block(h, block);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 28; i++) {
        unsigned char byte = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
        out[2 * i] = hex[byte >> 4];
        out[2 * i + 1] = hex[byte & 15];
    }
    out[56] = '\0';
}

/* Nova's hostId: "" for a server without a host. */
static void
write_host_id(struct jbuf *b, const char *project, const char *host)
{
    char hex[57];
    if (!host || !project) {
        jb_lit(b, "\"\"");
        return;
    }
    sha224_hex2(project, host, hex);
    jb_lit(b, "\"");
    jb_raw(b, hex, 56);
    jb_lit(b, "\"");
}

static bool
status_has_progress(const char *st)
{
    static const char *const with[] = {
        "ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING",
    };
    for (size_t i = 0; i < ARRAY_SIZE(with); i++)
        if (!strcmp(st, with[i]))
            return true;
    return false;
}

/* Microseconds since 1970 as Nova writes times: "2026-11-25T17:19:22Z", or
 * with 'usec' "2026-11-25T17:19:22.123456" (the OS-SRV-USG fields); null
 * for NULL. */
static void
write_time(struct jbuf *b, const char *us, bool usec)
{
    if (!us) {
        jb_lit(b, "null");
        return;
    }
    long long t = strtoll(us, NULL, 10);
    long long frac = t % 1000000;
    if (frac < 0)
        frac += 1000000;
    time_t secs = (time_t)((t - frac) / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int year = tm.tm_year + 1900;
    if (year < 0 || year > 9999) {
        jb_lit(b, "null");
        return;
    }
    /* "YYYY-MM-DDTHH:MM:SS" then "Z" or ".ffffff", digit by digit: this
     * runs four times per server, and printf was a tenth of the list. */
    char out[32] = "\"0000-00-00T00:00:00";
    const int parts[6] = { year, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec };
    const int ends[6] = { 4, 7, 10, 13, 16, 19 };
    for (int i = 0; i < 6; i++)
        for (int v = parts[i], p = ends[i]; v && p > 0; v /= 10, p--)
            out[p] = (char)('0' + v % 10);
    size_t n = 20;
    if (usec) {
        out[n++] = '.';
        for (int i = 5; i >= 0; i--, frac /= 10)
            out[n + (size_t)i] = (char)('0' + frac % 10);
        n += 6;
    } else {
        out[n++] = 'Z';
    }
    out[n++] = '"';
    jb_raw(b, out, n);
}

static void
write_bookmark(struct jbuf *b, const struct view *v, const char *what, const char *id)
{
    jb_lit(b, "{\"id\":");
    jb_str(b, id);
    jb_lit(b, ",\"links\":[{\"rel\":\"bookmark\",\"href\":\"");
    jb_raw(b, v->base, strlen(v->base));
    jb_raw(b, what, strlen(what));
    jb_esc(b, id);
    jb_lit(b, "\"}]}");
}

static void
write_server_links(struct jbuf *b, const struct view *v, const char *uuid)
{
    size_t n = strlen(v->base);
    jb_lit(b, "[{\"rel\":\"self\",\"href\":\"");
    jb_raw(b, v->base, n);
    jb_lit(b, "/v2.1/servers/");
    jb_esc(b, uuid);
    jb_lit(b, "\"},{\"rel\":\"bookmark\",\"href\":\"");
    jb_raw(b, v->base, n);
    jb_lit(b, "/servers/");
    jb_esc(b, uuid);
    jb_lit(b, "\"}]");
}

/* Addresses as Nova shows them: {"<network name>": [{"version", "addr",
 * "OS-EXT-IPS:type", "OS-EXT-IPS-MAC:mac_addr"}]} from the rows [first,
 * end) of one server; a port without an address names its network with an
 * empty list. */
static void
write_addresses(struct jbuf *b, db_result *res, int first, int end)
{
    const char *net = NULL;
    bool first_addr = true;
    jb_lit(b, "{");
    for (int r = first; r < end; r++) {
        const char *n = db_get(res, r, VC_NET);
        if (!n)
            continue;
        if (!net || strcmp(n, net)) {
            if (net)
                jb_lit(b, "],");
            jb_str(b, n);
            jb_lit(b, ":[");
            net = n;
            first_addr = true;
        }
        const char *addr = db_get(res, r, VC_ADDR);
        if (!addr)
            continue;
        if (!first_addr)
            jb_lit(b, ",");
        first_addr = false;
        jb_lit(b, "{\"version\":");
        jb_json(b, db_get(res, r, VC_FAMILY));
        jb_lit(b, ",\"addr\":");
        jb_str(b, addr);
        jb_lit(b, ",\"OS-EXT-IPS:type\":\"fixed\",\"OS-EXT-IPS-MAC:mac_addr\":");
        jb_str(b, db_get(res, r, VC_MAC));
        jb_lit(b, "}");
    }
    if (net)
        jb_lit(b, "]");
    jb_lit(b, "}");
}

/* One server from the rows [first, end) (detail) or the row 'first'. */
static void
write_server(struct jbuf *b, const struct view *v, db_result *res, int first, int end)
{
#define COL(c) db_get(res, first, (c))
    const char *uuid = COL(VC_UUID);
    jb_lit(b, "{\"id\":");
    jb_str(b, uuid);
    jb_key(b, "name");
    jb_str(b, COL(VC_NAME));
    if (!v->detail) {
        jb_key(b, "links");
        write_server_links(b, v, uuid);
        jb_lit(b, "}");
        return;
    }
    const char *status = COL(VC_STATUS);
    jb_key(b, "status");
    jb_str(b, status);
    jb_key(b, "tenant_id");
    jb_str(b, COL(VC_TENANT));
    jb_key(b, "user_id");
    jb_str(b, COL(VC_USER));
    jb_key(b, "metadata");
    jb_json(b, COL(VC_METADATA));
    jb_key(b, "hostId");
    write_host_id(b, COL(VC_TENANT), COL(VC_HOST));
    jb_key(b, "image");
    const char *image = COL(VC_IMAGE);
    if (image && *image)
        write_bookmark(b, v, "/images/", image);
    else
        jb_lit(b, "\"\"");
    jb_key(b, "flavor");
    write_bookmark(b, v, "/flavors/", COL(VC_FLAVOR));
    jb_key(b, "created");
    write_time(b, COL(VC_CREATED), false);
    jb_key(b, "updated");
    write_time(b, COL(VC_UPDATED), false);
    jb_key(b, "addresses");
    write_addresses(b, res, first, end);
    jb_key(b, "accessIPv4");
    jb_str(b, COL(VC_IPV4));
    jb_key(b, "accessIPv6");
    jb_str(b, COL(VC_IPV6));
    jb_key(b, "links");
    write_server_links(b, v, uuid);
    jb_lit(b, ",\"OS-DCF:diskConfig\":\"MANUAL\"");
    if (status && status_has_progress(status)) {
        jb_key(b, "progress");
        jb_json(b, COL(VC_PROGRESS));
    }
    jb_key(b, "OS-EXT-AZ:availability_zone");
    jb_str(b, COL(VC_AZ));
    jb_key(b, "config_drive");
    jb_str(b, COL(VC_CONFIG_DRIVE));
    jb_key(b, "key_name");
    jb_str(b, COL(VC_KEY_NAME));
    jb_key(b, "OS-SRV-USG:launched_at");
    write_time(b, COL(VC_LAUNCHED), true);
    jb_key(b, "OS-SRV-USG:terminated_at");
    write_time(b, COL(VC_TERMINATED), true);
    if (v->admin) {
        const char *id = COL(VC_ID);
        char name[40];
        snprintf(name, sizeof name, "instance-%08llx", id ? strtoull(id, NULL, 10) : 0ULL);
        jb_key(b, "OS-EXT-SRV-ATTR:host");
        jb_str(b, COL(VC_HOST));
        jb_key(b, "OS-EXT-SRV-ATTR:instance_name");
        jb_str(b, name);
        jb_key(b, "OS-EXT-SRV-ATTR:hypervisor_hostname");
        jb_str(b, COL(VC_NODE));
    }
    jb_key(b, "OS-EXT-STS:task_state");
    jb_str(b, COL(VC_TASK));
    jb_key(b, "OS-EXT-STS:vm_state");
    jb_str(b, COL(VC_VM));
    jb_key(b, "OS-EXT-STS:power_state");
    jb_json(b, COL(VC_POWER));
    jb_lit(b, ",\"os-extended-volumes:volumes_attached\":[]");
    jb_key(b, "security_groups");
    jb_json(b, COL(VC_SGS));
    const char *fault = COL(VC_FAULT);
    if (fault) {
        jb_key(b, "fault");
        jb_json(b, fault);
    }
    jb_lit(b, "}");
#undef COL
}

static void
view_done(http_request *req, struct api_req *ar, db_result *res, void *arg)
{
    (void)ar;
    const struct view *v = arg;
    int rows = db_rows(res);
    if (v->show && (rows < 1 || !db_get(res, 0, VC_UUID))) {
        api_error(req, 404, "%s", v->missing);
        return;
    }
    if (v->marker && (rows < 1 || !strcmp(db_get(res, 0, VC_FOUND), "0"))) {
        api_error(req, 400, "marker [%s] not found", v->marker);
        return;
    }
    struct jbuf b = { 0 };
    if (v->show)
        jb_lit(&b, "{\"server\":");
    else
        jb_lit(&b, "{\"servers\":[");
    long n = 0;
    const char *last = NULL;
    for (int r = 0; r < rows;) {
        const char *uuid = db_get(res, r, VC_UUID);
        int end = r + 1;
        if (!uuid) {
            r = end;
            continue;
        }
        while (v->detail && end < rows) {
            const char *next = db_get(res, end, VC_UUID);
            if (!next || strcmp(next, uuid))
                break;
            end++;
        }
        if (n++)
            jb_lit(&b, ",");
        write_server(&b, v, res, r, end);
        last = uuid;
        r = end;
    }
    if (!v->show) {
        jb_lit(&b, "]");
        if (v->limit > 0 && n == v->limit && last) {
            char lim[24];
            snprintf(lim, sizeof lim, "%ld", v->limit);
            jb_lit(&b, ",\"servers_links\":[{\"rel\":\"next\",\"href\":\"");
            jb_raw(&b, v->next, strlen(v->next));
            jb_raw(&b, lim, strlen(lim));
            jb_lit(&b, "&marker=");
            jb_esc(&b, last);
            jb_lit(&b, "\"}]");
        }
    }
    jb_lit(&b, "}");
    if (jb_error(&b) < 0)   /* Text that is not UTF-8, which PostgreSQL does not store. */
        api_error(req, 500, "A server's data could not be written as JSON.");
    else
        (void)http_respond(req, 200, "application/json", b.p, b.len);
    jb_free(&b);
}

/* 's' escaped for a JSON string, in the request's arena; NULL when it is
 * not UTF-8. */
static const char *
json_escaped(http_request *req, const char *s)
{
    struct jbuf b = { 0 };
    const char *out = NULL;
    if (jb_esc(&b, s) == 0)
        out = arena_strndup(http_req_arena(req), b.p ? b.p : "", b.len);
    jb_free(&b);
    return out;
}

/* The view of a list or show; NULL after answering 400 when the base URL
 * (from the Host header) is not UTF-8. */
static struct view *
view_new(http_request *req, struct api_req *ar, const char *base, bool detail)
{
    const char *esc = json_escaped(req, base);
    if (!esc) {
        api_error(req, 400, "The Host header is not valid UTF-8.");
        return NULL;
    }
    struct view *v = arena_zalloc(http_req_arena(req), sizeof *v);
    v->base = esc;
    v->detail = detail;
    v->admin = api_is_admin(ar);
    return v;
}

/* ---- List and show. */

/* The servers a list selects: $2 the caller's project, $4 all_tenants,
 * $13 the project asked for with it, $14 deleted ones only (admins), and
 * the filters $5 name (a regular expression), $6 status, $7 flavor, $8
 * image, $9 host (admins), $10 changes-since (which includes deleted
 * servers).  With the parameters bound, PostgreSQL folds this into the
 * conditions that apply, so the index instances_project serves a
 * project's pages. */
#define LIST_FILTERS \
    " (i.project_id = $2 AND NOT $4::boolean" \
    "  OR $4::boolean AND ($13::text IS NULL OR i.project_id = $13))" \
    " AND (CASE WHEN $14::boolean THEN i.deleted" \
    "  WHEN $10::text IS NOT NULL THEN true ELSE NOT i.deleted END)" \
    " AND ($5::text IS NULL OR i.name ~ $5)" \
    " AND ($6::text IS NULL OR i.vm_state = ANY (compute_status_vm_states($6))" \
    "  AND (upper($6) NOT IN ('REBOOT', 'HARD_REBOOT', 'RESIZE', 'MIGRATING', 'REBUILD')" \
    "   OR compute_status(i.vm_state, i.task_state) = upper($6)))" \
    " AND ($7::text IS NULL OR i.flavor_id = $7)" \
    " AND ($8::text IS NULL OR i.image_ref = $8)" \
    " AND ($9::text IS NULL OR i.host = $9)" \
    " AND ($10::text IS NULL OR i.updated_at >= $10::timestamptz)"

/* The page: newest first, after the marker $11 (which must be one of the
 * servers selected), at most $12 servers. */
#define LIST_PAGE \
    "WITH m AS (SELECT i.created_at, i.uuid FROM instances i" \
    "  WHERE i.uuid = $11::uuid AND" LIST_FILTERS ")," \
    " page AS (SELECT i.* FROM instances i WHERE" LIST_FILTERS \
    "  AND ($11::uuid IS NULL OR (i.created_at, i.uuid)" \
    "       < ((SELECT m.created_at FROM m), (SELECT m.uuid FROM m)))" \
    "  ORDER BY i.created_at DESC, i.uuid DESC LIMIT $12::int)" \
    " SELECT (SELECT count(*) FROM m),"

static const char *
kept_query(http_request *req)
{
    const char *q = http_req_query(req);
    if (!q || !*q)
        return "";
    char *out = arena_alloc(http_req_arena(req), strlen(q) + 2);
    char *o = out;
    const char *s = q;
    while (*s) {
        size_t n = strcspn(s, "&");
        if (n && strncmp(s, "marker=", 7) && strncmp(s, "limit=", 6)
            && !(n == 6 && !strncmp(s, "marker", 6)) && !(n == 5 && !strncmp(s, "limit", 5))) {
            memcpy(o, s, n);
            o += n;
            *o++ = '&';
        }
        s += n;
        if (*s == '&')
            s++;
    }
    *o = '\0';
    return out;
}

static void
servers_list_common(http_request *req, struct api_req *ar, bool detail)
{
    if (compute_begin(req, ar, POL_SERVERS_LIST) < 0)
        return;
    bool admin = api_is_admin(ar);
    const char **p = compute_params(req, ar, 14);
    struct view *v = view_new(req, ar, p[0], detail);
    if (!v)
        return;
    const char *all = http_req_query_param(req, "all_tenants");
    bool all_tenants = all && strcasecmp(all, "false") && strcmp(all, "0");
    if (all_tenants && api_authorize(req, ar, POL_SERVERS_ALL_TENANTS, NULL, NULL) < 0)
        return;
    p[3] = all_tenants ? "true" : "false";
    p[4] = compute_qp(req, "name");
    p[5] = compute_qp(req, "status");
    p[6] = compute_qp(req, "flavor");
    p[7] = compute_qp(req, "image");
    p[8] = admin ? compute_qp(req, "host") : NULL;
    p[9] = compute_qp(req, "changes-since");
    const char *marker = http_req_query_param(req, "marker");
    if (marker && !util_is_uuid(marker)) {
        api_error(req, 400, "marker [%s] not found", compute_dup(req, marker));
        return;
    }
    p[10] = v->marker = marker;
    long limit = LIST_MAX_LIMIT;
    const char *l = http_req_query_param(req, "limit");
    if (l) {
        char *end;
        limit = strtol(l, &end, 10);
        if (!*l || *end || limit < 0) {
            api_error(req, 400, "limit param must be an integer");
            return;
        }
        if (limit > LIST_MAX_LIMIT)
            limit = LIST_MAX_LIMIT;
    }
    v->limit = limit;
    p[11] = arena_printf(http_req_arena(req), "%ld", limit);
    const char *proj = compute_qp(req, "project_id");
    if (!proj)
        proj = compute_qp(req, "tenant_id");
    p[12] = all_tenants ? proj : NULL;
    const char *del = http_req_query_param(req, "deleted");
    p[13] = admin && del && (!strcasecmp(del, "true") || !strcmp(del, "1")) ? "true" : "false";
    const char *query = json_escaped(req, kept_query(req));
    if (!query) {
        api_error(req, 400, "The query string is not valid UTF-8.");
        return;
    }
    v->next = arena_printf(http_req_arena(req), "%s/v2.1/%s?%slimit=", v->base,
                           detail ? "servers/detail" : "servers", query);
    compute_query(req, detail ? LIST_PAGE VIEW_COLS : LIST_PAGE VIEW_BRIEF_COLS, 14, p,
                  view_done, v);
}

static void
servers_list(http_request *req, struct api_req *ar)
{
    servers_list_common(req, ar, false);
}

static void
servers_detail(http_request *req, struct api_req *ar)
{
    servers_list_common(req, ar, true);
}

/* The visibility condition for one server: the caller's project, or any
 * project for admins. */
#define VISIBLE "i.uuid = $4::uuid AND NOT i.deleted AND ($3::boolean OR i.project_id = $2)"

static void
servers_show(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_SERVERS_SHOW, 4);
    if (!p)
        return;             /* Answered: the arena is gone. */
    struct view *v = view_new(req, ar, p[0], true);
    if (!v)
        return;
    v->show = true;
    v->missing = compute_server_missing(req, p[3]);
    compute_query(req, "WITH page AS (SELECT i.* FROM instances i WHERE " VISIBLE ")"
                       " SELECT 1," VIEW_COLS, 4, p, view_done, v);
}

static void
servers_update(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_SERVERS_UPDATE, 7);
    if (!p)
        return;             /* Answered: the arena is gone. */
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *s = json_object_get(body, "server");
    json_t *v;
    const char *k;
    if (!json_is_object(s)) {
        api_error(req, 400, "Invalid input for field/attribute server.");
        goto out;
    }
    json_object_foreach(s, k, v) {
        if (!strcmp(k, "name")) {
            if (!json_is_string(v) || !name_valid(json_string_value(v))) {
                api_error(req, 400, "Invalid input for field/attribute name.");
                goto out;
            }
            p[4] = compute_dup(req, json_string_value(v));
        } else if (!strcmp(k, "accessIPv4") || !strcmp(k, "accessIPv6")) {
            unsigned char b[16];
            if (!json_is_string(v) || (*json_string_value(v) && inet_pton(
                    k[9] == '4' ? AF_INET : AF_INET6, json_string_value(v), b) != 1)) {
                api_error(req, 400, "Invalid input for field/attribute %s.", k);
                goto out;
            }
            p[k[9] == '4' ? 5 : 6] = compute_dup(req, json_string_value(v));
        } else if (!strcmp(k, "OS-DCF:diskConfig")) {
            continue;
        } else {
            api_error(req, 400, "Invalid input for field/attribute server. Additional "
                      "properties are not allowed ('%s' was unexpected)", k);
            goto out;
        }
    }
    compute_run(req,
        "WITH u AS (UPDATE instances i SET name = coalesce($5, name),"
        "  access_ip_v4 = coalesce($6, access_ip_v4), access_ip_v6 = coalesce($7, access_ip_v6),"
        "  updated_at = clock_timestamp() WHERE " VISIBLE " AND (NOT i.locked OR $3::boolean)"
        "  RETURNING i.*)"
        "SELECT CASE WHEN u.uuid IS NULL THEN 409 ELSE 200 END AS code,"
        " 'Instance ' || $4 || ' is locked' AS message,"
        " jsonb_build_object('server', compute_server_json(u, $1, $3::boolean, true))::text AS body"
        " FROM instances i LEFT JOIN u ON true WHERE " VISIBLE,
        7, p, compute_server_missing(req, p[3]));
out:
    json_decref(body);
}

static void
servers_delete(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_SERVERS_DELETE, 7);
    if (!p)
        return;             /* Answered: the arena is gone. */
    p[4] = ar->token->user_id;
    p[5] = http_req_id(req);
    p[6] = ar->token->project_id;
    /* Never scheduled, or on a host that is forced down: gone at once.
     * Otherwise the host's agent deletes the guest and confirms.  The
     * node's agent_nodes row is locked before the instance, in the order
     * an agent report takes them (compute_agent_observed), so that the two
     * cannot deadlock. */
    compute_run(req,
        "WITH n AS (SELECT 1 FROM agent_nodes g WHERE g.name = (SELECT i.node FROM instances i"
        "   WHERE " VISIBLE ") FOR UPDATE),"
        " t AS (SELECT i.* FROM instances i, (SELECT count(*) FROM n) nl WHERE " VISIBLE
        "   FOR UPDATE OF i),"
        " a AS (SELECT compute_record_action(t.uuid, 'delete', $6, $5, $7, true) FROM t"
        "   WHERE NOT t.locked OR $3::boolean),"
        " now_gone AS (SELECT compute_instance_destroyed(t.uuid) AS d FROM t, (SELECT count(*)"
        "   FROM a) ac WHERE (NOT t.locked OR $3::boolean) AND (t.node IS NULL OR EXISTS ("
        "   SELECT 1 FROM compute_nodes n WHERE n.hypervisor_hostname = t.node AND n.forced_down))),"
        " later AS (UPDATE instances i SET task_state = 'deleting', updated_at = clock_timestamp()"
        "   FROM t WHERE i.uuid = t.uuid AND (NOT t.locked OR $3::boolean) AND t.node IS NOT NULL"
        "   AND NOT EXISTS (SELECT 1 FROM compute_nodes n WHERE n.hypervisor_hostname = t.node"
        "   AND n.forced_down) RETURNING 1)"
        "SELECT CASE WHEN t.locked AND NOT $3::boolean THEN 409 ELSE 204 END AS code,"
        " 'Instance ' || $4 || ' is locked' AS message,"
        " (SELECT count(*) FROM now_gone) + (SELECT count(*) FROM later) AS n FROM t",
        7, p, compute_server_missing(req, p[3]));
}

/* ---- Addresses, from the server's ports (compute_server_addresses). */

static void
servers_ips(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_SERVERS_SHOW, 4);
    if (!p)
        return;             /* Answered: the arena is gone. */
    compute_run(req, "SELECT jsonb_build_object('addresses',"
                     " compute_server_addresses(i.uuid, false))::text AS body"
                     " FROM instances i WHERE " VISIBLE,
                4, p, compute_server_missing(req, p[3]));
}

static void
servers_ips_network(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_SERVERS_SHOW, 5);
    if (!p)
        return;             /* Answered: the arena is gone. */
    p[4] = http_req_param(req, "network");
    if (!p[4] || strlen(p[4]) > COMPUTE_NAME_MAX)
        p[4] = "";
    compute_run(req, "SELECT CASE WHEN a ? $5 THEN 200 ELSE 404 END AS code,"
                     " 'Instance is not a member of specified network' AS message,"
                     " jsonb_build_object($5, a->$5)::text AS body"
                     " FROM (SELECT compute_server_addresses(i.uuid, false) AS a"
                     " FROM instances i WHERE " VISIBLE ") x",
                5, p, compute_server_missing(req, p[3]));
}

/* ---- Metadata. */

static void
metadata_list(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_SERVERS_SHOW, 4);
    if (!p)
        return;             /* Answered: the arena is gone. */
    compute_run(req, "SELECT jsonb_build_object('metadata', i.metadata)::text AS body"
                     " FROM instances i WHERE " VISIBLE, 4, p, compute_server_missing(req, p[3]));
}

static void
metadata_show(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_SERVERS_SHOW, 5);
    if (!p)
        return;             /* Answered: the arena is gone. */
    p[4] = http_req_param(req, "key");
    compute_run(req,
        "SELECT CASE WHEN i.metadata ? $5 THEN 200 ELSE 404 END AS code,"
        " 'Metadata item was not found' AS message,"
        " jsonb_build_object('meta', jsonb_build_object($5, i.metadata->$5))::text AS body"
        " FROM instances i WHERE " VISIBLE, 5, p, compute_server_missing(req, p[3]));
}

/* mode: "replace" (PUT /metadata), "merge" (POST /metadata), "one" (PUT
 * /metadata/{key}), "delete" (DELETE /metadata/{key}). */
static void
metadata_change(http_request *req, struct api_req *ar, const char *mode)
{
    const char **p = compute_server_begin(req, ar, POL_SERVERS_UPDATE, 7);
    if (!p)
        return;             /* Answered: the arena is gone. */
    p[4] = mode;
    p[5] = "{}";
    p[6] = http_req_param(req, "key");
    if (strcmp(mode, "delete")) {
        json_t *body = api_parse_body(req);
        if (!body)
            return;
        json_t *md = json_object_get(body, strcmp(mode, "one") ? "metadata" : "meta");
        if (check_metadata(req, md) < 0) {
            json_decref(body);
            return;
        }
        if (!strcmp(mode, "one") && (json_object_size(md) != 1 || !json_object_get(md, p[6]))) {
            json_decref(body);
            api_error(req, 400, "Request body and URI mismatch");
            return;
        }
        p[5] = compute_json_text(req, md);
        json_decref(body);
    }
    compute_run(req,
        "WITH t AS (SELECT i.* FROM instances i WHERE " VISIBLE " FOR UPDATE),"
        " nm AS (SELECT CASE $5 WHEN 'replace' THEN $6::jsonb"
        "   WHEN 'delete' THEN t.metadata - $7 ELSE t.metadata || $6::jsonb END AS md FROM t),"
        " u AS (UPDATE instances i SET metadata = nm.md, updated_at = clock_timestamp()"
        "   FROM t, nm WHERE i.uuid = t.uuid AND (NOT t.locked OR $3::boolean)"
        "   AND ($5 <> 'delete' OR t.metadata ? $7)"
        "   AND (SELECT count(*) FROM jsonb_object_keys(nm.md)) <= 128 RETURNING i.metadata)"
        "SELECT CASE WHEN t.locked AND NOT $3::boolean THEN 409"
        "  WHEN $5 = 'delete' AND NOT t.metadata ? $7 THEN 404"
        "  WHEN NOT EXISTS (SELECT 1 FROM u) THEN 403"
        "  WHEN $5 = 'delete' THEN 204 ELSE 200 END AS code,"
        " CASE WHEN t.locked THEN 'Instance ' || $4 || ' is locked'"
        "  WHEN $5 = 'delete' THEN 'Metadata item was not found'"
        "  ELSE 'Quota exceeded for metadata_items' END AS message,"
        " CASE $5 WHEN 'one' THEN jsonb_build_object('meta', $6::jsonb)"
        "  ELSE jsonb_build_object('metadata', (SELECT metadata FROM u)) END::text AS body"
        " FROM t", 7, p, compute_server_missing(req, p[3]));
}

static void
metadata_replace(http_request *req, struct api_req *ar)
{
    metadata_change(req, ar, "replace");
}

static void
metadata_merge(http_request *req, struct api_req *ar)
{
    metadata_change(req, ar, "merge");
}

static void
metadata_put_one(http_request *req, struct api_req *ar)
{
    metadata_change(req, ar, "one");
}

static void
metadata_delete(http_request *req, struct api_req *ar)
{
    metadata_change(req, ar, "delete");
}

/* ---- Actions. */

struct action_def {
    const char *name;
    bool admin;            /* Admin-only (policy POL_SERVERS_ACTION_ADMIN). */
    bool object_args;      /* The value must be an object (else null is accepted too). */
};

static const struct action_def actions[] = {
    { "os-start", false, false }, { "os-stop", false, false },
    { "reboot", false, true }, { "pause", false, false }, { "unpause", false, false },
    { "suspend", false, false }, { "resume", false, false }, { "lock", false, false },
    { "unlock", false, false }, { "rescue", false, false }, { "unrescue", false, false },
    { "os-getConsoleOutput", false, true }, { "resize", false, true },
    { "confirmResize", false, false }, { "revertResize", false, false },
    { "rebuild", false, true }, { "createImage", false, true },
    { "os-resetState", true, true }, { "migrate", true, false },
    { "os-migrateLive", true, true }, { "evacuate", true, true },
    { "os-getVNCConsole", false, true }, { "os-getSerialConsole", false, true },
};

static void
create_image_done(http_request *req, struct api_req *ar, db_result *res, void *arg)
{
    (void)ar;
    (void)arg;
    const char *c = db_rows(res) > 0 ? db_getn(res, 0, "code") : NULL;
    int code = c ? atoi(c) : 500;
    if (code >= 400) {
        const char *msg = db_getn(res, 0, "message");
        api_error(req, code, "%s", msg ? msg : http_status_text(code));
        return;
    }
    const char *loc = db_getn(res, 0, "location");
    if (loc && loc[0])
        http_resp_header(req, "Location", loc);
    (void)http_respond(req, 202, NULL, NULL, 0);
}

static void
servers_action(http_request *req, struct api_req *ar)
{
    /* The policy depends on the action: checked below. */
    const char **p = compute_server_begin(req, ar, NULL, 8);
    if (!p)
        return;             /* Answered: the arena is gone. */
    const char *sid = p[3];
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    const struct action_def *def = NULL;
    const char *k = "";
    json_t *args = NULL;
    json_t *v;
    if (json_object_size(body) == 1) {
        json_object_foreach(body, k, v) {
            for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
                if (!strcmp(k, actions[i].name))
                    def = &actions[i];
            args = v;
        }
    }
    if (!def) {
        api_error(req, 400, "There is no such action: %s",
                  json_object_size(body) == 1 ? compute_dup(req, k) : "(none or several)");
        goto out;
    }
    if (def->object_args ? !json_is_object(args) : !(json_is_null(args) || json_is_object(args))) {
        api_error(req, 400, "Invalid input for field/attribute %s.", def->name);
        goto out;
    }
    if (api_authorize(req, ar, def->admin ? POL_SERVERS_ACTION_ADMIN : POL_SERVERS_ACTION,
                      NULL, NULL) < 0)
        goto out;
    if (!strcmp(def->name, "os-getVNCConsole") || !strcmp(def->name, "os-getSerialConsole")) {
        compute_console_action(req, ar, sid, def->name, args);
        goto out;
    }
    if (!strcmp(def->name, "createImage")) {
        v = json_object_get(args, "name");
        if (!v || !json_is_string(v) || !name_valid(json_string_value(v))) {
            api_error(req, 400, "Invalid input for field/attribute name.");
            goto out;
        }
        v = json_object_get(args, "metadata");
        if (v && check_metadata(req, v) < 0)
            goto out;
    }
    if (!strcmp(def->name, "resize")) {
        char buf[256];
        v = json_object_get(args, "flavorRef");
        const char *f = v ? ref_id(v, buf, sizeof buf) : NULL;
        if (!f) {
            api_error(req, 400, "Invalid input for field/attribute flavorRef.");
            goto out;
        }
        json_object_set_new(args, "flavorRef", json_string(f));
    }
    if (!strcmp(def->name, "rebuild")) {
        char buf[256];
        v = json_object_get(args, "imageRef");
        const char *img = v ? ref_id(v, buf, sizeof buf) : NULL;
        if (!img || !util_is_uuid(img)) {
            api_error(req, 400, "Invalid imageRef provided.");
            goto out;
        }
        json_object_set_new(args, "imageRef", json_string(img));
        v = json_object_get(args, "name");
        if (v && (!json_is_string(v) || !name_valid(json_string_value(v)))) {
            api_error(req, 400, "Invalid input for field/attribute name.");
            goto out;
        }
    }
    if (!strcmp(def->name, "os-getConsoleOutput")) {
        v = json_object_get(args, "length");
        long n = -1;
        if (v && !json_is_null(v)) {
            if (json_is_integer(v))
                n = (long)json_integer_value(v);
            else if (json_is_string(v) && *json_string_value(v)) {
                /* Nova's schema: an integer, or a string of digits. */
                char *end;
                errno = 0;
                n = strtol(json_string_value(v), &end, 10);
                if (*end || errno)
                    n = -2;
            } else
                n = -2;
            if (n < -1 || n > 100000) {
                api_error(req, 400, "Invalid input for field/attribute length.");
                goto out;
            }
        }
        json_object_set_new(args, "length", json_integer(n));
    }
    if (!strcmp(def->name, "evacuate") || !strcmp(def->name, "os-migrateLive")) {
        v = json_object_get(args, "host");
        if (v && !json_is_null(v) && (!json_is_string(v)
                                      || strlen(json_string_value(v)) > COMPUTE_NAME_MAX)) {
            api_error(req, 400, "Invalid input for field/attribute host.");
            goto out;
        }
    }
    /* rescue: Nova's schema (adminPass, rescue_image_ref, nothing else).
     * The password is answered back, never stored nor passed on. */
    const char *given_pass = NULL;
    if (!strcmp(def->name, "rescue") && json_is_object(args)) {
        const char *rk;
        json_object_foreach(args, rk, v) {
            bool ok = false;
            if (!strcmp(rk, "adminPass"))
                ok = json_is_string(v) && json_string_length(v) <= RESCUE_PASS_MAX;
            else if (!strcmp(rk, "rescue_image_ref"))
                ok = json_is_string(v) && util_is_uuid(json_string_value(v));
            if (!ok) {
                api_error(req, 400, "Invalid input for field/attribute %s.",
                          strlen(rk) <= COMPUTE_NAME_MAX ? compute_dup(req, rk) : "rescue");
                goto out;
            }
        }
        given_pass = compute_dup(req, json_string_value(json_object_get(args, "adminPass")));
        json_object_del(args, "adminPass");
    }
    json_t *c = json_pack("{s:s,s:s,s:s,s:b,s:s}", "user_id", ar->token->user_id,
                          "project_id", ar->token->project_id, "request_id", http_req_id(req),
                          "admin", api_is_admin(ar), "base", p[0]);
    char pass[13];
    admin_pass(pass);
    p[4] = compute_dup(req, def->name);
    p[5] = json_is_object(args) ? compute_json_text(req, args) : "{}";
    p[6] = compute_json_text(req, c);
    p[7] = given_pass ? given_pass : compute_dup(req, pass);
    json_decref(c);
    if (!strcmp(def->name, "createImage")) {
        /* 202 with the new image's address in Location (Nova at 2.1). */
        compute_query(req,
            "SELECT (r->>'code')::int AS code, r->>'message' AS message,"
            " CASE WHEN r ? 'image_id' THEN rtrim(coalesce((SELECT e.url FROM endpoints e"
            "   JOIN services s ON s.id = e.service_id WHERE s.type = 'image'"
            "   AND e.interface = 'public' AND e.enabled ORDER BY e.id LIMIT 1), ''), '/')"
            "   || '/v2/images/' || (r->>'image_id') END AS location"
            " FROM (SELECT compute_server_action($4::uuid, $5, $6::jsonb, $7::jsonb) AS r) x",
            7, p, create_image_done, NULL);
        goto out;
    }
    compute_run(req,
        "SELECT (r->>'code')::int AS code, r->>'message' AS message,"
        " CASE WHEN r ? 'output' THEN jsonb_build_object('output', r->'output')"
        "  WHEN $5 IN ('evacuate', 'rescue') THEN jsonb_build_object('adminPass', $8)"
        "  WHEN r ? 'server' THEN jsonb_build_object('server', (r->'server')"
        "   || jsonb_build_object('adminPass', $8)) END::text AS body"
        " FROM (SELECT compute_server_action($4::uuid, $5, $6::jsonb, $7::jsonb) AS r) x",
        8, p, NULL);
out:
    json_decref(body);
}

/* ---- os-instance-actions. */

#define ACTION_JSON \
    "jsonb_build_object('action', a.action, 'instance_uuid', a.instance_uuid," \
    " 'message', a.message, 'project_id', a.project_id, 'request_id', a.request_id," \
    " 'start_time', compute_ts_usec(a.start_time), 'user_id', a.user_id)"

static void
instance_actions_list(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_INSTANCE_ACTIONS, 4);
    if (!p)
        return;             /* Answered: the arena is gone. */
    compute_run(req,
        "SELECT jsonb_build_object('instanceActions', coalesce((SELECT jsonb_agg(" ACTION_JSON
        " ORDER BY a.start_time DESC, a.id DESC) FROM instance_actions a"
        " WHERE a.instance_uuid = i.uuid), '[]'))::text AS body FROM instances i"
        " WHERE i.uuid = $4::uuid AND ($3::boolean OR i.project_id = $2)",
        4, p, compute_server_missing(req, p[3]));
}

static void
instance_actions_show(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_INSTANCE_ACTIONS, 5);
    if (!p)
        return;             /* Answered: the arena is gone. */
    p[4] = http_req_param(req, "request_id");
    compute_run(req,
        "SELECT jsonb_build_object('instanceAction', " ACTION_JSON " || CASE WHEN $3::boolean"
        "  OR true THEN jsonb_build_object('events', coalesce((SELECT jsonb_agg("
        "   jsonb_build_object('event', e.event, 'start_time', compute_ts_usec(e.start_time),"
        "   'finish_time', compute_ts_usec(e.finish_time), 'result', e.result)"
        "   || CASE WHEN $3::boolean THEN jsonb_build_object('traceback', e.traceback)"
        "      ELSE '{}'::jsonb END ORDER BY e.id)"
        "   FROM instance_action_events e WHERE e.action_id = a.id), '[]')) END)::text AS body"
        " FROM instance_actions a JOIN instances i ON i.uuid = a.instance_uuid"
        " WHERE i.uuid = $4::uuid AND ($3::boolean OR i.project_id = $2) AND a.request_id = $5"
        " ORDER BY a.id LIMIT 1", 5, p,
        arena_printf(http_req_arena(req), "Action %s on instance %s could not be found.",
                     p[4] ? p[4] : "", p[3]));
}

void
compute_servers_register(struct api *a)
{
    api_route(a, API_COMPUTE, "POST", "/v2.1/servers", servers_create);
    api_route(a, API_COMPUTE, "GET", "/v2.1/servers", servers_list);
    api_route(a, API_COMPUTE, "GET", "/v2.1/servers/detail", servers_detail);
    api_route(a, API_COMPUTE, "GET", "/v2.1/servers/{id}", servers_show);
    api_route(a, API_COMPUTE, "PUT", "/v2.1/servers/{id}", servers_update);
    api_route(a, API_COMPUTE, "DELETE", "/v2.1/servers/{id}", servers_delete);
    api_route(a, API_COMPUTE, "POST", "/v2.1/servers/{id}/action", servers_action);
    api_route(a, API_COMPUTE, "GET", "/v2.1/servers/{id}/ips", servers_ips);
    api_route(a, API_COMPUTE, "GET", "/v2.1/servers/{id}/ips/{network}", servers_ips_network);
    api_route(a, API_COMPUTE, "GET", "/v2.1/servers/{id}/metadata", metadata_list);
    api_route(a, API_COMPUTE, "PUT", "/v2.1/servers/{id}/metadata", metadata_replace);
    api_route(a, API_COMPUTE, "POST", "/v2.1/servers/{id}/metadata", metadata_merge);
    api_route(a, API_COMPUTE, "GET", "/v2.1/servers/{id}/metadata/{key}", metadata_show);
    api_route(a, API_COMPUTE, "PUT", "/v2.1/servers/{id}/metadata/{key}", metadata_put_one);
    api_route(a, API_COMPUTE, "DELETE", "/v2.1/servers/{id}/metadata/{key}", metadata_delete);
    api_route(a, API_COMPUTE, "GET", "/v2.1/servers/{id}/os-instance-actions",
              instance_actions_list);
    api_route(a, API_COMPUTE, "GET", "/v2.1/servers/{id}/os-instance-actions/{request_id}",
              instance_actions_show);
}
