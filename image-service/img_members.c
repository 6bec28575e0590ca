/* Image members (Glance v2's /v2/images/{id}/members): the owner of a
 * shared image adds projects as members; each member accepts or rejects
 * the image for itself (accepted images appear in its default list); the
 * owner removes members.  A member sees only its own membership. */
#include "img_api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "util.h"

#define MEMBER_COLUMNS \
    "image_id::text AS image_id, member_id, status, " \
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at, " \
    "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS updated_at"

static json_t *
member_json(const db_result *res, int row)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}",
                     "image_id", db_getn(res, row, "image_id"),
                     "member_id", db_getn(res, row, "member_id"),
                     "status", db_getn(res, row, "status"),
                     "created_at", db_getn(res, row, "created_at"),
                     "updated_at", db_getn(res, row, "updated_at"),
                     "schema", "/v2/schemas/member");
}

/* What the members handlers need of the image. */
struct member_op {
    const char *image_id;
    const char *member;        /* From the path, or NULL. */
    const char *owner;
    const char *visibility;
    bool is_owner;             /* Owner or admin. */
};

typedef void (*member_step)(http_request *req, struct img_req *ir, struct member_op *op);

struct loaded_ctx {
    member_step next;
};

static void
image_loaded(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    struct loaded_ctx *lc = arg;
    if (db_rows(res) == 0) {
        img_error(req, 404, "No image found with ID %s", http_req_param(req, "id"));
        return;
    }
    struct arena *mem = http_req_arena(req);
    struct member_op *op = arena_zalloc(mem, sizeof *op);
    op->image_id = arena_strdup(mem, db_get(res, 0, 0));
    op->owner = arena_strdup(mem, db_get(res, 0, 1));
    op->visibility = arena_strdup(mem, db_get(res, 0, 2));
    op->member = http_req_param(req, "member");
    op->is_owner = img_may_modify(ir, op->owner);
    lc->next(req, ir, op);
}

/* Loads the image if visible to the caller (404 otherwise). */
static void
with_image(http_request *req, struct img_req *ir, member_step next)
{
    const char *id = http_req_param(req, "id");
    if (!id || !util_is_uuid(id)) {
        img_error(req, 404, "No image found with ID %s", id ? id : "");
        return;
    }
    struct arena *mem = http_req_arena(req);
    struct loaded_ctx *lc = arena_zalloc(mem, sizeof *lc);
    lc->next = next;
    const char **p = arena_zalloc(mem, 2 * sizeof *p);
    p[0] = id;
    p[1] = ir->project;
    if (ir->admin) {
        img_query(req, "SELECT i.id::text, i.owner, i.visibility FROM images i WHERE i.id = $1",
                  1, p, image_loaded, lc);
        return;
    }
    char *sql = arena_printf(mem, "SELECT i.id::text, i.owner, i.visibility FROM images i "
                             "WHERE i.id = $1 AND " IMG_VISIBLE_SQL, 2, 2);
    img_query(req, sql, 2, p, image_loaded, lc);
}

static void
one_member(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    int status = (int)(intptr_t)arg;
    if (db_rows(res) == 0) {
        img_error(req, 404, "Member %s not found for image %s.",
                  http_req_param(req, "member") ? http_req_param(req, "member") : "",
                  http_req_param(req, "id"));
        return;
    }
    img_reply_json(req, status, member_json(res, 0));
}

/* POST /v2/images/{id}/members {"member": "<project id>"} */
static void
add_step(http_request *req, struct img_req *ir, struct member_op *op)
{
    if (!op->is_owner) {
        img_error(req, 403, "Only the image owner may add members.");
        return;
    }
    if (strcmp(op->visibility, "shared")) {
        img_error(req, 403, "Only shared images have members (this image is %s).",
                  op->visibility);
        return;
    }
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    json_t *j = body ? json_loadb(body, len, 0, NULL) : NULL;
    const char *member = json_string_value(json_object_get(j, "member"));
    if (!member || !*member || strlen(member) > 255) {
        json_decref(j);
        img_error(req, 400, "The body must be {\"member\": \"<project id>\"}.");
        return;
    }
    struct arena *mem = http_req_arena(req);
    const char **p = arena_zalloc(mem, 2 * sizeof *p);
    p[0] = op->image_id;
    p[1] = arena_strdup(mem, member);
    json_decref(j);
    img_query(req, "INSERT INTO image_members (image_id, member_id) VALUES ($1, $2) "
              "RETURNING " MEMBER_COLUMNS, 2, p, one_member, (void *)(intptr_t)200);
}

static void
members_listed(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    json_t *list = json_array();
    for (int i = 0; i < db_rows(res); i++)
        json_array_append_new(list, member_json(res, i));
    img_reply_json(req, 200, json_pack("{s:o,s:s}", "members", list,
                                       "schema", "/v2/schemas/members"));
}

static void
list_step(http_request *req, struct img_req *ir, struct member_op *op)
{
    if (strcmp(op->visibility, "shared")) {
        img_error(req, 403, "Only shared images have members.");
        return;
    }
    const char **p = arena_zalloc(http_req_arena(req), 2 * sizeof *p);
    p[0] = op->image_id;
    if (op->is_owner) {
        img_query(req, "SELECT " MEMBER_COLUMNS " FROM image_members WHERE image_id = $1 "
                  "ORDER BY created_at, member_id", 1, p, members_listed, NULL);
        return;
    }
    p[1] = ir->project;
    img_query(req, "SELECT " MEMBER_COLUMNS " FROM image_members WHERE image_id = $1 "
              "AND member_id = $2", 2, p, members_listed, NULL);
}

static void
show_step(http_request *req, struct img_req *ir, struct member_op *op)
{
    if (!op->is_owner && strcmp(op->member, ir->project)) {
        img_error(req, 404, "Member %s not found for image %s.", op->member, op->image_id);
        return;
    }
    const char **p = arena_zalloc(http_req_arena(req), 2 * sizeof *p);
    p[0] = op->image_id;
    p[1] = op->member;
    img_query(req, "SELECT " MEMBER_COLUMNS " FROM image_members WHERE image_id = $1 "
              "AND member_id = $2", 2, p, one_member, (void *)(intptr_t)200);
}

/* PUT /v2/images/{id}/members/{member} {"status": "accepted"}: only the
 * member itself decides. */
static void
update_step(http_request *req, struct img_req *ir, struct member_op *op)
{
    if (strcmp(op->member, ir->project)) {
        img_error(req, 403, "Only the member itself may change its membership status.");
        return;
    }
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    json_t *j = body ? json_loadb(body, len, 0, NULL) : NULL;
    const char *status = json_string_value(json_object_get(j, "status"));
    if (!status || (strcmp(status, "pending") && strcmp(status, "accepted") &&
                    strcmp(status, "rejected"))) {
        json_decref(j);
        img_error(req, 400, "The body must be {\"status\": \"accepted\"|\"rejected\"|\"pending\"}.");
        return;
    }
    struct arena *mem = http_req_arena(req);
    const char **p = arena_zalloc(mem, 3 * sizeof *p);
    p[0] = op->image_id;
    p[1] = op->member;
    p[2] = arena_strdup(mem, status);
    json_decref(j);
    img_query(req, "UPDATE image_members SET status = $3, updated_at = now() "
              "WHERE image_id = $1 AND member_id = $2 RETURNING " MEMBER_COLUMNS,
              3, p, one_member, (void *)(intptr_t)200);
}

static void
member_removed(http_request *req, struct img_req *ir, db_result *res, void *arg)
{
    if (db_affected(res) == 0) {
        img_error(req, 404, "Member %s not found for image %s.",
                  http_req_param(req, "member"), http_req_param(req, "id"));
        return;
    }
    (void)http_respond(req, 204, NULL, NULL, 0);
}

static void
delete_step(http_request *req, struct img_req *ir, struct member_op *op)
{
    if (!op->is_owner) {
        img_error(req, 403, "Only the image owner may remove members.");
        return;
    }
    const char **p = arena_zalloc(http_req_arena(req), 2 * sizeof *p);
    p[0] = op->image_id;
    p[1] = op->member;
    img_query(req, "DELETE FROM image_members WHERE image_id = $1 AND member_id = $2",
              2, p, member_removed, NULL);
}

static void
members_add(http_request *req, struct img_req *ir)
{
    with_image(req, ir, add_step);
}

static void
members_list(http_request *req, struct img_req *ir)
{
    with_image(req, ir, list_step);
}

static void
members_show(http_request *req, struct img_req *ir)
{
    with_image(req, ir, show_step);
}

static void
members_update(http_request *req, struct img_req *ir)
{
    with_image(req, ir, update_step);
}

static void
members_delete(http_request *req, struct img_req *ir)
{
    with_image(req, ir, delete_step);
}

void
img_members_register(struct img_ctx *ctx)
{
    img_route(ctx, "POST", "/v2/images/{id}/members", members_add, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "GET", "/v2/images/{id}/members", members_list, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "GET", "/v2/images/{id}/members/{member}", members_show, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "PUT", "/v2/images/{id}/members/{member}", members_update, IMG_AUTH_TOKEN, NULL);
    img_route(ctx, "DELETE", "/v2/images/{id}/members/{member}", members_delete, IMG_AUTH_TOKEN, NULL);
}
