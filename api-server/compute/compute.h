/* The Compute API (Nova v2.1 compatible) on nimbus-api: shared helpers of
 * the compute handlers (compute_*.c).
 *
 * As in identity_admin.c, PostgreSQL builds the JSON and enforces the rules
 * that must hold under concurrency (functions in the compute migration:
 * compute_server_create, compute_server_action, compute_server_json...);
 * the C handlers validate input, check policy and wrap one statement.
 *
 * Every statement a handler runs returns at most one row with the columns
 * "code" (HTTP status, default 200), "body" (the complete JSON answer) and
 * "message" (for 4xx answers); no row means 404. */
#ifndef NIMBUS_COMPUTE_H
#define NIMBUS_COMPUTE_H

#include <jansson.h>
#include <stdbool.h>

#include "api.h"
#include "auth_token.h"

/* Policy operations.  The rows of auth/auth_policy.c that exist are used
 * directly; the others map to the existing row with the same rule until the
 * lead adds them (the wanted row is named in the comment). */
#define POL_SERVERS_CREATE "compute:servers:create"
#define POL_SERVERS_LIST "compute:servers:list"
#define POL_SERVERS_ALL_TENANTS "compute:servers:list:all_tenants"
#define POL_SERVERS_SHOW "compute:servers:show"
#define POL_SERVERS_UPDATE "compute:servers:update"
#define POL_SERVERS_DELETE "compute:servers:delete"
#define POL_SERVERS_ACTION "compute:servers:action"
#define POL_SERVERS_ACTION_ADMIN "compute:servers:action:admin"
#define POL_FLAVORS_CREATE "compute:flavors:create"
#define POL_FLAVORS_DELETE "compute:flavors:delete"
#define POL_FLAVORS_LIST "compute:flavors:list"
#define POL_FLAVORS_SHOW "compute:flavors:show"
#define POL_FLAVORS_MANAGE "compute:flavors:manage"
#define POL_KEYPAIRS "compute:os-keypairs"
#define POL_LIMITS "compute:limits"
#define POL_HYPERVISORS "compute:os-hypervisors"
#define POL_SERVICES "compute:os-services"
#define POL_MIGRATIONS "compute:os-hypervisors"   /* wanted: compute:os-migrations:index (admin) */
#define POL_SERVER_GROUPS "compute:os-server-groups"
#define POL_SERVER_GROUPS_LIST "compute:os-server-groups:list"
#define POL_QUOTAS_SHOW "compute:os-quota-sets:show"
#define POL_QUOTAS_UPDATE "compute:os-quota-sets:update"
#define POL_AZ "compute:os-availability-zone"
#define POL_AZ_DETAIL "compute:os-availability-zone:detail"
#define POL_INSTANCE_ACTIONS "compute:os-instance-actions"

/* Longest name accepted (Nova's columns). */
#define COMPUTE_NAME_MAX 255

/* Version check, authentication and the policy check of 'op' for the
 * caller's own project.  Returns 0, or a negative errno after answering. */
int compute_begin(http_request *req, struct api_req *ar, const char *op)
    __attribute__((warn_unused_result));

/* An arena array of 'n' parameter slots; slot 0 is the compute base URL,
 * 1 the caller's project id, 2 "true"/"false" for admin. */
const char **compute_params(http_request *req, struct api_req *ar, int n);

/* "Instance <id> could not be found." in the request's arena. */
const char *compute_server_missing(http_request *req, const char *id);

/* The {id} of the path when it is a UUID; otherwise answers 404 (a name
 * where an id is expected: the client then looks the name up) and returns
 * NULL. */
const char *compute_server_id(http_request *req);

/* The prologue of every handler of one server (/servers/{id}...):
 * compute_begin() with 'op' (NULL: the version check and authentication
 * only, for a handler that checks its policy later), then compute_params()
 * with 'n' (at least 4) slots, slot 3 the server's id from
 * compute_server_id().  Returns the array (request arena), or NULL after
 * answering (401, 403, 404...; the arena is then gone). */
const char **compute_server_begin(http_request *req, struct api_req *ar, const char *op,
                                  int n) __attribute__((warn_unused_result));

/* Runs 'sql' (see the column convention above); no row answers 404 with
 * 'missing' (arena or static string). */
void compute_run(http_request *req, const char *sql, int nparams,
                 const char **params, const char *missing);

/* api_query() with the parameters typed as text (see compute.c). */
void compute_query(http_request *req, const char *sql, int nparams, const char **params,
                   api_query_cb cb, void *ctx);

/* Serialises 'j' into the request arena (does not take the reference). */
const char *compute_json_text(http_request *req, const json_t *j);

/* Arena copy of a string, NULL-safe. */
const char *compute_dup(http_request *req, const char *s);

/* Query helpers: a string parameter of at most COMPUTE_NAME_MAX bytes, or
 * NULL. */
const char *compute_qp(http_request *req, const char *name);

/* Module registration, one per file. */
void compute_flavors_register(struct api *a);
void compute_keypairs_register(struct api *a);
void compute_servers_register(struct api *a);
void compute_admin_register(struct api *a);
/* os-interface (compute_interfaces.c). */
void compute_interfaces_register(struct api *a);
/* The agent channel (compute_agent.c): its routes, and the long polls it
 * holds, answered at shutdown (stop) and released (free). */
void compute_agent_register(struct api *a);
void compute_agent_stop(struct api *a);
void compute_agent_free(struct api *a);
/* An agent-channel endpoint whose JSON body (at most 1 MiB) goes to the SQL
 * function 'fn'(node, credential, document) (compute_agent.c). */
void compute_agent_document(http_request *req, const char *fn);
/* Remote consoles (compute_console.c): its routes, and the 2.1 actions
 * os-getVNCConsole / os-getSerialConsole of server 'sid' (policy already
 * checked; 'args' is the action's object). */
void compute_console_register(struct api *a);
void compute_console_action(http_request *req, struct api_req *ar, const char *sid,
                            const char *action, json_t *args);

#endif
