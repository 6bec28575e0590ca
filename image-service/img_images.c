/* Images: create, list, show, update (JSON patch), delete, deactivate and
 * reactivate (Glance v2's /v2/images).
 *
 * Visibility: an image is visible to its owner, to everyone when public or
 * community, and to the members of a shared image; a cloud admin sees
 * everything.  Lists show by default the caller's own images, public ones
 * and shared ones whose membership the caller accepted (community images
 * only with ?visibility=community or all).  Only admins may make an image
 * public.  Invisible images are answered 404, visible ones the caller may
 * not change 403. */
#include "img_api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "arena.h"
#include "auth_policy.h"
#include "img_store.h"
#include "log.h"
#include "util.h"

#define MAX_PROPERTIES 128
#define MAX_TAGS 128
#define MAX_PROP_VALUE 65535
#define LIST_DEFAULT_LIMIT 25
#define LIST_MAX_LIMIT 1000
#define MAX_PARAMS 64

static const char *const disk_formats[] = {
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop", NULL,
};
static const char *const container_formats[] = {
    "ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed", NULL,
};
static const char *const visibilities[] = {
    "private", "shared", "community", "public", NULL,
};
/* Attributes the server sets; clients may not. */
static const char *const read_only[] = {
    "status", "checksum", "os_hash_algo", "os_hash_value", "size",
    "virtual_size", "created_at", "updated_at", "self", "file", "schema",
    "direct_url", "locations", "stores", "deleted", "deleted_at", "id", NULL,
};
/* Attributes clients may set, stored in columns. */
static const char *const core_rw[] = {
    "name", "visibility", "protected", "os_hidden", "min_disk", "min_ram",
    "tags", "disk_format", "container_format", "owner", NULL,
};

static bool
in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (!strcmp(*list, s))
            return true;
    return false;
}

/* ---- Validation of the flat image view (core attributes and custom
 * properties side by side, as clients send and see them). */

struct verdict {
    int status;            /* 0 when valid. */
    char msg[320];
};

static int
bad(struct verdict *v, int status, const char *msg, const char *key)
{
    v->status = status;
    snprintf(v->msg, sizeof v->msg, "%s%s%s", msg, key ? ": " : "", key ? key : "");
    return -1;
}

static int
check_enum(struct verdict *v, json_t *val, const char *const *allowed,
           const char *key, bool nullable)
{
    if (json_is_null(val) && nullable)
        return 0;
    if (!json_is_string(val) || !in_list(allowed, json_string_value(val)))
        return bad(v, 400, "Invalid value for attribute", key);
    return 0;
}

/* Validates one client-settable core attribute. */
static int
check_core(struct verdict *v, const struct img_req *ir, const char *key, json_t *val)
{
    if (!strcmp(key, "name")) {
        if (json_is_null(val))
            return 0;
        if (!json_is_string(val) || strlen(json_string_value(val)) > 255)
            return bad(v, 400, "Invalid value for attribute (a string of at most 255 characters)", key);
        return 0;
    }
    if (!strcmp(key, "visibility"))
        return check_enum(v, val, visibilities, key, false);
    if (!strcmp(key, "disk_format"))
        return check_enum(v, val, disk_formats, key, true);
    if (!strcmp(key, "container_format"))
        return check_enum(v, val, container_formats, key, true);
    if (!strcmp(key, "protected") || !strcmp(key, "os_hidden")) {
        if (!json_is_boolean(val))
            return bad(v, 400, "Invalid value for attribute (a boolean)", key);
        return 0;
    }
    if (!strcmp(key, "min_disk") || !strcmp(key, "min_ram")) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) > 2147483647)
            return bad(v, 400, "Invalid value for attribute (a non-negative integer)", key);
        return 0;
    }
    if (!strcmp(key, "tags")) {
        if (!json_is_array(val))
            return bad(v, 400, "Invalid value for attribute (a list of strings)", key);
        if (json_array_size(val) > MAX_TAGS)
            return bad(v, 413, "Too many tags", NULL);
        size_t i;
        json_t *t;
        json_array_foreach(val, i, t) {
            if (!json_is_string(t) || !*json_string_value(t) ||
                strlen(json_string_value(t)) > 255)
                return bad(v, 400, "Invalid tag (a string of 1 to 255 characters)", NULL);
        }
        return 0;
    }
    if (!strcmp(key, "owner")) {
        if (!json_is_string(val) || !*json_string_value(val) ||
            strlen(json_string_value(val)) > 255)
            return bad(v, 400, "Invalid value for attribute", key);
        if (!ir->admin && strcmp(json_string_value(val), ir->project))
            return bad(v, 403, "Only an administrator may set the owner of an image", NULL);
        return 0;
    }
    return 0;
}

static int
check_property(struct verdict *v, const char *key, json_t *val)
{
    if (!*key || strlen(key) > 255)
        return bad(v, 400, "Invalid property name (1 to 255 characters)", NULL);
    if (!json_is_string(val))
        return bad(v, 400, "Property values must be strings", key);
    if (strlen(json_string_value(val)) > MAX_PROP_VALUE)
        return bad(v, 400, "Property value too long", key);
    return 0;
}

/* The fields of a validated flat view, ready as SQL parameters. */
struct fields {
    const char *name, *visibility, *protected_, *os_hidden, *disk_format,
        *container_format, *min_disk, *min_ram, *owner;
    char *tags;            /* JSON array text (malloc'd). */
    char *properties;      /* JSON object text (malloc'd). */
};

static void
fields_release(struct fields *f)
{
    free(f->tags);
    free(f->properties);
}

static const char *
jtext(struct arena *mem, json_t *v)
{
    if (!v || json_is_null(v))
        return NULL;
    if (json_is_string(v))
        return arena_strdup(mem, json_string_value(v));
    if (json_is_boolean(v))
        return json_is_true(v) ? "true" : "false";
    if (json_is_integer(v))
        return arena_printf(mem, "%lld", (long long)json_integer_value(v));
    return NULL;
}

/* Splits the flat view 'view' into fields, validating every key.
 * 'orig' is the image before the change (NULL on creation): read-only
 * attributes must keep their value.  'status' is the image's status. */
static int
split_view(struct verdict *v, const struct img_req *ir, struct arena *mem,
           json_t *view, json_t *orig, const char *status, struct fields *f)
{
    const char *key;
    json_t *val;
    json_t *props = json_object();
    int nprops = 0;
    memset(f, 0, sizeof *f);
    json_object_foreach(view, key, val) {
        if (in_list(read_only, key)) {
            json_t *o = orig ? json_object_get(orig, key) : NULL;
            if (!orig && !strcmp(key, "id"))
                continue;      /* A client may choose the id on creation. */
            if (!o || !json_equal(o, val)) {
                json_decref(props);
                return bad(v, 403, "Attribute is read-only", key);
            }
            continue;
        }
        if (in_list(core_rw, key)) {
            if (check_core(v, ir, key, val) < 0) {
                json_decref(props);
                return -1;
            }
            continue;
        }
        if (check_property(v, key, val) < 0) {
            json_decref(props);
            return -1;
        }
        if (++nprops > MAX_PROPERTIES) {
            json_decref(props);
            return bad(v, 413, "Too many image properties", NULL);
        }
        json_object_set(props, key, val);
    }
    if (orig) {
        for (const char *const *k = core_rw; *k; k++)
            if (json_object_get(orig, *k) && !json_object_get(view, *k)) {
                json_decref(props);
                return bad(v, 403, "Attribute cannot be removed", *k);
            }
    }
    json_t *vis = json_object_get(view, "visibility");
    if (vis && json_is_string(vis) && !strcmp(json_string_value(vis), "public") &&
        (!orig || strcmp(json_string_value(json_object_get(orig, "visibility")), "public")) &&
        auth_policy_check("image:publicize", ir->tok, NULL, NULL) < 0) {
        json_decref(props);
        return bad(v, 403, "You are not authorized to make an image public (policy image:publicize)", NULL);
    }
    if (orig && status && strcmp(status, "queued")) {
        static const char *const fmts[] = { "disk_format", "container_format", NULL };
        for (const char *const *k = fmts; *k; k++) {
            json_t *a = json_object_get(orig, *k), *b = json_object_get(view, *k);
            if (!json_equal(a, b)) {
                json_decref(props);
                return bad(v, 403, "Attribute can only be changed while the image is queued", *k);
            }
        }
    }
    f->name = jtext(mem, json_object_get(view, "name"));
    f->visibility = jtext(mem, json_object_get(view, "visibility"));
    f->protected_ = jtext(mem, json_object_get(view, "protected"));
    f->os_hidden = jtext(mem, json_object_get(view, "os_hidden"));
    f->disk_format = jtext(mem, json_object_get(view, "disk_format"));
    f->container_format = jtext(mem, json_object_get(view, "container_format"));
    f->min_disk = jtext(mem, json_object_get(view, "min_disk"));
    f->min_ram = jtext(mem, json_object_get(view, "min_ram"));
    f->owner = jtext(mem, json_object_get(view, "owner"));
    json_t *tags = json_object_get(view, "tags");
    f->tags = tags ? json_dumps(tags, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("[]");
    f->properties = json_dumps(props, JSON_COMPACT);
    json_decref(props);
    if (!f->tags || !f->properties) {
        fields_release(f);
        return bad(v, 500, "Out of memory", NULL);
    }
    return 0;
}

/* ---- Create. */

static const char *
base_of(http_request *req)
{
    const char *host = http_req_header(req, "host");
    struct img_req *ir = img_req(req);
    const char *pub = conf_str(ir->ctx->conf, "image", "public_url");
    if (*pub)
        return pub;
    if (host && *host && strlen(host) < 256 && !strpbrk(host, "\"\\<> \t/"))
        return arena_printf(http_req_arena(req), "http://%s", host);
    return arena_printf(http_req_arena(req), "http://127.0.0.1:%d", ir->ctx->port);
}

static void
created(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    json_t *img = img_image_json(res, 0);
    http_resp_header(req, "Location", arena_printf(http_req_arena(req), "%s/v2/images/%s",
                                                   base_of(req), db_getn(res, 0, "id")));
    /* Clients (openstacksdk's use_import) read the import methods from
     * this header of the create answer, as Glance sends it. */
    http_resp_header(req, "OpenStack-image-import-methods", IMG_IMPORT_METHODS);
    log_info("image", "image %s created by project %s", db_getn(res, 0, "id"), ir->project);
    img_reply_json(req, 201, img);
}

static json_t *
parse_json(http_request *req)
{
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    if (!body || !len) {
        img_error(req, 400, "The request body is missing.");
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        img_error(req, 400, "Malformed JSON in the request body: %s (line %d, column %d).",
                  jerr.text, jerr.line, jerr.column);
    return j;
}

static void
image_create(http_request *req, struct img_req *ir)
{
    if (auth_policy_check("image:create", ir->tok, NULL, NULL) < 0 || !*ir->project) {
        img_error(req, 403, "You are not authorized to create images (policy image:create "
                  "needs a project-scoped token with the member role).");
        return;
    }
    json_t *body = parse_json(req);
    if (!body)
        return;
    if (!json_is_object(body)) {
        json_decref(body);
        img_error(req, 400, "The request body must be a JSON object.");
        return;
    }
    struct arena *mem = http_req_arena(req);
    char idbuf[37];
    json_t *idv = json_object_get(body, "id");
    if (idv) {
        if (!json_is_string(idv) || !util_is_uuid(json_string_value(idv))) {
            json_decref(body);
            img_error(req, 400, "The image id must be a UUID.");
            return;
        }
        snprintf(idbuf, sizeof idbuf, "%s", json_string_value(idv));
        for (char *p = idbuf; *p; p++)
            if (*p >= 'A' && *p <= 'F')
                *p = (char)(*p - 'A' + 'a');
    } else {
        util_uuid4(idbuf);
    }
    struct verdict v = { 0 };
    struct fields f;
    if (split_view(&v, ir, mem, body, NULL, NULL, &f) < 0) {
        json_decref(body);
        img_error(req, v.status, "%s", v.msg);
        return;
    }
    json_decref(body);
    const char **p = arena_zalloc(mem, 12 * sizeof *p);
    p[0] = arena_strdup(mem, idbuf);
    p[1] = f.name;
    p[2] = f.owner ? f.owner : ir->project;
    p[3] = f.visibility ? f.visibility : "shared";
    p[4] = f.protected_ ? f.protected_ : "false";
    p[5] = f.os_hidden ? f.os_hidden : "false";
    p[6] = f.disk_format;
    p[7] = f.container_format;
    p[8] = f.min_disk ? f.min_disk : "0";
    p[9] = f.min_ram ? f.min_ram : "0";
    p[10] = arena_strdup(mem, f.tags);
    p[11] = arena_strdup(mem, f.properties);
    fields_release(&f);
    img_query(req,
              "INSERT INTO images AS i (id, name, owner, visibility, protected, os_hidden, "
              "disk_format, container_format, min_disk, min_ram, tags, properties) "
              "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
              "ARRAY(SELECT DISTINCT jsonb_array_elements_text($11::jsonb)), $12::jsonb) "
              "RETURNING " IMG_COLUMNS, 12, p, created, NULL);
}

/* ---- Show. */

static void
shown(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    if (db_rows(res) == 0) {
        img_error(req, 404, "No image found with ID %s", http_req_param(req, "id"));
        return;
    }
    img_reply_json(req, 200, img_image_json(res, 0));
}

static void
image_show(http_request *req, struct img_req *ir)
{
    if (!ir->node && auth_policy_check("image:get", ir->tok, NULL, NULL) < 0) {
        img_error(req, 403, "You are not authorized to read images.");
        return;
    }
    img_load_visible(req, ir, http_req_param(req, "id"), NULL, shown, NULL);
}

/* ---- List. */

struct sql_builder {
    struct arena *mem;
    char *where;
    const char *params[MAX_PARAMS];
    int n;
    bool overflow;
};

static int
sb_param(struct sql_builder *b, const char *value)
{
    if (b->n >= MAX_PARAMS) {
        b->overflow = true;
        return MAX_PARAMS;
    }
    b->params[b->n++] = value;
    return b->n;
}

static void
sb_and(struct sql_builder *b, const char *cond)
{
    b->where = arena_printf(b->mem, "%s AND %s", b->where, cond);
}

struct sort_col {
    const char *key;
    const char *col;
    const char *null_as;   /* coalesce() default for nullable columns. */
};

static const struct sort_col sort_cols[] = {
    { "name", "name", "''" },
    { "status", "status", NULL },
    { "container_format", "container_format", "''" },
    { "disk_format", "disk_format", "''" },
    { "size", "size", "-1" },
    { "virtual_size", "virtual_size", "-1" },
    { "id", "id", NULL },
    { "created_at", "created_at", NULL },
    { "updated_at", "updated_at", NULL },
    { "min_disk", "min_disk", NULL },
    { "min_ram", "min_ram", NULL },
    { "visibility", "visibility", NULL },
    { "owner", "owner", NULL },
    { NULL, NULL, NULL },
};

static const struct sort_col *
find_sort(const char *key)
{
    for (const struct sort_col *s = sort_cols; s->key; s++)
        if (!strcmp(s->key, key))
            return s;
    return NULL;
}

static char *
sort_expr(struct arena *mem, const struct sort_col *s, const char *alias)
{
    if (s->null_as)
        return arena_printf(mem, "coalesce(%s.%s, %s)", alias, s->col, s->null_as);
    return arena_printf(mem, "%s.%s", alias, s->col);
}

#define MAX_SORT 8

struct list_state {
    struct sql_builder b;
    const struct sort_col *sort[MAX_SORT + 1];
    bool desc[MAX_SORT + 1];
    int nsort;
    int ndirs;
    bool dirs_given;
    long limit;
    const char *marker;
    const char *visibility;
    const char *member_status;
    bool hidden_given;
    int err_status;
    const char *err;
};


static int
add_sort(struct list_state *st, const char *key, const char *dir)
{
    const struct sort_col *s = find_sort(key);
    if (!s) {
        st->err_status = 400;
        st->err = "Invalid sort key";
        return -1;
    }
    if (st->nsort >= MAX_SORT) {
        st->err_status = 400;
        st->err = "Too many sort keys";
        return -1;
    }
    st->sort[st->nsort] = s;
    st->desc[st->nsort] = true;
    if (dir) {
        if (!strcmp(dir, "asc"))
            st->desc[st->nsort] = false;
        else if (strcmp(dir, "desc")) {
            st->err_status = 400;
            st->err = "Invalid sort direction (asc or desc)";
            return -1;
        }
    }
    st->nsort++;
    return 0;
}

static int
list_param(const char *name, const char *value, void *arg)
{
    struct list_state *st = arg;
    struct sql_builder *b = &st->b;
    struct arena *mem = b->mem;
    if (!strcmp(name, "limit")) {
        char *end;
        long l = strtol(value, &end, 10);
        if (!*value || *end || l < 0) {
            st->err_status = 400;
            st->err = "limit must be a non-negative integer";
            return -1;
        }
        st->limit = l > LIST_MAX_LIMIT ? LIST_MAX_LIMIT : l;
    } else if (!strcmp(name, "marker")) {
        if (!util_is_uuid(value)) {
            st->err_status = 400;
            st->err = "marker must be an image id";
            return -1;
        }
        st->marker = value;
    } else if (!strcmp(name, "sort_key")) {
        if (add_sort(st, value, NULL) < 0)
            return -1;
    } else if (!strcmp(name, "sort_dir")) {
        if (st->ndirs >= MAX_SORT || (strcmp(value, "asc") && strcmp(value, "desc"))) {
            st->err_status = 400;
            st->err = "Invalid sort direction (asc or desc)";
            return -1;
        }
        /* sort_dir applies to the sort_key of the same rank, or to all
         * of them when given once. */
        st->desc[st->ndirs++] = !strcmp(value, "desc");
        st->dirs_given = true;
    } else if (!strcmp(name, "sort")) {
        char *copy = arena_strdup(mem, value), *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ')
                tok++;
            char *colon = strchr(tok, ':');
            if (colon)
                *colon++ = '\0';
            if (add_sort(st, tok, colon ? colon : "desc") < 0)
                return -1;
        }
    } else if (!strcmp(name, "visibility")) {
        if (strcmp(value, "all") && !in_list(visibilities, value)) {
            st->err_status = 400;
            st->err = "Invalid visibility (public, private, shared, community or all)";
            return -1;
        }
        st->visibility = value;
    } else if (!strcmp(name, "member_status")) {
        if (strcmp(value, "all") && strcmp(value, "pending") && strcmp(value, "accepted") &&
            strcmp(value, "rejected")) {
            st->err_status = 400;
            st->err = "Invalid member_status";
            return -1;
        }
        st->member_status = value;
    } else if (!strcmp(name, "tag")) {
        sb_and(b, arena_printf(mem, "$%d = ANY (i.tags)", sb_param(b, value)));
    } else if (!strcmp(name, "name") || !strcmp(name, "status") || !strcmp(name, "owner") ||
               !strcmp(name, "disk_format") || !strcmp(name, "container_format")) {
        sb_and(b, arena_printf(mem, "i.%s = $%d", name, sb_param(b, value)));
    } else if (!strcmp(name, "id")) {
        if (!util_is_uuid(value)) {
            sb_and(b, "false");
            return 0;
        }
        sb_and(b, arena_printf(mem, "i.id = $%d", sb_param(b, value)));
    } else if (!strcmp(name, "protected") || !strcmp(name, "os_hidden")) {
        /* The spellings Glance accepts (oslo's bool_from_string, strict);
         * openstacksdk sends "True". */
        static const char *const yes[] = { "true", "t", "1", "on", "y", "yes" };
        static const char *const no[] = { "false", "f", "0", "off", "n", "no" };
        const char *v = NULL;
        for (size_t k = 0; k < ARRAY_SIZE(yes) && !v; k++)
            v = !strcasecmp(value, yes[k]) ? "true" : !strcasecmp(value, no[k]) ? "false" : NULL;
        if (!v) {
            st->err_status = 400;
            st->err = "Boolean filters take true or false";
            return -1;
        }
        if (!strcmp(name, "os_hidden"))
            st->hidden_given = true;
        sb_and(b, arena_printf(mem, "i.%s = $%d", name, sb_param(b, v)));
    } else if (!strcmp(name, "size_min") || !strcmp(name, "size_max")) {
        char *end;
        long long x = strtoll(value, &end, 10);
        if (!*value || *end || x < 0) {
            st->err_status = 400;
            st->err = "size_min and size_max take a number of bytes";
            return -1;
        }
        sb_and(b, arena_printf(mem, "i.size %s $%d::bigint", name[5] == 'm' && name[6] == 'i' ? ">=" : "<=",
                               sb_param(b, value)));
    } else {
        /* Any other parameter filters on a custom property. */
        int kp = sb_param(b, name);
        int vp = sb_param(b, value);
        sb_and(b, arena_printf(mem, "i.properties ->> $%d = $%d", kp, vp));
    }
    if (b->overflow) {
        st->err_status = 400;
        st->err = "Too many filters";
        return -1;
    }
    return 0;
}

struct list_ctx {
    long limit;
};

static char *
next_link(http_request *req, const char *last_id)
{
    struct arena *mem = http_req_arena(req);
    const char *q = http_req_query(req);
    char *out = arena_strdup(mem, "/v2/images?");
    if (q) {
        char *copy = arena_strdup(mem, q), *save = NULL;
        for (char *tok = strtok_r(copy, "&", &save); tok; tok = strtok_r(NULL, "&", &save)) {
            if (!strncmp(tok, "marker=", 7) || !strcmp(tok, "marker"))
                continue;
            out = arena_printf(mem, "%s%s&", out, tok);
        }
    }
    return arena_printf(mem, "%smarker=%s", out, last_id);
}

static void
listed(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    struct list_ctx *lc = arg;
    json_t *list = json_array();
    int rows = db_rows(res);
    int shown_rows = rows > lc->limit ? (int)lc->limit : rows;
    for (int i = 0; i < shown_rows; i++)
        json_array_append_new(list, img_image_json(res, i));
    json_t *body = json_pack("{s:o,s:s,s:s}", "images", list, "first", "/v2/images",
                             "schema", "/v2/schemas/images");
    if (rows > lc->limit && shown_rows > 0)
        json_object_set_new(body, "next",
                            json_string(next_link(req, db_getn(res, shown_rows - 1, "id"))));
    img_reply_json(req, 200, body);
}

static void
image_list(http_request *req, struct img_req *ir)
{
    if (auth_policy_check("image:list", ir->tok, NULL, NULL) < 0) {
        img_error(req, 403, "You are not authorized to list images.");
        return;
    }
    struct arena *mem = http_req_arena(req);
    struct list_state *st = arena_zalloc(mem, sizeof *st);
    st->b.mem = mem;
    st->b.where = arena_strdup(mem, "true");
    st->limit = LIST_DEFAULT_LIMIT;
    for (int i = 0; i <= MAX_SORT; i++)
        st->desc[i] = true;
    if (http_req_query_each(req, list_param, st) != 0) {
        img_error(req, st->err_status ? st->err_status : 400, "%s",
                  st->err ? st->err : "Invalid query");
        return;
    }
    /* Visibility.  Parameters are added only when the condition uses
     * them: PostgreSQL refuses unreferenced ones. */
    struct sql_builder *b = &st->b;
    const char *vis = st->visibility;
    if (ir->admin) {
        if (vis && strcmp(vis, "all"))
            sb_and(b, arena_printf(mem, "i.visibility = '%s'", vis));
    } else if (vis && (!strcmp(vis, "public") || !strcmp(vis, "community"))) {
        sb_and(b, arena_printf(mem, "i.visibility = '%s'", vis));
    } else {
        int pp = sb_param(b, ir->project);
        char *own = arena_printf(mem, "i.owner = $%d", pp);
        if (vis && !strcmp(vis, "private")) {
            sb_and(b, arena_printf(mem, "i.visibility = 'private' AND %s", own));
        } else {
            const char *ms = st->member_status ? st->member_status : "accepted";
            char *member_cond;
            if (!strcmp(ms, "all"))
                member_cond = arena_printf(mem, "EXISTS (SELECT 1 FROM image_members m WHERE "
                                           "m.image_id = i.id AND m.member_id = $%d)", pp);
            else
                member_cond = arena_printf(mem, "EXISTS (SELECT 1 FROM image_members m WHERE "
                                           "m.image_id = i.id AND m.member_id = $%d AND "
                                           "m.status = $%d)", pp, sb_param(b, ms));
            if (!vis)
                sb_and(b, arena_printf(mem, "(%s OR i.visibility = 'public' OR "
                                       "(i.visibility = 'shared' AND %s))", own, member_cond));
            else if (!strcmp(vis, "all"))
                sb_and(b, arena_printf(mem, "(%s OR i.visibility IN ('public', 'community') OR "
                                       "(i.visibility = 'shared' AND %s))", own, member_cond));
            else
                sb_and(b, arena_printf(mem, "i.visibility = 'shared' AND (%s OR %s)", own,
                                       member_cond));
        }
    }
    if (!st->hidden_given)
        sb_and(b, "NOT i.os_hidden");
    /* Sorting: the given keys (default created_at), then id, so that
     * marker paging is exact. */
    if (st->nsort == 0) {
        st->sort[0] = find_sort("created_at");
        st->nsort = 1;
    }
    if (st->dirs_given && st->ndirs == 1)
        for (int i = 1; i < st->nsort; i++)
            st->desc[i] = st->desc[0];
    bool has_id = false;
    for (int i = 0; i < st->nsort; i++)
        has_id |= !strcmp(st->sort[i]->key, "id");
    if (!has_id) {
        st->desc[st->nsort] = st->desc[st->nsort - 1];
        st->sort[st->nsort++] = find_sort("id");
    }
    char *order = arena_strdup(mem, "");
    for (int i = 0; i < st->nsort; i++)
        order = arena_printf(mem, "%s%s%s %s", order, i ? ", " : "",
                             sort_expr(mem, st->sort[i], "i"), st->desc[i] ? "DESC" : "ASC");
    if (st->marker) {
        int mp = sb_param(b, st->marker);
        char *cond = arena_strdup(mem, "false");
        for (int i = 0; i < st->nsort; i++) {
            char *conj = arena_strdup(mem, "true");
            for (int j = 0; j < i; j++)
                conj = arena_printf(mem, "%s AND %s = (SELECT %s FROM images mk WHERE mk.id = $%d)",
                                    conj, sort_expr(mem, st->sort[j], "i"),
                                    sort_expr(mem, st->sort[j], "mk"), mp);
            conj = arena_printf(mem, "%s AND %s %s (SELECT %s FROM images mk WHERE mk.id = $%d)",
                                conj, sort_expr(mem, st->sort[i], "i"), st->desc[i] ? "<" : ">",
                                sort_expr(mem, st->sort[i], "mk"), mp);
            cond = arena_printf(mem, "%s OR (%s)", cond, conj);
        }
        sb_and(b, arena_printf(mem, "(%s)", cond));
    }
    if (b->overflow) {
        img_error(req, 400, "Too many filters");
        return;
    }
    struct list_ctx *lc = arena_zalloc(mem, sizeof *lc);
    lc->limit = st->limit;
    char *sql = arena_printf(mem, "SELECT " IMG_COLUMNS " FROM images i WHERE %s ORDER BY %s "
                             "LIMIT %ld", b->where, order, st->limit + 1);
    img_query(req, sql, b->n, b->params, listed, lc);
}

/* ---- Update (JSON patch). */

/* Decodes a JSON pointer segment (~1 is '/', ~0 is '~'). */
static char *
pointer_unescape(struct arena *mem, const char *s, size_t len)
{
    char *out = arena_alloc(mem, len + 1), *o = out;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '~' && i + 1 < len && (s[i + 1] == '0' || s[i + 1] == '1')) {
            *o++ = s[i + 1] == '0' ? '~' : '/';
            i++;
        } else if (s[i] == '~') {
            return NULL;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

/* Applies one operation to the flat view.  Returns 0, or fills 'v'. */
static int
apply_op(struct verdict *v, struct arena *mem, json_t *view, json_t *op)
{
    const char *name = json_string_value(json_object_get(op, "op"));
    const char *path = json_string_value(json_object_get(op, "path"));
    json_t *value = json_object_get(op, "value");
    if (!json_is_object(op) || !name || !path || path[0] != '/')
        return bad(v, 400, "Each operation needs 'op' and a 'path' starting with '/'", NULL);
    bool add = !strcmp(name, "add"), replace = !strcmp(name, "replace"),
         remove = !strcmp(name, "remove");
    if (!add && !replace && !remove)
        return bad(v, 400, "Unsupported operation (add, replace or remove)", name);
    if ((add || replace) && !value)
        return bad(v, 400, "The operation needs a 'value'", NULL);
    const char *slash = strchr(path + 1, '/');
    char *key = pointer_unescape(mem, path + 1, slash ? (size_t)(slash - path - 1) : strlen(path + 1));
    if (!key || !*key)
        return bad(v, 400, "Invalid path", path);
    if (slash) {
        /* Only list elements of tags: /tags/N or /tags/-. */
        json_t *tags = json_object_get(view, "tags");
        if (strcmp(key, "tags") || !json_is_array(tags))
            return bad(v, 400, "Invalid path", path);
        const char *idx = slash + 1;
        size_t n = json_array_size(tags);
        if (!strcmp(idx, "-")) {
            if (!add)
                return bad(v, 400, "Invalid path", path);
            json_array_append(tags, value);
            return 0;
        }
        char *end;
        long i = strtol(idx, &end, 10);
        if (!*idx || *end || i < 0 || (size_t)i > n || ((remove || replace) && (size_t)i == n))
            return bad(v, 409, "Invalid list index", path);
        if (add)
            json_array_insert(tags, (size_t)i, value);
        else if (replace)
            json_array_set(tags, (size_t)i, value);
        else
            json_array_remove(tags, (size_t)i);
        return 0;
    }
    json_t *cur = json_object_get(view, key);
    if ((replace || remove) && !cur)
        return bad(v, 409, "Property does not exist", key);
    if (remove)
        json_object_del(view, key);
    else
        json_object_set(view, key, value);
    return 0;
}

static void
patched(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    if (db_rows(res) == 0) {
        img_error(req, 404, "No image found with ID %s", http_req_param(req, "id"));
        return;
    }
    img_reply_json(req, 200, img_image_json(res, 0));
}

static void
patch_loaded(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    if (img_may_change_loaded(req, ir, res, "image:update", "modify this image") < 0)
        return;
    /* The body was checked before the query; parsing it again here keeps
     * no JSON alive across the query (which may fail without calling
     * back). */
    json_t *ops = parse_json(req);
    if (!ops)
        return;
    struct arena *mem = http_req_arena(req);
    json_t *orig = img_image_json(res, 0);
    json_t *view = json_deep_copy(orig);
    struct verdict v = { 0 };
    size_t i;
    json_t *op;
    int rc = 0;
    json_array_foreach(ops, i, op) {
        if ((rc = apply_op(&v, mem, view, op)) < 0)
            break;
    }
    json_decref(ops);
    struct fields f;
    if (rc == 0)
        rc = split_view(&v, ir, mem, view, orig, db_getn(res, 0, "status"), &f);
    json_decref(view);
    json_decref(orig);
    if (rc < 0) {
        img_error(req, v.status, "%s", v.msg);
        return;
    }
    const char **p = arena_zalloc(mem, 12 * sizeof *p);
    p[0] = db_getn(res, 0, "id");
    p[0] = arena_strdup(mem, p[0]);
    p[1] = f.name;
    p[2] = f.owner;
    p[3] = f.visibility;
    p[4] = f.protected_;
    p[5] = f.os_hidden;
    p[6] = f.disk_format;
    p[7] = f.container_format;
    p[8] = f.min_disk;
    p[9] = f.min_ram;
    p[10] = arena_strdup(mem, f.tags);
    p[11] = arena_strdup(mem, f.properties);
    fields_release(&f);
    img_query(req,
              "UPDATE images i SET name = $2, owner = $3, visibility = $4, protected = $5, "
              "os_hidden = $6, disk_format = $7, container_format = $8, min_disk = $9, "
              "min_ram = $10, tags = ARRAY(SELECT DISTINCT jsonb_array_elements_text($11::jsonb)), "
              "properties = $12::jsonb, updated_at = now() WHERE i.id = $1 "
              "RETURNING " IMG_COLUMNS, 12, p, patched, NULL);
}

static void
image_patch(http_request *req, struct img_req *ir)
{
    const char *ct = http_req_header(req, "content-type");
    if (!ct || (strncmp(ct, "application/openstack-images-v2.1-json-patch", 44) &&
                strncmp(ct, "application/openstack-images-v2.0-json-patch", 44))) {
        http_resp_header(req, "Accept-Patch", "application/openstack-images-v2.1-json-patch");
        img_error(req, 415, "The media type must be application/openstack-images-v2.1-json-patch.");
        return;
    }
    json_t *ops = parse_json(req);
    if (!ops)
        return;
    bool is_array = json_is_array(ops);
    json_decref(ops);
    if (!is_array) {
        img_error(req, 400, "The request body must be a JSON array of patch operations.");
        return;
    }
    img_load_visible(req, ir, http_req_param(req, "id"), NULL, patch_loaded, NULL);
}

/* ---- Delete. */

static void
deleted(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    if (db_rows(res) == 0) {
        img_error(req, 403, "The image is protected and cannot be deleted.");
        return;
    }
    const char *id = db_get(res, 0, 0);
    int rc = ir->ctx->store->ops->remove(ir->ctx->store, id);
    if (rc < 0)
        log_warn("image", "image %s: cannot remove its data: %s", id, strerror(-rc));
    log_info("image", "image %s deleted", id);
    (void)http_respond(req, 204, NULL, NULL, 0);
}

static void
delete_loaded(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    if (img_may_change_loaded(req, ir, res, "image:delete", "delete this image") < 0)
        return;
    const char *pr = db_getn(res, 0, "protected");
    if (pr && *pr == 't') {
        img_error(req, 403, "Image %s is protected and cannot be deleted.", db_getn(res, 0, "id"));
        return;
    }
    const char **p = arena_zalloc(http_req_arena(req), sizeof *p);
    p[0] = arena_strdup(http_req_arena(req), db_getn(res, 0, "id"));
    img_query(req, "DELETE FROM images WHERE id = $1 AND NOT protected RETURNING id",
              1, p, deleted, NULL);
}

static void
image_delete(http_request *req, struct img_req *ir)
{
    img_load_visible(req, ir, http_req_param(req, "id"), NULL, delete_loaded, NULL);
}

/* ---- Deactivate and reactivate (admin only, as in Glance). */

static void
action_done(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    if (db_rows(res) == 0) {
        img_error(req, 403, "The image's status does not allow this action.");
        return;
    }
    (void)http_respond(req, 204, NULL, NULL, 0);
}

static void
action_loaded(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    bool deactivate = arg != NULL;
    if (db_rows(res) == 0) {
        img_error(req, 404, "No image found with ID %s", http_req_param(req, "id"));
        return;
    }
    if (!ir->admin) {
        img_error(req, 403, "Only administrators may %s images.",
                  deactivate ? "deactivate" : "reactivate");
        return;
    }
    const char **p = arena_zalloc(http_req_arena(req), sizeof *p);
    p[0] = arena_strdup(http_req_arena(req), db_getn(res, 0, "id"));
    img_query(req, deactivate ?
              "UPDATE images SET status = 'deactivated', updated_at = now() "
              "WHERE id = $1 AND status IN ('active', 'deactivated') RETURNING id" :
              "UPDATE images SET status = 'active', updated_at = now() "
              "WHERE id = $1 AND status IN ('active', 'deactivated') RETURNING id",
              1, p, action_done, NULL);
}

static void
image_deactivate(http_request *req, struct img_req *ir)
{
    img_load_visible(req, ir, http_req_param(req, "id"), NULL, action_loaded, (void *)1);
}

static void
image_reactivate(http_request *req, struct img_req *ir)
{
    img_load_visible(req, ir, http_req_param(req, "id"), NULL, action_loaded, NULL);
}

/* ---- Interoperable import (glance-direct): PUT .../stage leaves the
 * image 'uploading' with its data complete in the store (img_data.c);
 * POST .../import makes it active.  Nothing is left to convert or copy, so
 * the import completes before the answer: 'importing' is never seen. */

static void
imported(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    if (db_rows(res) == 0) {
        img_error(req, 409, "Image %s is no longer staged: it changed during the import.",
                  http_req_param(req, "id"));
        return;
    }
    log_info("image", "image %s imported (glance-direct)", db_getn(res, 0, "id"));
    (void)http_respond(req, 202, NULL, NULL, 0);
}

static void
import_loaded(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    if (img_may_change_loaded(req, ir, res, "image:upload", "import data to this image") < 0)
        return;
    const char *status = db_getn(res, 0, "status");
    if (strcmp(status, "uploading") || db_getn(res, 0, "staging")) {
        img_error(req, 409, "Image needs to be staged before 'glance-direct' method can be "
                  "used (status %s%s).", status,
                  db_getn(res, 0, "staging") ? ", staging in progress" : "");
        return;
    }
    const char **p = arena_zalloc(http_req_arena(req), sizeof *p);
    p[0] = arena_strdup(http_req_arena(req), db_getn(res, 0, "id"));
    img_query(req, "UPDATE images SET status = 'active', updated_at = now() "
              "WHERE id = $1 AND status = 'uploading' AND upload_token IS NULL RETURNING id",
              1, p, imported, NULL);
}

static void
image_import(http_request *req, struct img_req *ir)
{
    json_t *j = parse_json(req);
    if (!j)
        return;
    json_t *method = json_object_get(j, "method");
    const char *name = json_string_value(json_object_get(method, "name"));
    json_t *stores = json_object_get(j, "stores");
    json_t *all = json_object_get(j, "all_stores");
    const char *bad = NULL;
    if (!json_is_object(method) || !name)
        bad = "Import request requires a 'method' object with a 'name'.";
    else if (strcmp(name, "glance-direct"))
        bad = "Import method not supported; available: " IMG_IMPORT_METHODS ".";
    else if (all && !json_is_boolean(all))
        bad = "'all_stores' must be a boolean.";
    else if (stores && !json_is_array(stores))
        bad = "'stores' must be a list of store ids.";
    size_t i;
    json_t *v;
    if (!bad && stores)
        json_array_foreach(stores, i, v)
            if (!json_is_string(v) || strcmp(json_string_value(v), IMG_STORE_ID))
                bad = "Unknown store: this cloud has the store '" IMG_STORE_ID "' only.";
    json_decref(j);
    if (bad) {
        img_error(req, 400, "%s", bad);
        return;
    }
    img_load_visible(req, ir, http_req_param(req, "id"),
                     "SELECT i.id, i.owner, i.status, CASE WHEN i.upload_token IS NOT NULL"
                     " THEN 't' END AS staging FROM images i", import_loaded, NULL);
}

/* GET /v2/info/import and /v2/info/stores (Glance's discovery calls). */
static void
info_import(http_request *req, struct img_req *ir)
{
    img_reply_json(req, 200, json_pack("{s:{s:s,s:s,s:[s]}}", "import-methods",
                                       "description", "Import methods available.",
                                       "type", "array", "value", "glance-direct"));
}

static void
info_stores(http_request *req, struct img_req *ir)
{
    img_reply_json(req, 200, json_pack("{s:[{s:s,s:s,s:b}]}", "stores", "id", IMG_STORE_ID,
                                       "description", "Filesystem store", "default", 1));
}

void
img_images_register(struct img_ctx *ctx)
{
    img_route(ctx, "POST", "/v2/images/{id}/import", image_import, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "GET", "/v2/info/import", info_import, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "GET", "/v2/info/stores", info_stores, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "POST", "/v2/images", image_create, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "GET", "/v2/images", image_list, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "GET", "/v2/images/{id}", image_show, IMG_AUTH_TOKEN | IMG_AUTH_NODE, NULL);
    img_route(ctx, "PATCH", "/v2/images/{id}", image_patch, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "DELETE", "/v2/images/{id}", image_delete, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "POST", "/v2/images/{id}/actions/deactivate", image_deactivate, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "POST", "/v2/images/{id}/actions/reactivate", image_reactivate, IMG_AUTH_TOKEN, NULL);
}
