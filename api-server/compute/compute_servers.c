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
#include <strings.h>

#include "arena.h"
#include "compute_version.h"
#include "util.h"

/* Nova's limits. */
#define USER_DATA_MAX 65535
#define METADATA_ITEMS_MAX 128
#define MAX_COUNT_MAX 1000
#define LIST_MAX_LIMIT 1000
/* NICs per server: what the compute agent plugs (INST_MAX_PORTS). */
#define SERVER_PORTS_MAX 8

static const char *
server_missing(http_request *req, const char *id)
{
    return arena_printf(http_req_arena(req), "Instance %s could not be found.", id ? id : "");
}

/* The {id} of the path when it is a UUID; otherwise answers 404 (a name
 * where an id is expected: the client then looks the name up) and returns
 * NULL. */
static const char *
server_id(http_request *req)
{
    const char *id = http_req_param(req, "id");
    if (!id || !util_is_uuid(id)) {
        api_error(req, 404, "%s", server_missing(req, id));
        return NULL;
    }
    return id;
}

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

/* ---- List. */

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
    const char **p = compute_params(req, ar, 17);
    const char *all = http_req_query_param(req, "all_tenants");
    bool all_tenants = all && strcasecmp(all, "false") && strcmp(all, "0");
    if (all_tenants && api_authorize(req, ar, POL_SERVERS_ALL_TENANTS, NULL, NULL) < 0)
        return;
    p[3] = all_tenants ? "true" : "false";
    p[4] = compute_qp(req, "name");
    const char *st = compute_qp(req, "status");
    p[5] = st;
    p[6] = compute_qp(req, "flavor");
    p[7] = compute_qp(req, "image");
    p[8] = admin ? compute_qp(req, "host") : NULL;
    p[9] = compute_qp(req, "changes-since");
    const char *marker = http_req_query_param(req, "marker");
    if (marker && !util_is_uuid(marker)) {
        api_error(req, 400, "marker [%s] not found", compute_dup(req, marker));
        return;
    }
    p[10] = marker;
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
    p[11] = arena_printf(http_req_arena(req), "%ld", limit);
    p[12] = detail ? "true" : "false";
    const char *proj = compute_qp(req, "project_id");
    if (!proj)
        proj = compute_qp(req, "tenant_id");
    p[13] = all_tenants ? proj : NULL;
    const char *del = http_req_query_param(req, "deleted");
    p[14] = admin && del && (!strcasecmp(del, "true") || !strcmp(del, "1")) ? "true" : "false";
    p[15] = kept_query(req);
    p[16] = detail ? "servers/detail" : "servers";
    compute_run(req,
        "WITH v AS (SELECT i.* FROM instances i"
        "  WHERE (i.project_id = $2 AND NOT $4::boolean"
        "         OR $4::boolean AND ($14::text IS NULL OR i.project_id = $14))"
        "    AND (CASE WHEN $15::boolean THEN i.deleted"
        "         WHEN $10::text IS NOT NULL THEN true ELSE NOT i.deleted END)"
        "    AND ($5::text IS NULL OR i.name ~ $5)"
        "    AND ($6::text IS NULL OR i.vm_state = ANY (compute_status_vm_states($6))"
        "         AND (upper($6) NOT IN ('REBOOT', 'HARD_REBOOT', 'RESIZE', 'MIGRATING',"
        "              'REBUILD') OR compute_status(i.vm_state, i.task_state) = upper($6)))"
        "    AND ($7::text IS NULL OR i.flavor_id = $7)"
        "    AND ($8::text IS NULL OR i.image_ref = $8)"
        "    AND ($9::text IS NULL OR i.host = $9)"
        "    AND ($10::text IS NULL OR i.updated_at >= $10::timestamptz)),"
        " m AS (SELECT created_at, uuid FROM v WHERE uuid = $11::uuid),"
        " page AS (SELECT * FROM v WHERE $11::uuid IS NULL"
        "   OR (v.created_at, v.uuid) < (SELECT m.created_at, m.uuid FROM m)"
        "   ORDER BY v.created_at DESC, v.uuid DESC LIMIT $12::int)"
        "SELECT CASE WHEN $11::uuid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM m) THEN 400"
        "  ELSE 200 END AS code, 'marker [' || $11 || '] not found' AS message,"
        " (jsonb_build_object('servers', coalesce((SELECT jsonb_agg(compute_server_json(x, $1,"
        "   $3::boolean, $13::boolean) ORDER BY x.created_at DESC, x.uuid DESC) FROM page x),"
        "   '[]'))"
        "  || CASE WHEN $12::int > 0 AND (SELECT count(*) FROM page) = $12::int"
        "   THEN jsonb_build_object('servers_links', jsonb_build_array(jsonb_build_object("
        "    'rel', 'next', 'href', $1 || '/v2.1/' || $17 || '?' || $16 || 'limit=' || $12"
        "    || '&marker=' || (SELECT x.uuid FROM page x ORDER BY x.created_at, x.uuid LIMIT 1))))"
        "   ELSE '{}'::jsonb END)::text AS body",
        17, p, NULL);
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
    if (compute_begin(req, ar, POL_SERVERS_SHOW) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    const char *sid = server_id(req);
    if (!sid)
        return;             /* Answered: the arena is gone. */
    p[3] = sid;
    compute_run(req,
        "SELECT jsonb_build_object('server', compute_server_json(i, $1, $3::boolean, true))::text"
        " AS body FROM instances i WHERE " VISIBLE, 4, p, server_missing(req, p[3]));
}

static void
servers_update(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_SERVERS_UPDATE) < 0)
        return;
    const char **p = compute_params(req, ar, 7);
    const char *sid = server_id(req);
    if (!sid)
        return;             /* Answered: the arena is gone. */
    p[3] = sid;
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
        7, p, server_missing(req, p[3]));
out:
    json_decref(body);
}

static void
servers_delete(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_SERVERS_DELETE) < 0)
        return;
    const char **p = compute_params(req, ar, 7);
    const char *sid = server_id(req);
    if (!sid)
        return;             /* Answered: the arena is gone. */
    p[3] = sid;
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
        7, p, server_missing(req, p[3]));
}

/* ---- Addresses, from the server's ports (compute_server_addresses). */

static void
servers_ips(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_SERVERS_SHOW) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    const char *sid = server_id(req);
    if (!sid)
        return;             /* Answered: the arena is gone. */
    p[3] = sid;
    compute_run(req, "SELECT jsonb_build_object('addresses',"
                     " compute_server_addresses(i.uuid, false))::text AS body"
                     " FROM instances i WHERE " VISIBLE,
                4, p, server_missing(req, p[3]));
}

static void
servers_ips_network(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_SERVERS_SHOW) < 0)
        return;
    const char **p = compute_params(req, ar, 5);
    const char *sid = server_id(req);
    if (!sid)
        return;             /* Answered: the arena is gone. */
    p[3] = sid;
    p[4] = http_req_param(req, "network");
    if (!p[4] || strlen(p[4]) > COMPUTE_NAME_MAX)
        p[4] = "";
    compute_run(req, "SELECT CASE WHEN a ? $5 THEN 200 ELSE 404 END AS code,"
                     " 'Instance is not a member of specified network' AS message,"
                     " jsonb_build_object($5, a->$5)::text AS body"
                     " FROM (SELECT compute_server_addresses(i.uuid, false) AS a"
                     " FROM instances i WHERE " VISIBLE ") x",
                5, p, server_missing(req, p[3]));
}

/* ---- Metadata. */

static void
metadata_list(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_SERVERS_SHOW) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    const char *sid = server_id(req);
    if (!sid)
        return;             /* Answered: the arena is gone. */
    p[3] = sid;
    compute_run(req, "SELECT jsonb_build_object('metadata', i.metadata)::text AS body"
                     " FROM instances i WHERE " VISIBLE, 4, p, server_missing(req, p[3]));
}

static void
metadata_show(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_SERVERS_SHOW) < 0)
        return;
    const char **p = compute_params(req, ar, 5);
    const char *sid = server_id(req);
    if (!sid)
        return;             /* Answered: the arena is gone. */
    p[3] = sid;
    p[4] = http_req_param(req, "key");
    compute_run(req,
        "SELECT CASE WHEN i.metadata ? $5 THEN 200 ELSE 404 END AS code,"
        " 'Metadata item was not found' AS message,"
        " jsonb_build_object('meta', jsonb_build_object($5, i.metadata->$5))::text AS body"
        " FROM instances i WHERE " VISIBLE, 5, p, server_missing(req, p[3]));
}

/* mode: "replace" (PUT /metadata), "merge" (POST /metadata), "one" (PUT
 * /metadata/{key}), "delete" (DELETE /metadata/{key}). */
static void
metadata_change(http_request *req, struct api_req *ar, const char *mode)
{
    if (compute_begin(req, ar, POL_SERVERS_UPDATE) < 0)
        return;
    const char **p = compute_params(req, ar, 7);
    const char *sid = server_id(req);
    if (!sid)
        return;             /* Answered: the arena is gone. */
    p[3] = sid;
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
        " FROM t", 7, p, server_missing(req, p[3]));
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
};

static void
servers_action(http_request *req, struct api_req *ar)
{
    if (compute_version_check(req) < 0 || api_authenticate(req, ar) < 0)
        return;
    const char **p = compute_params(req, ar, 8);
    const char *sid = server_id(req);
    if (!sid)
        return;             /* Answered: the arena is gone. */
    p[3] = sid;
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
    if (!strcmp(def->name, "createImage")) {
        api_error(req, 501, "createImage is not available yet: snapshots need the image "
                  "service integration.");
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
            else if (json_is_string(v) && *json_string_value(v))
                n = strtol(json_string_value(v), NULL, 10);
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
    json_t *c = json_pack("{s:s,s:s,s:s,s:b,s:s}", "user_id", ar->token->user_id,
                          "project_id", ar->token->project_id, "request_id", http_req_id(req),
                          "admin", api_is_admin(ar), "base", p[0]);
    char pass[13];
    admin_pass(pass);
    p[4] = compute_dup(req, def->name);
    p[5] = json_is_object(args) ? compute_json_text(req, args) : "{}";
    p[6] = compute_json_text(req, c);
    p[7] = compute_dup(req, pass);
    json_decref(c);
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
    if (compute_begin(req, ar, POL_INSTANCE_ACTIONS) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    const char *sid = server_id(req);
    if (!sid)
        return;             /* Answered: the arena is gone. */
    p[3] = sid;
    compute_run(req,
        "SELECT jsonb_build_object('instanceActions', coalesce((SELECT jsonb_agg(" ACTION_JSON
        " ORDER BY a.start_time DESC, a.id DESC) FROM instance_actions a"
        " WHERE a.instance_uuid = i.uuid), '[]'))::text AS body FROM instances i"
        " WHERE i.uuid = $4::uuid AND ($3::boolean OR i.project_id = $2)",
        4, p, server_missing(req, p[3]));
}

static void
instance_actions_show(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_INSTANCE_ACTIONS) < 0)
        return;
    const char **p = compute_params(req, ar, 5);
    const char *sid = server_id(req);
    if (!sid)
        return;             /* Answered: the arena is gone. */
    p[3] = sid;
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
