/* nimbus-image: the process context shared by the API modules and the
 * helpers they answer with (Glance's error shape, JSON bodies, database
 * errors, authentication). */
#ifndef NIMBUS_IMG_API_H
#define NIMBUS_IMG_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conf.h"
#include "db.h"
#include "http.h"

struct auth_token;
struct auth_verifier;
struct img_route;
struct img_store;

struct img_counters {
    uint64_t uploads_started;
    uint64_t uploads_completed;
    uint64_t uploads_failed;
    uint64_t upload_conflicts;
    uint64_t uploads_rejected;     /* Format check, size limit or quota. */
    uint64_t bytes_uploaded;
    uint64_t downloads;
    uint64_t bytes_downloaded;
    uint64_t auth_failures;
    uint64_t db_unavailable;
};

struct img_ctx {
    uv_loop_t *loop;
    const struct conf *conf;
    db_pool *db;
    http_server *http;
    int port;
    struct auth_verifier *auth;
    struct img_store *store;
    int64_t max_image_size;
    int64_t project_quota;         /* 0: no limit. */
    unsigned uploads_active;
    unsigned downloads_active;
    struct img_counters counters;
    uint64_t started_ns;
    char instance[17];             /* Random id of this process: upload tokens start with it. */
    uv_timer_t recover_timer;      /* Retries the start-up recovery. */
    bool recover_open;
    bool recovering;
    bool recovered;
    struct img_route *routes;      /* Owned route table entries. */
};

/* Per-request state, in the request's arena. */
struct img_req {
    struct img_ctx *ctx;
    struct auth_token *tok;        /* Set by token authentication. */
    const char *project;           /* The token's project ("" if none). */
    bool admin;
    /* Set instead of 'tok' when a compute node authenticated with its
     * node credential (Authorization: Bearer, table agent_nodes): the
     * node's name.  Only routes registered with IMG_AUTH_NODE see it. */
    const char *node;
    const struct img_route *route; /* The route being served. */
};

/* Who may call a route. */
#define IMG_AUTH_NONE 0u           /* Anyone (discovery, health). */
#define IMG_AUTH_TOKEN 1u          /* A valid X-Auth-Token. */
#define IMG_AUTH_NODE 2u           /* Also a node credential (read-only routes). */
/* Longest node credential looked up (nimbus-manage makes 64 characters). */
#define IMG_NODE_SECRET_MAX 256

typedef void (*img_handler_fn)(http_request *req, struct img_req *ir);

/* Builds the listener and routes, sweeps the store and starts listening.
 * 'ctx' is filled by the caller with loop, conf, db, auth and store.
 * Returns 0 or a negative errno (logged). */
int img_api_start(struct img_ctx *ctx) __attribute__((warn_unused_result));
void img_api_shutdown(struct img_ctx *ctx, void (*done)(void *arg), void *arg);
void img_api_free(struct img_ctx *ctx);

/* Adds a route whose handler runs after authentication ('auth', IMG_AUTH_*
 * flags) with the request's img_req.  A valid node credential on a route
 * without IMG_AUTH_NODE gets 403, an unknown or revoked one 401.  Aborts
 * on failure (start-up only). */
void img_route(struct img_ctx *ctx, const char *method, const char *pattern,
               img_handler_fn fn, unsigned auth, const struct http_route_opts *opts);

struct img_req *img_req(http_request *req);

/* The body form of an error for an Accept header (NULL: absent), as webob
 * chooses it for Glance. */
enum img_error_form { IMG_ERROR_JSON, IMG_ERROR_HTML, IMG_ERROR_TEXT };
enum img_error_form img_error_form(const char *accept);

/* Answers in Glance's error shape: for Accept: application/json webob's
 * JSON form {"message": "...<br /><br />\n\n\n", "code": "404 Not Found",
 * "title": "Not Found"}; webob's HTML page when text/html is preferred
 * (Accept: * / *, as curl sends); webob's plain text otherwise (no Accept
 * header). */
void img_error(http_request *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Answers with 'body' serialised (takes the reference; NULL: no body). */
void img_reply_json(http_request *req, int status, json_t *body);
/* Answers a failed database call: 503 when unavailable, 409 for unique
 * violations, 400 for data errors, else 500 (logged). */
void img_db_error(http_request *req, int status, const struct db_error *err);

/* Runs a query for a request; on failure answers with img_db_error() and
 * 'cb' is not called.  'params' must stay valid until the callback. */
typedef void (*img_query_cb)(http_request *req, struct img_req *ir,
                             db_result *res, void *arg);
void img_query(http_request *req, const char *sql, int nparams,
               const char *const *params, img_query_cb cb, void *arg);

/* The image columns every image query selects, in the order
 * img_image_json() reads them by name.  'images' must be the table alias
 * "i". */
#define IMG_COLUMNS \
    "i.id, i.name, i.status, i.visibility, i.protected, i.os_hidden, " \
    "i.checksum, i.os_hash_algo, i.os_hash_value, i.size, i.virtual_size, " \
    "i.disk_format, i.container_format, i.min_disk, i.min_ram, i.owner, " \
    "array_to_json(i.tags)::text AS tags, i.properties::text AS properties, " \
    "to_char(i.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at, " \
    "to_char(i.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS updated_at"

/* The image as Glance shows it, from row 'row' of a result selected with
 * IMG_COLUMNS.  The caller owns the result. */
json_t *img_image_json(const db_result *res, int row);

/* SQL condition (on alias "i", parameter $'pn' = the caller's project) for
 * "the caller may see this image": owner, public, community, or a member
 * of a shared image.  Static string with "%d" placeholders filled by the
 * caller through arena_printf(). */
#define IMG_VISIBLE_SQL \
    "(i.owner = $%d OR i.visibility IN ('public', 'community') OR " \
    "(i.visibility = 'shared' AND EXISTS (SELECT 1 FROM image_members m " \
    "WHERE m.image_id = i.id AND m.member_id = $%d)))"

/* SQL condition (on alias "i", parameter $'pn' = the node's name) for
 * "a compute node may read this image": it is active and it is the image,
 * the kernel or the ramdisk of an instance scheduled to that node, or of
 * the image it is rescued with (migration 0014), or of an instance whose
 * live migration that node prepares for (migration 0015).  Filled
 * through arena_printf() with 'pn' once. */
#define IMG_NODE_SQL \
    "(i.status = 'active' AND EXISTS (SELECT 1 FROM instances s " \
    "CROSS JOIN LATERAL unnest(ARRAY[s.image_ref, s.rescue_image_ref]) AS r(ref) " \
    "LEFT JOIN images b ON r.ref ~ '^[0-9a-fA-F-]{36}$' AND b.id = r.ref::uuid " \
    "WHERE $%d IN (s.node, CASE WHEN s.move_held_state = 'live_dest' " \
    "THEN s.move_held_node END) AND NOT s.deleted AND (lower(r.ref) = i.id::text " \
    "OR lower(b.properties->>'kernel_id') = i.id::text " \
    "OR lower(b.properties->>'ramdisk_id') = i.id::text)))"

/* Import methods offered (GET /v2/info/import, the OpenStack-image-import-
 * methods header) and the id of the one store (GET /v2/info/stores). */
#define IMG_IMPORT_METHODS "glance-direct"
#define IMG_STORE_ID "file"

/* Module entry points. */
void img_images_register(struct img_ctx *ctx);
void img_members_register(struct img_ctx *ctx);
void img_data_register(struct img_ctx *ctx);

/* True when the caller may change the image owned by 'owner'. */
bool img_may_modify(const struct img_req *ir, const char *owner);

/* Loads image 'id' with 'select' ("SELECT <columns> FROM images i"; NULL:
 * the IMG_COLUMNS) if the caller may see it: any image for admins,
 * IMG_NODE_SQL's for a node credential, IMG_VISIBLE_SQL's otherwise; then
 * calls 'cb' with the row (no row: not visible).  A missing or non-UUID
 * id answers 404 (so that clients fall back to a lookup by name) and 'cb'
 * is not called.  'id' and 'select' must live as long as the request. */
void img_load_visible(http_request *req, struct img_req *ir, const char *id,
                      const char *select, img_query_cb cb, void *arg);

/* The checks of a change to an image loaded by img_load_visible(): 404
 * without a row; 403 "You are not permitted to <what>." unless the caller
 * may change it (img_may_modify) and policy 'op' allows it.  Returns 0, or
 * a negative errno after answering. */
int img_may_change_loaded(http_request *req, struct img_req *ir, db_result *res,
                          const char *op, const char *what)
    __attribute__((warn_unused_result));

#endif
