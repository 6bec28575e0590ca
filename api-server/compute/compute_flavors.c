/* Flavors: list, detail, show, create and delete (admin), private flavor
 * access (os-flavor-access) and extra specs (os-extra_specs). */
#include "compute.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "arena.h"
#include "util.h"

/* Admin: is_public absent → public only... as Nova: absent or "true" gives
 * public flavors plus, for admins, nothing more; "none" gives all. */
static const char *
is_public_param(http_request *req, bool admin)
{
    const char *v = http_req_query_param(req, "is_public");
    if (!admin)
        return NULL;       /* Visibility decides for members. */
    if (!v)
        return "true";
    if (!strcasecmp(v, "none"))
        return NULL;
    return (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "f")
            || !strcasecmp(v, "no")) ? "false" : "true";
}

static int
parse_limit(http_request *req, const char **out)
{
    const char *v = http_req_query_param(req, "limit");
    *out = NULL;
    if (!v)
        return 0;
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < 0 || n > 100000) {
        api_error(req, 400, "limit param must be an integer");
        return -EINVAL;
    }
    *out = v;
    return 0;
}

static int
parse_nonneg(http_request *req, const char *name, const char **out)
{
    const char *v = http_req_query_param(req, name);
    *out = NULL;
    if (!v)
        return 0;
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < 0 || n > 1000000000) {
        api_error(req, 400, "Invalid %s filter [%s]", name, v);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

static void
flavors_list_common(http_request *req, struct api_req *ar, bool detail)
{
    if (compute_begin(req, ar, POL_FLAVORS_LIST) < 0)
        return;
    const char **p = compute_params(req, ar, 9);
    p[3] = is_public_param(req, api_is_admin(ar));
    if (parse_nonneg(req, "minRam", &p[4]) < 0 || parse_nonneg(req, "minDisk", &p[5]) < 0
        || parse_limit(req, &p[7]) < 0)
        return;
    p[6] = compute_qp(req, "marker");
    p[8] = detail ? "true" : "false";
    compute_run(req,
        "WITH v AS (SELECT f.* FROM flavors f"
        "  WHERE compute_flavor_visible(f, $2, $3::boolean)"
        "    AND ($4::boolean IS NULL OR f.is_public = $4::boolean"
        "         OR (NOT $3::boolean AND NOT f.is_public))"
        "    AND ($5::int IS NULL OR f.ram >= $5::int)"
        "    AND ($6::int IS NULL OR f.disk >= $6::int))"
        "SELECT CASE WHEN $7::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM v WHERE id = $7)"
        "  THEN 400 ELSE 200 END AS code,"
        " 'marker [' || $7 || '] not found' AS message,"
        " jsonb_build_object('flavors', coalesce((SELECT jsonb_agg(compute_flavor_json(x, $1,"
        "   $9::boolean) ORDER BY x.id) FROM (SELECT * FROM v"
        "   WHERE $7::text IS NULL OR v.id > $7 ORDER BY v.id LIMIT $8::int) x), '[]'))::text"
        " AS body",
        9, p, NULL);
}

static void
flavors_list(http_request *req, struct api_req *ar)
{
    flavors_list_common(req, ar, false);
}

static void
flavors_detail(http_request *req, struct api_req *ar)
{
    flavors_list_common(req, ar, true);
}

static const char *
flavor_missing(http_request *req, const char *id)
{
    return arena_printf(http_req_arena(req), "Flavor %s could not be found.", id ? id : "");
}

static void
flavors_show(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_FLAVORS_SHOW) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    p[3] = http_req_param(req, "id");
    compute_run(req,
        "SELECT jsonb_build_object('flavor', compute_flavor_json(f, $1, true))::text AS body"
        " FROM flavors f WHERE f.id = $4 AND compute_flavor_visible(f, $2, $3::boolean)",
        4, p, flavor_missing(req, p[3]));
}

/* Reads a non-negative integer member (JSON number or digit string, as
 * Nova's schema allows); 'required' members must be present. */
static int
int_member(http_request *req, json_t *o, const char *key, bool required, long min,
           long max, const char **out)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required) {
            api_error(req, 400, "Invalid input for field/attribute flavor. Value: %s is a "
                      "required property", key);
            return -EINVAL;
        }
        return 0;
    }
    long n;
    if (json_is_integer(v)) {
        n = (long)json_integer_value(v);
    } else if (json_is_string(v) && *json_string_value(v)) {
        char *end;
        n = strtol(json_string_value(v), &end, 10);
        if (*end)
            goto bad;
    } else {
        goto bad;
    }
    if (n < min || n > max)
        goto bad;
    *out = arena_printf(http_req_arena(req), "%ld", n);
    return 0;
bad:
    api_error(req, 400, "Invalid input for field/attribute %s. Value must be an integer "
              "between %ld and %ld.", key, min, max);
    return -EINVAL;
}

static void
flavors_create(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_FLAVORS_CREATE) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    const char **p = compute_params(req, ar, 12);
    json_t *f = json_object_get(body, "flavor");
    json_t *v;
    if (!json_is_object(f)) {
        api_error(req, 400, "Invalid input for field/attribute flavor. Value: None.");
        goto out;
    }
    v = json_object_get(f, "name");
    if (!json_is_string(v) || !*json_string_value(v)
        || strlen(json_string_value(v)) > COMPUTE_NAME_MAX) {
        api_error(req, 400, "Invalid input for field/attribute name.");
        goto out;
    }
    p[3] = compute_dup(req, json_string_value(v));
    v = json_object_get(f, "id");
    if (v && !json_is_null(v)) {
        if (json_is_integer(v)) {
            p[4] = arena_printf(http_req_arena(req), "%lld", (long long)json_integer_value(v));
        } else if (json_is_string(v) && *json_string_value(v)
                   && strlen(json_string_value(v)) <= COMPUTE_NAME_MAX
                   && !strchr(json_string_value(v), '/')) {
            p[4] = compute_dup(req, json_string_value(v));
        } else {
            api_error(req, 400, "Invalid input for field/attribute id.");
            goto out;
        }
    } else {
        char *id = arena_alloc(http_req_arena(req), 37);
        util_uuid4(id);
        p[4] = id;
    }
    if (int_member(req, f, "vcpus", true, 1, 2147483647, &p[5]) < 0
        || int_member(req, f, "ram", true, 1, 2147483647, &p[6]) < 0
        || int_member(req, f, "disk", true, 0, 2147483647, &p[7]) < 0
        || int_member(req, f, "OS-FLV-EXT-DATA:ephemeral", false, 0, 2147483647, &p[8]) < 0
        || int_member(req, f, "swap", false, 0, 2147483647, &p[9]) < 0)
        goto out;
    v = json_object_get(f, "rxtx_factor");
    if (v && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) <= 0) {
            api_error(req, 400, "Invalid input for field/attribute rxtx_factor.");
            goto out;
        }
        p[10] = arena_printf(http_req_arena(req), "%.17g", json_number_value(v));
    }
    v = json_object_get(f, "os-flavor-access:is_public");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            api_error(req, 400, "Invalid input for field/attribute "
                      "os-flavor-access:is_public.");
            goto out;
        }
        p[11] = json_is_true(v) ? "true" : "false";
    }
    compute_run(req,
        "WITH dup AS (SELECT 1 FROM flavors WHERE id = $5 OR name = $4),"
        " ins AS (INSERT INTO flavors (id, name, vcpus, ram, disk, ephemeral, swap,"
        "  rxtx_factor, is_public) SELECT $5, $4, $6::int, $7::int, $8::int,"
        "  coalesce($9::int, 0), coalesce($10::int, 0), coalesce($11::float8, 1.0),"
        "  coalesce($12::boolean, true) WHERE NOT EXISTS (SELECT 1 FROM dup) RETURNING *)"
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM dup) THEN 409 ELSE 200 END AS code,"
        " 'Flavor with ID ' || $5 || ' or name ' || $4 || ' already exists.' AS message,"
        " (SELECT jsonb_build_object('flavor', compute_flavor_json(i, $1, true)) FROM ins i)::text"
        " AS body",
        12, p, NULL);
out:
    json_decref(body);
}

static void
flavors_delete(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_FLAVORS_DELETE) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    p[3] = http_req_param(req, "id");
    compute_run(req, "DELETE FROM flavors WHERE id = $4 RETURNING 204 AS code", 4, p,
                flavor_missing(req, p[3]));
}

/* ---- os-flavor-access. */

#define ACCESS_LIST \
    "jsonb_build_object('flavor_access', coalesce((SELECT jsonb_agg(jsonb_build_object(" \
    "'flavor_id', fp.flavor_id, 'tenant_id', fp.project_id) ORDER BY fp.project_id)" \
    " FROM flavor_projects fp WHERE fp.flavor_id = $4), '[]'))::text"

static void
flavor_access_list(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_FLAVORS_MANAGE) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    p[3] = http_req_param(req, "id");
    compute_run(req,
        "SELECT CASE WHEN f.is_public THEN 404 ELSE 200 END AS code,"
        " 'Access list not available for public flavors.' AS message, " ACCESS_LIST " AS body"
        " FROM flavors f WHERE f.id = $4", 4, p, flavor_missing(req, p[3]));
}

static void
flavor_action(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_FLAVORS_MANAGE) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    const char **p = compute_params(req, ar, 6);
    p[3] = http_req_param(req, "id");
    json_t *add = json_object_get(body, "addTenantAccess");
    json_t *rm = json_object_get(body, "removeTenantAccess");
    json_t *o = add ? add : rm;
    json_t *t = json_object_get(o, "tenant");
    if (!json_is_object(o) || (add && rm) || !json_is_string(t) || !*json_string_value(t)
        || strlen(json_string_value(t)) > COMPUTE_NAME_MAX) {
        api_error(req, 400, "Invalid input: expected addTenantAccess or removeTenantAccess "
                  "with a tenant.");
        goto out;
    }
    p[4] = compute_dup(req, json_string_value(t));
    p[5] = add ? "add" : "remove";
    compute_run(req,
        "WITH f AS (SELECT * FROM flavors WHERE id = $4),"
        " ex AS (SELECT 1 FROM flavor_projects WHERE flavor_id = $4 AND project_id = $5),"
        " ins AS (INSERT INTO flavor_projects SELECT $4, $5 FROM f"
        "   WHERE $6 = 'add' AND NOT f.is_public AND NOT EXISTS (SELECT 1 FROM ex) RETURNING *),"
        " del AS (DELETE FROM flavor_projects WHERE $6 = 'remove' AND flavor_id = $4"
        "   AND project_id = $5 RETURNING *)"
        "SELECT CASE WHEN f.is_public THEN 409"
        "  WHEN $6 = 'add' AND EXISTS (SELECT 1 FROM ex) THEN 409"
        "  WHEN $6 = 'remove' AND NOT EXISTS (SELECT 1 FROM ex) THEN 404 ELSE 200 END AS code,"
        " CASE WHEN f.is_public THEN 'Can not add access to a public flavor.'"
        "  WHEN $6 = 'add' THEN 'Flavor access already exists for flavor ' || $4 ||"
        "   ' and project ' || $5 || ' combination.'"
        "  ELSE 'Flavor access not found for ' || $4 || ' / ' || $5 || ' combination.' END"
        " AS message,"
        " jsonb_build_object('flavor_access', (SELECT coalesce(jsonb_agg(jsonb_build_object("
        "  'flavor_id', $4, 'tenant_id', x.pid) ORDER BY x.pid), '[]') FROM ("
        "  SELECT project_id AS pid FROM flavor_projects WHERE flavor_id = $4"
        "   AND NOT ($6 = 'remove' AND project_id = $5)"
        "  UNION SELECT $5 WHERE $6 = 'add') x))::text AS body"
        " FROM f", 6, p, flavor_missing(req, p[3]));
out:
    json_decref(body);
}

/* ---- os-extra_specs. */

static void
extra_specs_list(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_FLAVORS_SHOW) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    p[3] = http_req_param(req, "id");
    compute_run(req,
        "SELECT jsonb_build_object('extra_specs', coalesce((SELECT jsonb_object_agg(key, value)"
        " FROM flavor_extra_specs WHERE flavor_id = f.id), '{}'))::text AS body"
        " FROM flavors f WHERE f.id = $4 AND compute_flavor_visible(f, $2, $3::boolean)",
        4, p, flavor_missing(req, p[3]));
}

static void
extra_spec_show(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_FLAVORS_SHOW) < 0)
        return;
    const char **p = compute_params(req, ar, 5);
    p[3] = http_req_param(req, "id");
    p[4] = http_req_param(req, "key");
    compute_run(req,
        "SELECT jsonb_build_object(e.key, e.value)::text AS body FROM flavor_extra_specs e"
        " JOIN flavors f ON f.id = e.flavor_id"
        " WHERE e.flavor_id = $4 AND e.key = $5 AND compute_flavor_visible(f, $2, $3::boolean)",
        5, p, arena_printf(http_req_arena(req), "Flavor %s has no extra specs with key %s.",
                           p[3], p[4]));
}

/* Validates {"extra_specs": {k: v...}} (or {k: v} for one key) and returns
 * it as JSON text, or NULL after answering 400. */
static const char *
specs_body(http_request *req, json_t *specs, const char *only_key)
{
    const char *k;
    json_t *v;
    if (!json_is_object(specs) || json_object_size(specs) == 0
        || json_object_size(specs) > 128) {
        api_error(req, 400, "Invalid input for field/attribute extra_specs.");
        return NULL;
    }
    if (only_key && (json_object_size(specs) != 1 || !json_object_get(specs, only_key))) {
        api_error(req, 400, "Request body and URI mismatch");
        return NULL;
    }
    json_object_foreach(specs, k, v) {
        if (!*k || strlen(k) > 255 || !(json_is_string(v) || json_is_number(v)
                                        || json_is_boolean(v))) {
            api_error(req, 400, "Invalid input for field/attribute extra_specs: keys of 1 to "
                      "255 characters, string values.");
            return NULL;
        }
        if (json_is_string(v) && strlen(json_string_value(v)) > 255) {
            api_error(req, 400, "Invalid input for field/attribute extra_specs: value too long.");
            return NULL;
        }
    }
    return compute_json_text(req, specs);
}

static void
extra_specs_set(http_request *req, struct api_req *ar, const char *key)
{
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    const char **p = compute_params(req, ar, 6);
    p[3] = http_req_param(req, "id");
    const char *specs = specs_body(req, key ? body : json_object_get(body, "extra_specs"), key);
    json_decref(body);
    if (!specs)
        return;             /* Answered: the arena is gone. */
    p[4] = specs;
    p[5] = key ? "one" : "all";
    compute_run(req,
        "WITH f AS (SELECT id FROM flavors WHERE id = $4),"
        " up AS (INSERT INTO flavor_extra_specs (flavor_id, key, value)"
        "  SELECT f.id, e.key, e.value FROM f, jsonb_each_text($5::jsonb) e"
        "  ON CONFLICT (flavor_id, key) DO UPDATE SET value = EXCLUDED.value RETURNING 1)"
        "SELECT CASE WHEN $6 = 'one' THEN $5::jsonb"
        " ELSE jsonb_build_object('extra_specs', $5::jsonb) END::text AS body,"
        " (SELECT count(*) FROM up) AS n FROM f", 6, p, flavor_missing(req, p[3]));
}

static void
extra_specs_create(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_FLAVORS_MANAGE) < 0)
        return;
    extra_specs_set(req, ar, NULL);
}

static void
extra_spec_update(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_FLAVORS_MANAGE) < 0)
        return;
    extra_specs_set(req, ar, http_req_param(req, "key"));
}

static void
extra_spec_delete(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_FLAVORS_MANAGE) < 0)
        return;
    const char **p = compute_params(req, ar, 5);
    p[3] = http_req_param(req, "id");
    p[4] = http_req_param(req, "key");
    compute_run(req,
        "DELETE FROM flavor_extra_specs WHERE flavor_id = $4 AND key = $5 RETURNING 200 AS code",
        5, p, arena_printf(http_req_arena(req), "Flavor %s has no extra specs with key %s.",
                           p[3], p[4]));
}

void
compute_flavors_register(struct api *a)
{
    api_route(a, API_COMPUTE, "GET", "/v2.1/flavors", flavors_list);
    api_route(a, API_COMPUTE, "GET", "/v2.1/flavors/detail", flavors_detail);
    api_route(a, API_COMPUTE, "POST", "/v2.1/flavors", flavors_create);
    api_route(a, API_COMPUTE, "GET", "/v2.1/flavors/{id}", flavors_show);
    api_route(a, API_COMPUTE, "DELETE", "/v2.1/flavors/{id}", flavors_delete);
    api_route(a, API_COMPUTE, "GET", "/v2.1/flavors/{id}/os-flavor-access", flavor_access_list);
    api_route(a, API_COMPUTE, "POST", "/v2.1/flavors/{id}/action", flavor_action);
    api_route(a, API_COMPUTE, "GET", "/v2.1/flavors/{id}/os-extra_specs", extra_specs_list);
    api_route(a, API_COMPUTE, "POST", "/v2.1/flavors/{id}/os-extra_specs", extra_specs_create);
    api_route(a, API_COMPUTE, "GET", "/v2.1/flavors/{id}/os-extra_specs/{key}", extra_spec_show);
    api_route(a, API_COMPUTE, "PUT", "/v2.1/flavors/{id}/os-extra_specs/{key}", extra_spec_update);
    api_route(a, API_COMPUTE, "DELETE", "/v2.1/flavors/{id}/os-extra_specs/{key}",
              extra_spec_delete);
}
