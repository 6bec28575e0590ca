/* Remote consoles (docs/compute.md): the 2.1 actions os-getVNCConsole and
 * os-getSerialConsole, POST /servers/{id}/remote-consoles (Nova's 2.6
 * form, served here too because the dashboard uses it), and the agent
 * channel endpoint with which a node's console proxy checks a token.
 *
 * nimbus-api hands out a URL of the instance's node's console proxy (run
 * by nimbus-compute, docs/compute-agent.md) with a random one-time token,
 * good for 10 minutes, of which the database keeps only the SHA-256
 * (compute_console_token in migration 0007).  The proxy sends the token to
 * POST /agent/v1/nodes/{node}/console-token with its node credential and
 * learns which instance and protocol it opens; a used, expired, unknown
 * or other node's token answers 404. */
#include "compute.h"

#include <stdlib.h>
#include <string.h>

#include "arena.h"

/* The protocol of a console type, or NULL when Nimbus has no proxy for it. */
static const char *
console_protocol(const char *type)
{
    if (!strcmp(type, "novnc"))
        return "vnc";
    if (!strcmp(type, "serial"))
        return "serial";
    return NULL;
}

struct console_ctx {
    const char *type;
    const char *protocol;
    bool remote;                   /* remote-consoles shape, else the action's. */
};

static void
console_done(http_request *req, struct api_req *ar, db_result *res, void *arg)
{
    struct console_ctx *cc = arg;
    (void)ar;
    const char *c = db_rows(res) > 0 ? db_getn(res, 0, "code") : NULL;
    int code = c ? atoi(c) : 500;
    if (code != 200) {
        const char *msg = db_getn(res, 0, "message");
        api_error(req, code, "%s", msg ? msg : http_status_text(code));
        return;
    }
    json_t *j = cc->remote
        ? json_pack("{s:{s:s,s:s,s:s}}", "remote_console", "protocol", cc->protocol,
                    "type", cc->type, "url", db_getn(res, 0, "url"))
        : json_pack("{s:{s:s,s:s}}", "console", "type", cc->type,
                    "url", db_getn(res, 0, "url"));
    const char *body = compute_json_text(req, j);
    json_decref(j);
    (void)http_respond(req, 200, "application/json", body, strlen(body));
}

/* Asks for a token of console 'type' of server 'sid' ('p' from
 * compute_params with 5 slots). */
static void
console_token(http_request *req, struct api_req *ar, const char **p, const char *sid,
              const char *type, bool remote)
{
    struct console_ctx *cc = arena_zalloc(http_req_arena(req), sizeof *cc);
    cc->type = compute_dup(req, type);
    cc->protocol = console_protocol(type);
    cc->remote = remote;
    json_t *c = json_pack("{s:s,s:b}", "project_id", ar->token->project_id,
                          "admin", api_is_admin(ar));
    p[3] = sid;
    p[4] = cc->protocol;
    p[5] = compute_json_text(req, c);
    json_decref(c);
    compute_query(req,
        "SELECT r->>'code' AS code, r->>'message' AS message, r->>'url' AS url"
        " FROM compute_console_token($4::uuid, $5, $6::jsonb) r",
        6, p, console_done, cc);
}

void
compute_console_action(http_request *req, struct api_req *ar, const char *sid,
                       const char *action, json_t *args)
{
    const char *want = !strcmp(action, "os-getSerialConsole") ? "serial" : "novnc";
    json_t *t = json_object_get(args, "type");
    const char *type = json_string_value(t);
    if (!type || strlen(type) > 16) {
        api_error(req, 400, "Invalid input for field/attribute type.");
        return;
    }
    if (strcmp(type, want)) {
        api_error(req, 400, "Unavailable console type %s.", compute_dup(req, type));
        return;
    }
    console_token(req, ar, compute_params(req, ar, 6), sid, type, false);
}

static void
remote_consoles(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_SERVERS_ACTION, 6);
    if (!p)
        return;             /* Answered: the arena is gone. */
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *rc = json_object_get(body, "remote_console");
    const char *proto = json_string_value(json_object_get(rc, "protocol"));
    const char *type = json_string_value(json_object_get(rc, "type"));
    if (!json_is_object(rc) || !proto || !type || strlen(proto) > 16 || strlen(type) > 16) {
        api_error(req, 400, "Invalid input for field/attribute remote_console.");
    } else if (!console_protocol(type) || strcmp(console_protocol(type), proto)) {
        api_error(req, 400, "Unavailable console type %s.", compute_dup(req, type));
    } else {
        console_token(req, ar, p, p[3], type, true);
    }
    json_decref(body);
}

/* POST /agent/v1/nodes/{node}/console-token: see the top of the file. */
static void
agent_console_token(http_request *req, struct api_req *ar)
{
    (void)ar;
    compute_agent_document(req, "compute_agent_console_token");
}

void
compute_console_register(struct api *a)
{
    api_route(a, API_COMPUTE, "POST", "/v2.1/servers/{id}/remote-consoles", remote_consoles);
    api_route(a, API_COMPUTE, "POST", "/agent/v1/nodes/{node}/console-token",
              agent_console_token);
}
