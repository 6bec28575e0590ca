/* nimbus-image's HTTP layer: the listener, route dispatch with token
 * authentication, Glance's error shape, version discovery, schemas,
 * /healthz and /metrics. */
#include "img_api.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "arena.h"
#include "auth_policy.h"
#include "auth_token.h"
#include "auth_verifier.h"
#include "img_store.h"
#include "log.h"
#include "util.h"

struct img_route {
    struct img_ctx *ctx;
    img_handler_fn fn;
    unsigned auth;
    struct img_route *next;
};

struct img_req *
img_req(http_request *req)
{
    return http_req_get_data(req);
}

static struct img_req *
req_attach(http_request *req, struct img_ctx *ctx)
{
    struct img_req *ir = http_req_get_data(req);
    if (!ir) {
        ir = arena_zalloc(http_req_arena(req), sizeof *ir);
        ir->ctx = ctx;
        ir->project = "";
        http_req_set_data(req, ir);
    }
    return ir;
}

/* ---- Answers. */

void
img_reply_json(http_request *req, int status, json_t *body)
{
    if (!body) {
        (void)http_respond(req, status, NULL, NULL, 0);
        return;
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) {
        (void)http_respond(req, 500, "application/json",
                           "{\"message\":\"serialisation failed\"}", 34);
        return;
    }
    (void)http_respond(req, status, "application/json", text, strlen(text));
    free(text);
}

/* ---- Errors as Glance answers them.  Glance raises webob exceptions,
 * and webob chooses the body from the Accept header between text/html and
 * application/json (in that order of preference on a tie), text/plain when
 * neither is acceptable; an absent or empty Accept accepts neither.  The
 * message goes through webob's template "${explanation}<br /><br />\n
 * ${detail}\n${html_comment}\n" with an empty detail. */

/* The quality 'accept' gives to 'type' ("text/html"): the q of the most
 * specific matching range, 0 when none matches. */
static double
accept_q(const char *accept, const char *type)
{
    const char *slash = strchr(type, '/');
    size_t tlen = (size_t)(slash - type);
    int best = -1;
    double q = 0;
    const char *p = accept;
    while (*p) {
        size_t n = strcspn(p, ",");
        char range[128];
        if (n < sizeof range) {
            memcpy(range, p, n);
            range[n] = 0;
            char *params = strchr(range, ';');
            if (params)
                *params++ = 0;
            char *r = range;
            while (*r == ' ' || *r == '\t')
                r++;
            size_t rl = strcspn(r, " \t");
            r[rl] = 0;
            int spec = -1;
            if (!strcasecmp(r, type))
                spec = 2;
            else if (strlen(r) == tlen + 2 && !strncasecmp(r, type, tlen + 1) &&
                     r[tlen + 1] == '*')
                spec = 1;
            else if (!strcmp(r, "*/*"))
                spec = 0;
            if (spec > best) {
                double rq = 1;
                for (char *a = params; a && *a; ) {
                    while (*a == ' ' || *a == ';')
                        a++;
                    if ((a[0] == 'q' || a[0] == 'Q') && a[1] == '=')
                        rq = strtod(a + 2, NULL);
                    a = strchr(a, ';');
                }
                best = spec;
                q = rq;
            }
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return q;
}

enum img_error_form
img_error_form(const char *accept)
{
    if (!accept)
        return IMG_ERROR_TEXT;
    double html = accept_q(accept, "text/html"), json = accept_q(accept, "application/json");
    if (html <= 0 && json <= 0)
        return IMG_ERROR_TEXT;
    return html >= json ? IMG_ERROR_HTML : IMG_ERROR_JSON;
}

static char *
html_escape(struct arena *mem, const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += strchr("&<>\"'", *p) ? 6 : 1;
    char *out = arena_alloc(mem, n + 1), *o = out;
    for (const char *p = s; *p; p++) {
        const char *e = *p == '&' ? "&amp;" : *p == '<' ? "&lt;" : *p == '>' ? "&gt;" :
                        *p == '"' ? "&quot;" : *p == '\'' ? "&#x27;" : NULL;
        if (e) {
            size_t el = strlen(e);
            memcpy(o, e, el);
            o += el;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    return out;
}

static void
error_reply(http_request *req, int status, const char *msg)
{
    struct arena *mem = http_req_arena(req);
    const char *title = http_status_text(status);
    char *code = arena_printf(mem, "%d %s", status, title);
    if (status == 401)
        http_resp_header(req, "WWW-Authenticate", "Keystone uri=\"/v3\"");
    char *body;
    const char *type;
    switch (img_error_form(http_req_header(req, "accept"))) {
    case IMG_ERROR_JSON:
        img_reply_json(req, status, json_pack("{s:s,s:s,s:s}", "message",
                                              arena_printf(mem, "%s<br /><br />\n\n\n", msg),
                                              "code", code, "title", title));
        return;
    case IMG_ERROR_HTML:
        type = "text/html; charset=UTF-8";
        body = arena_printf(mem, "<html>\n <head>\n  <title>%s</title>\n </head>\n <body>\n"
                            "  <h1>%s</h1>\n  %s<br /><br />\n\n\n\n </body>\n</html>",
                            code, code, html_escape(mem, msg));
        break;
    case IMG_ERROR_TEXT:
    default:
        /* webob strips the tags: each newline becomes a space, each <br />
         * a newline. */
        type = "text/plain; charset=UTF-8";
        body = arena_printf(mem, "%s\n\n%s\n\n   ", code, msg);
        for (char *c = body + strlen(code) + 2; *c && c < body + strlen(body) - 5; c++)
            if (*c == '\n' || *c == '\r')
                *c = ' ';
        break;
    }
    (void)http_respond(req, status, type, body, strlen(body));
}

void
img_error(http_request *req, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = arena_vprintf(http_req_arena(req), fmt, ap);
    va_end(ap);
    struct img_req *ir = img_req(req);
    if (status == 401 && ir)
        ir->ctx->counters.auth_failures++;
    error_reply(req, status, msg);
}

void
img_db_error(http_request *req, int status, const struct db_error *err)
{
    struct img_req *ir = img_req(req);
    const char *msg, *detail;
    int code = db_error_http(status, err, &msg, &detail);
    if (code == 503) {
        ir->ctx->counters.db_unavailable++;
        log_warn("image", "%s %s: database unavailable: %s", http_req_method(req),
                 http_req_path(req), err && err->message ? err->message : strerror(-status));
        http_resp_header(req, "Retry-After", "1");
    }
    if (code != 500) {
        img_error(req, code, "%s%s", msg, detail ? detail : "");
        return;
    }
    log_error("image", "%s %s: database error %d: %s%s%s", http_req_method(req),
              http_req_path(req), status, err ? err->sqlstate : "",
              err ? " " : "", err && err->message ? err->message : "");
    img_error(req, 500, "An unexpected error prevented the server from "
              "fulfilling the request.");
}

struct query_ctx {
    http_request *req;
    img_query_cb cb;
    void *arg;
};

static void
query_done(int status, db_result *res, const struct db_error *err, void *arg)
{
    struct query_ctx *q = arg;
    if (status < 0) {
        img_db_error(q->req, status, err);
        return;
    }
    q->cb(q->req, img_req(q->req), res, q->arg);
}

void
img_query(http_request *req, const char *sql, int nparams,
          const char *const *params, img_query_cb cb, void *arg)
{
    struct img_req *ir = img_req(req);
    struct query_ctx *q = arena_alloc(http_req_arena(req), sizeof *q);
    q->req = req;
    q->cb = cb;
    q->arg = arg;
    int rc = db_query(ir->ctx->db, sql, nparams, params, query_done, q);
    if (rc < 0)
        img_db_error(req, rc, NULL);
}

bool
img_may_modify(const struct img_req *ir, const char *owner)
{
    return ir->admin || (owner && *ir->project && !strcmp(owner, ir->project));
}

void
img_load_visible(http_request *req, struct img_req *ir, const char *id, const char *select,
                 img_query_cb cb, void *arg)
{
    if (!id || !util_is_uuid(id)) {
        img_error(req, 404, "No image found with ID %s", id ? id : "");
        return;
    }
    struct arena *mem = http_req_arena(req);
    const char **p = arena_zalloc(mem, 2 * sizeof *p);
    if (!select)
        select = "SELECT " IMG_COLUMNS " FROM images i";
    p[0] = id;
    if (ir->admin) {
        img_query(req, arena_printf(mem, "%s WHERE i.id = $1", select), 1, p, cb, arg);
        return;
    }
    if (ir->node) {
        p[1] = ir->node;
        img_query(req, arena_printf(mem, "%s WHERE i.id = $1 AND " IMG_NODE_SQL, select, 2),
                  2, p, cb, arg);
        return;
    }
    p[1] = ir->project;
    img_query(req, arena_printf(mem, "%s WHERE i.id = $1 AND " IMG_VISIBLE_SQL, select, 2, 2),
              2, p, cb, arg);
}

int
img_may_change_loaded(http_request *req, struct img_req *ir, db_result *res, const char *op,
                      const char *what)
{
    if (db_rows(res) == 0) {
        img_error(req, 404, "No image found with ID %s", http_req_param(req, "id"));
        return -ENOENT;
    }
    const char *owner = db_getn(res, 0, "owner");
    if (!img_may_modify(ir, owner)
        || auth_policy_check(op, ir->tok, ir->admin ? NULL : owner, NULL) < 0) {
        img_error(req, 403, "You are not permitted to %s.", what);
        return -EACCES;
    }
    return 0;
}

/* ---- The image as JSON. */

static json_t *
int_or_null(const char *v)
{
    return v ? json_integer(strtoll(v, NULL, 10)) : json_null();
}

static json_t *
str_or_null(const char *v)
{
    return v ? json_string(v) : json_null();
}

json_t *
img_image_json(const db_result *res, int row)
{
    const char *id = db_getn(res, row, "id");
    json_t *o = json_object();
    json_t *props = json_loads(db_getn(res, row, "properties") ?
                               db_getn(res, row, "properties") : "{}", 0, NULL);
    const char *k;
    json_t *v;
    /* Custom properties first, so that no stored key can shadow a core
     * attribute (creation and PATCH refuse such keys anyway). */
    if (json_is_object(props))
        json_object_foreach(props, k, v)
            json_object_set(o, k, v);
    json_decref(props);
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "name", str_or_null(db_getn(res, row, "name")));
    json_object_set_new(o, "status", json_string(db_getn(res, row, "status")));
    json_object_set_new(o, "visibility", json_string(db_getn(res, row, "visibility")));
    const char *b = db_getn(res, row, "protected");
    json_object_set_new(o, "protected", json_boolean(b && *b == 't'));
    b = db_getn(res, row, "os_hidden");
    json_object_set_new(o, "os_hidden", json_boolean(b && *b == 't'));
    /* Staged data (status uploading) gets its digests at import, as in
     * Glance. */
    bool staged = !strcmp(db_getn(res, row, "status"), "uploading");
    json_object_set_new(o, "checksum",
                        str_or_null(staged ? NULL : db_getn(res, row, "checksum")));
    json_object_set_new(o, "os_hash_algo",
                        str_or_null(staged ? NULL : db_getn(res, row, "os_hash_algo")));
    json_object_set_new(o, "os_hash_value",
                        str_or_null(staged ? NULL : db_getn(res, row, "os_hash_value")));
    json_object_set_new(o, "size", int_or_null(db_getn(res, row, "size")));
    json_object_set_new(o, "virtual_size", int_or_null(db_getn(res, row, "virtual_size")));
    json_object_set_new(o, "disk_format", str_or_null(db_getn(res, row, "disk_format")));
    json_object_set_new(o, "container_format", str_or_null(db_getn(res, row, "container_format")));
    json_object_set_new(o, "min_disk", int_or_null(db_getn(res, row, "min_disk")));
    json_object_set_new(o, "min_ram", int_or_null(db_getn(res, row, "min_ram")));
    json_object_set_new(o, "owner", str_or_null(db_getn(res, row, "owner")));
    json_t *tags = json_loads(db_getn(res, row, "tags") ? db_getn(res, row, "tags") : "[]",
                              0, NULL);
    json_object_set_new(o, "tags", json_is_array(tags) ? tags : json_array());
    if (!json_is_array(tags))
        json_decref(tags);
    json_object_set_new(o, "created_at", json_string(db_getn(res, row, "created_at")));
    json_object_set_new(o, "updated_at", json_string(db_getn(res, row, "updated_at")));
    char buf[96];
    snprintf(buf, sizeof buf, "/v2/images/%s", id);
    json_object_set_new(o, "self", json_string(buf));
    snprintf(buf, sizeof buf, "/v2/images/%s/file", id);
    json_object_set_new(o, "file", json_string(buf));
    json_object_set_new(o, "schema", json_string("/v2/schemas/image"));
    json_object_set_new(o, "locations", json_array());
    return o;
}

/* ---- Dispatch. */

/* ---- Node credentials.  A compute agent sends the credential that
 * `nimbus-manage node add` made (docs/agent-channel.md) as "Authorization:
 * Bearer <secret>"; only its SHA-256 is stored (agent_nodes.secret_hash).
 * The secret is never logged. */

static const char *
bearer_secret(http_request *req)
{
    const char *h = http_req_header(req, "authorization");
    if (!h || strncasecmp(h, "Bearer ", 7))
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return h;
}

static void
node_checked(int status, db_result *res, const struct db_error *err, void *arg)
{
    http_request *req = arg;
    struct img_req *ir = img_req(req);
    const struct img_route *rt = ir->route;
    if (status < 0) {
        img_db_error(req, status, err);
        return;
    }
    if (db_rows(res) == 0) {
        img_error(req, 401, "The node credential is not valid.");
        return;
    }
    if (!(rt->auth & IMG_AUTH_NODE)) {
        img_error(req, 403, "A node credential may only read images.");
        return;
    }
    ir->node = arena_strdup(http_req_arena(req), db_getn(res, 0, "name"));
    rt->fn(req, ir);
}

static void
node_auth(http_request *req, struct img_req *ir, const char *secret)
{
    size_t n = strlen(secret);
    if (n == 0 || n > IMG_NODE_SECRET_MAX) {
        img_error(req, 401, "The node credential is not valid.");
        return;
    }
    const char **p = arena_zalloc(http_req_arena(req), sizeof *p);
    p[0] = secret;
    int rc = db_query(ir->ctx->db, "SELECT name FROM agent_nodes WHERE secret_hash = "
                      "encode(sha256(convert_to($1, 'UTF8')), 'hex') AND NOT revoked",
                      1, p, node_checked, req);
    if (rc < 0)
        img_db_error(req, rc, NULL);
}

static void
trampoline(http_request *req, void *data)
{
    struct img_route *rt = data;
    struct img_req *ir = req_attach(req, rt->ctx);
    ir->route = rt;
    http_resp_header(req, "x-openstack-request-id", http_req_id(req));
    if (rt->auth) {
        const char *token = http_req_header(req, "x-auth-token");
        const char *secret = token ? NULL : bearer_secret(req);
        if (secret) {
            node_auth(req, ir, secret);
            return;
        }
        struct auth_token *tok = arena_alloc(http_req_arena(req), sizeof *tok);
        int rc = auth_verifier_check(rt->ctx->auth, token, tok);
        if (rc == -EAGAIN) {
            http_resp_header(req, "Retry-After", "1");
            img_error(req, 503, "The service is starting; try again shortly.");
            return;
        }
        if (rc < 0) {
            img_error(req, 401, "The request you have made requires authentication.");
            return;
        }
        ir->tok = tok;
        ir->project = tok->project_id;
        ir->admin = auth_policy_is_admin(tok);
    }
    rt->fn(req, ir);
}

void
img_route(struct img_ctx *ctx, const char *method, const char *pattern,
          img_handler_fn fn, unsigned auth, const struct http_route_opts *opts)
{
    struct img_route *rt = malloc(sizeof *rt);
    if (!rt)
        abort();
    rt->ctx = ctx;
    rt->fn = fn;
    rt->auth = auth;
    rt->next = ctx->routes;
    ctx->routes = rt;
    if (http_server_route(ctx->http, method, pattern, trampoline, rt, opts) < 0) {
        log_error("image", "cannot add route %s %s", method, pattern);
        abort();
    }
}

static void
server_error(http_request *req, int status, const char *message, void *data)
{
    req_attach(req, data);
    if (status == 404)
        message = "The resource could not be found.";
    error_reply(req, status, message);
}

/* ---- Version discovery: Glance answers GET / with 300 and the list of
 * versions, and GET /v2 with the same list and 200 (glance/api/versions.py).
 * Nimbus implements the v2 API as clients use it; the minor versions are
 * listed so that version negotiation in clients finds v2. */

static const char *
base_url(http_request *req)
{
    struct img_req *ir = img_req(req);
    const char *pub = conf_str(ir->ctx->conf, "image", "public_url");
    if (*pub)
        return pub;
    const char *host = http_req_header(req, "host");
    if (host && *host && strlen(host) < 256 && !strpbrk(host, "\"\\<> \t/"))
        return arena_printf(http_req_arena(req), "http://%s", host);
    return arena_printf(http_req_arena(req), "http://127.0.0.1:%d", ir->ctx->port);
}

static void
versions(http_request *req, int status)
{
    static const char *const ids[] = {
        "v2.16", "v2.15", "v2.9", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3",
        "v2.2", "v2.1", "v2.0",
    };
    const char *base = base_url(req);
    char *href = arena_printf(http_req_arena(req), "%s/v2/", base);
    json_t *list = json_array();
    for (size_t i = 0; i < ARRAY_SIZE(ids); i++)
        json_array_append_new(list, json_pack("{s:s,s:s,s:[{s:s,s:s}]}",
            "id", ids[i], "status", i == 0 ? "CURRENT" : "SUPPORTED",
            "links", "rel", "self", "href", href));
    if (status == 300)
        http_resp_header(req, "Location", href);
    img_reply_json(req, status, json_pack("{s:o}", "versions", list));
}

static void
root(http_request *req, struct img_req *ir)
{
    versions(req, 300);
}

static void
v2_root(http_request *req, struct img_req *ir)
{
    versions(req, 200);
}

/* ---- Schemas (GET /v2/schemas/image and /images), as Glance describes
 * the image; clients such as glanceclient read them to know which keys are
 * core attributes. */

static const char image_schema[] =
    "{\"name\":\"image\",\"additionalProperties\":{\"type\":\"string\"},"
    "\"links\":[{\"href\":\"{self}\",\"rel\":\"self\"},{\"href\":\"{file}\",\"rel\":\"enclosure\"},"
    "{\"href\":\"{schema}\",\"rel\":\"describedby\"}],"
    "\"properties\":{"
    "\"id\":{\"type\":\"string\",\"description\":\"An identifier for the image\","
    "\"pattern\":\"^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$\"},"
    "\"name\":{\"type\":[\"null\",\"string\"],\"description\":\"Descriptive name for the image\",\"maxLength\":255},"
    "\"status\":{\"type\":\"string\",\"readOnly\":true,\"description\":\"Status of the image\","
    "\"enum\":[\"queued\",\"saving\",\"active\",\"killed\",\"deleted\",\"uploading\",\"importing\",\"pending_delete\",\"deactivated\"]},"
    "\"visibility\":{\"type\":\"string\",\"description\":\"Scope of image accessibility\","
    "\"enum\":[\"community\",\"public\",\"private\",\"shared\"]},"
    "\"protected\":{\"type\":\"boolean\",\"description\":\"If true, image will not be deletable.\"},"
    "\"os_hidden\":{\"type\":\"boolean\",\"description\":\"If true, image will not appear in default image list response.\"},"
    "\"checksum\":{\"type\":[\"null\",\"string\"],\"readOnly\":true,\"maxLength\":32,\"description\":\"md5 hash of image contents.\"},"
    "\"os_hash_algo\":{\"type\":[\"null\",\"string\"],\"readOnly\":true,\"maxLength\":64,\"description\":\"Algorithm to calculate the os_hash_value\"},"
    "\"os_hash_value\":{\"type\":[\"null\",\"string\"],\"readOnly\":true,\"maxLength\":128,\"description\":\"Hexdigest of the image contents using the algorithm specified by the os_hash_algo\"},"
    "\"owner\":{\"type\":[\"null\",\"string\"],\"maxLength\":255,\"description\":\"Owner of the image\"},"
    "\"size\":{\"type\":[\"null\",\"integer\"],\"readOnly\":true,\"description\":\"Size of image file in bytes\"},"
    "\"virtual_size\":{\"type\":[\"null\",\"integer\"],\"readOnly\":true,\"description\":\"Virtual size of image in bytes\"},"
    "\"container_format\":{\"type\":[\"null\",\"string\"],\"description\":\"Format of the container\","
    "\"enum\":[null,\"ami\",\"ari\",\"aki\",\"bare\",\"ovf\",\"ova\",\"docker\",\"compressed\"]},"
    "\"disk_format\":{\"type\":[\"null\",\"string\"],\"description\":\"Format of the disk\","
    "\"enum\":[null,\"ami\",\"ari\",\"aki\",\"vhd\",\"vhdx\",\"vmdk\",\"raw\",\"qcow2\",\"vdi\",\"iso\",\"ploop\"]},"
    "\"created_at\":{\"type\":\"string\",\"readOnly\":true,\"description\":\"Date and time of image registration\"},"
    "\"updated_at\":{\"type\":\"string\",\"readOnly\":true,\"description\":\"Date and time of the last image modification\"},"
    "\"tags\":{\"type\":\"array\",\"description\":\"List of strings related to the image\",\"items\":{\"type\":\"string\",\"maxLength\":255}},"
    "\"direct_url\":{\"type\":\"string\",\"readOnly\":true,\"description\":\"URL to access the image file kept in external store\"},"
    "\"min_ram\":{\"type\":\"integer\",\"description\":\"Amount of ram (in MB) required to boot image.\"},"
    "\"min_disk\":{\"type\":\"integer\",\"description\":\"Amount of disk space (in GB) required to boot image.\"},"
    "\"self\":{\"type\":\"string\",\"readOnly\":true,\"description\":\"An image self url\"},"
    "\"file\":{\"type\":\"string\",\"readOnly\":true,\"description\":\"An image file url\"},"
    "\"stores\":{\"type\":\"string\",\"readOnly\":true,\"description\":\"Store in which image data resides.\"},"
    "\"schema\":{\"type\":\"string\",\"readOnly\":true,\"description\":\"An image schema url\"},"
    "\"locations\":{\"type\":\"array\",\"description\":\"A set of URLs to access the image file kept in external store\","
    "\"items\":{\"type\":\"object\",\"properties\":{\"url\":{\"type\":\"string\",\"maxLength\":255},\"metadata\":{\"type\":\"object\"}},"
    "\"required\":[\"url\",\"metadata\"]}},"
    "\"kernel_id\":{\"type\":[\"null\",\"string\"],\"description\":\"ID of image stored in Glance that should be used as the kernel when booting an AMI-style image.\",\"is_base\":false},"
    "\"ramdisk_id\":{\"type\":[\"null\",\"string\"],\"description\":\"ID of image stored in Glance that should be used as the ramdisk when booting an AMI-style image.\",\"is_base\":false},"
    "\"os_distro\":{\"type\":\"string\",\"description\":\"Common name of operating system distribution\",\"is_base\":false}"
    "}}";

static void
schema_image(http_request *req, struct img_req *ir)
{
    (void)http_respond(req, 200, "application/json", image_schema, strlen(image_schema));
}

static void
schema_images(http_request *req, struct img_req *ir)
{
    json_t *img = json_loads(image_schema, 0, NULL);
    json_t *j = json_pack("{s:s,s:{s:{s:s,s:o}, s:{s:s}, s:{s:s}, s:{s:s}},s:[{s:s,s:s},{s:s,s:s},{s:s,s:s}]}",
        "name", "images",
        "properties",
        "images", "type", "array", "items", img,
        "schema", "type", "string",
        "first", "type", "string",
        "next", "type", "string",
        "links",
        "rel", "first", "href", "{first}",
        "rel", "next", "href", "{next}",
        "rel", "describedby", "href", "{schema}");
    img_reply_json(req, 200, j);
}

static void
schema_member(http_request *req, struct img_req *ir)
{
    static const char s[] =
        "{\"name\":\"member\",\"properties\":{"
        "\"created_at\":{\"type\":\"string\",\"description\":\"Date and time of image member creation\"},"
        "\"image_id\":{\"type\":\"string\",\"description\":\"An identifier for the image\"},"
        "\"member_id\":{\"type\":\"string\",\"description\":\"An identifier for the image member (tenantId)\"},"
        "\"status\":{\"type\":\"string\",\"enum\":[\"pending\",\"accepted\",\"rejected\"]},"
        "\"updated_at\":{\"type\":\"string\"},\"schema\":{\"type\":\"string\",\"readOnly\":true}}}";
    (void)http_respond(req, 200, "application/json", s, strlen(s));
}

/* ---- Health and metrics. */

static void
healthz(http_request *req, struct img_req *ir)
{
    bool up = db_pool_available(ir->ctx->db);
    bool ready = auth_verifier_ready(ir->ctx->auth);
    img_reply_json(req, up && ready ? 200 : 503,
                   json_pack("{s:s,s:s,s:s}", "status", up && ready ? "ok" : "degraded",
                             "database", up ? "ok" : "unavailable",
                             "auth", ready ? "ready" : "loading"));
}

static void
metrics(http_request *req, struct img_req *ir)
{
    struct img_ctx *c = ir->ctx;
    struct http_server_stats st;
    struct db_pool_stats ds;
    http_server_stats(c->http, &st);
    db_pool_stats(c->db, &ds);
    const struct img_counters *k = &c->counters;
    char *out = arena_printf(http_req_arena(req),
        "# HELP nimbus_uptime_seconds Seconds since this process started.\n"
        "# TYPE nimbus_uptime_seconds gauge\n"
        "nimbus_uptime_seconds %.3f\n"
        "# TYPE nimbus_http_requests_total counter\n"
        "nimbus_http_requests_total{service=\"image\"} %llu\n"
        "# TYPE nimbus_http_responses_total counter\n"
        "nimbus_http_responses_total{service=\"image\",code=\"2xx\"} %llu\n"
        "nimbus_http_responses_total{service=\"image\",code=\"3xx\"} %llu\n"
        "nimbus_http_responses_total{service=\"image\",code=\"4xx\"} %llu\n"
        "nimbus_http_responses_total{service=\"image\",code=\"5xx\"} %llu\n"
        "nimbus_http_connections_open{service=\"image\"} %u\n"
        "nimbus_http_timeouts_total{service=\"image\"} %llu\n"
        "nimbus_db_up %d\n"
        "nimbus_db_queries_total %llu\n"
        "nimbus_db_failures_total %llu\n"
        "nimbus_db_unavailable_responses_total %llu\n"
        "nimbus_auth_failures_total %llu\n"
        "# HELP nimbus_image_uploads_total Uploads by outcome.\n"
        "# TYPE nimbus_image_uploads_total counter\n"
        "nimbus_image_uploads_total{outcome=\"started\"} %llu\n"
        "nimbus_image_uploads_total{outcome=\"completed\"} %llu\n"
        "nimbus_image_uploads_total{outcome=\"failed\"} %llu\n"
        "nimbus_image_uploads_total{outcome=\"conflict\"} %llu\n"
        "nimbus_image_uploads_total{outcome=\"rejected\"} %llu\n"
        "nimbus_image_uploads_active %u\n"
        "nimbus_image_upload_bytes_total %llu\n"
        "nimbus_image_downloads_total %llu\n"
        "nimbus_image_downloads_active %u\n"
        "nimbus_image_download_bytes_total %llu\n",
        (double)(util_now_ns() - c->started_ns) / 1e9,
        (unsigned long long)st.requests,
        (unsigned long long)st.responses[2], (unsigned long long)st.responses[3],
        (unsigned long long)st.responses[4], (unsigned long long)st.responses[5],
        st.connections_open, (unsigned long long)st.timeouts,
        db_pool_available(c->db) ? 1 : 0, (unsigned long long)ds.queries,
        (unsigned long long)ds.failures, (unsigned long long)k->db_unavailable,
        (unsigned long long)k->auth_failures,
        (unsigned long long)k->uploads_started, (unsigned long long)k->uploads_completed,
        (unsigned long long)k->uploads_failed, (unsigned long long)k->upload_conflicts,
        (unsigned long long)k->uploads_rejected, c->uploads_active,
        (unsigned long long)k->bytes_uploaded, (unsigned long long)k->downloads,
        c->downloads_active, (unsigned long long)k->bytes_downloaded);
    (void)http_respond(req, 200, "text/plain; version=0.0.4", out, strlen(out));
}

/* ---- Recovery at start-up.  Uploads that were running when a previous
 * nimbus-image died left rows in 'saving' (their temporary files were
 * removed by the store's sweep): they return to queued so the image can be
 * uploaded again.  Upload tokens start with the id of the process that
 * claimed the image, so an upload this process claimed meanwhile is never
 * reset.  One nimbus-image serves one store. */

static void
recovered(int status, db_result *res, const struct db_error *err, void *arg)
{
    struct img_ctx *ctx = arg;
    ctx->recovering = false;
    if (status < 0)
        return;            /* The timer tries again. */
    ctx->recovered = true;
    if (db_rows(res) > 0)
        log_info("image", "%d interrupted uploads returned to queued", db_rows(res));
    if (ctx->recover_open) {
        ctx->recover_open = false;
        uv_close((uv_handle_t *)&ctx->recover_timer, NULL);
    }
}

static void
recover_tick(uv_timer_t *t)
{
    struct img_ctx *ctx = t->data;
    if (ctx->recovered || ctx->recovering || !db_pool_available(ctx->db))
        return;
    const char *p[1] = { ctx->instance };
    if (db_query(ctx->db, "UPDATE images SET status = 'queued', upload_token = NULL, "
                 "updated_at = now() WHERE (status = 'saving' AND "
                 "(upload_token IS NULL OR left(upload_token, 16) <> $1)) OR "
                 "(status = 'uploading' AND left(upload_token, 16) <> $1) RETURNING id",
                 1, p, recovered, ctx) == 0)
        ctx->recovering = true;
}

/* ---- Start and stop. */

int
img_api_start(struct img_ctx *ctx)
{
    struct http_server_config hc;
    http_server_config_defaults(&hc);
    hc.max_connections = (unsigned)conf_int(ctx->conf, "image", "max_connections");
    hc.max_header_bytes = (size_t)conf_int(ctx->conf, "api", "max_header_bytes");
    hc.max_body_bytes = (size_t)conf_int(ctx->conf, "api", "max_body_bytes");
    hc.header_timeout_ms = (unsigned)conf_int(ctx->conf, "api", "header_timeout") * 1000u;
    hc.idle_timeout_ms = (unsigned)conf_int(ctx->conf, "api", "idle_timeout") * 1000u;
    hc.body_timeout_ms = (unsigned)conf_int(ctx->conf, "image", "body_timeout") * 1000u;
    ctx->started_ns = util_now_ns();
    ctx->max_image_size = conf_int(ctx->conf, "image", "max_image_size");
    ctx->project_quota = conf_int(ctx->conf, "image", "project_quota_bytes");

    char hex[33];
    util_uuid4_hex(hex);
    memcpy(ctx->instance, hex, 16);
    ctx->instance[16] = '\0';
    int n = ctx->store->ops->sweep(ctx->store);
    if (n > 0)
        log_info("image", "removed %d unfinished uploads from the store", n);

    int rc = http_server_new(ctx->loop, &hc, &ctx->http);
    if (rc < 0) {
        log_error("image", "cannot create the HTTP server: %s", strerror(-rc));
        return rc;
    }
    http_server_set_error_handler(ctx->http, server_error, ctx);
    rc = http_server_set_cors(ctx->http, conf_str(ctx->conf, "dashboard", "allowed_origins"));
    if (rc < 0) {
        log_error("image", "[dashboard] allowed_origins: %s", rc == -EINVAL
                      ? "not a list of at most 32 http[s]://host[:port] origins"
                      : strerror(-rc));
        return rc;
    }
    uv_timer_init(ctx->loop, &ctx->recover_timer);
    ctx->recover_timer.data = ctx;
    ctx->recover_open = true;
    uv_timer_start(&ctx->recover_timer, recover_tick, 0, 500);
    img_route(ctx, "GET", "/", root, IMG_AUTH_NONE, NULL);
    img_route(ctx, "GET", "/v2", v2_root, IMG_AUTH_NONE, NULL);
    img_route(ctx, "GET", "/versions", root, IMG_AUTH_NONE, NULL);
    img_route(ctx, "GET", "/healthz", healthz, IMG_AUTH_NONE, NULL);
    img_route(ctx, "GET", "/metrics", metrics, IMG_AUTH_NONE, NULL);
    img_route(ctx, "GET", "/v2/schemas/image", schema_image, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "GET", "/v2/schemas/images", schema_images, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "GET", "/v2/schemas/member", schema_member, IMG_AUTH_TOKEN, NULL);
    img_images_register(ctx);
    img_members_register(ctx);
    img_data_register(ctx);

    const char *host = conf_str(ctx->conf, "image", "host");
    int port = (int)conf_int(ctx->conf, "image", "port");
    rc = http_server_listen(ctx->http, host, port, false);
    if (rc < 0) {
        log_error("image", "cannot listen on %s:%d: %s", host, port, strerror(-rc));
        return rc;
    }
    ctx->port = http_server_port(ctx->http);
    return 0;
}

void
img_api_shutdown(struct img_ctx *ctx, void (*done)(void *arg), void *arg)
{
    auth_verifier_stop(ctx->auth);
    if (ctx->recover_open) {
        ctx->recover_open = false;
        uv_close((uv_handle_t *)&ctx->recover_timer, NULL);
    }
    http_server_shutdown(ctx->http, done, arg);
}

void
img_api_free(struct img_ctx *ctx)
{
    http_server_free(ctx->http);
    ctx->http = NULL;
    while (ctx->routes) {
        struct img_route *next = ctx->routes->next;
        free(ctx->routes);
        ctx->routes = next;
    }
}
