/* os-interface: the ports of a server (GET/POST/DELETE
 * /servers/{id}/os-interface[/{port_id}]), which `openstack server add port`,
 * `server add network` and `server remove port` use.
 *
 * Attach and detach are one statement each calling a function of the
 * server-ports migration (compute_interface_attach/detach): the state and
 * lock check of the instance, the port's creation or take-over (network
 * module functions, IPAM included) and its binding to the instance's node
 * are one transaction. */
#include "compute.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "arena.h"
#include "util.h"

#define VISIBLE "i.uuid = $4::uuid AND NOT i.deleted AND ($3::boolean OR i.project_id = $2)"

static void
iface_list(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_SERVERS_SHOW, 4);
    if (!p)
        return;             /* Answered: the arena is gone. */
    compute_run(req, "SELECT jsonb_build_object('interfaceAttachments',"
                     " compute_interfaces_json(i.uuid))::text AS body"
                     " FROM instances i WHERE " VISIBLE, 4, p, compute_server_missing(req, p[3]));
}

static void
iface_show(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_SERVERS_SHOW, 5);
    if (!p)
        return;             /* Answered: the arena is gone. */
    p[4] = http_req_param(req, "port_id");
    if (!p[4] || strlen(p[4]) > COMPUTE_NAME_MAX)
        p[4] = "";
    compute_run(req,
        "SELECT CASE WHEN x.j IS NULL THEN 404 ELSE 200 END AS code,"
        " format('Instance %s does not have a port with id %s', $4, $5) AS message,"
        " jsonb_build_object('interfaceAttachment', x.j)::text AS body"
        " FROM (SELECT (SELECT compute_interface_json(pt) FROM instance_ports ip"
        "   JOIN net.ports pt ON pt.id = ip.port_id"
        "   WHERE ip.instance_uuid = i.uuid AND ip.port_id = $5) AS j"
        "  FROM instances i WHERE " VISIBLE ") x", 5, p, compute_server_missing(req, p[3]));
}

/* The caller's context for the attach/detach functions. */
static const char *
caller(http_request *req, struct api_req *ar)
{
    json_t *c = json_pack("{s:s,s:s,s:s,s:b}", "user_id", ar->token->user_id,
                          "project_id", ar->token->project_id, "request_id", http_req_id(req),
                          "admin", api_is_admin(ar));
    const char *s = compute_json_text(req, c);
    json_decref(c);
    return s;
}

/* Checks the interfaceAttachment of a POST; answers and returns -EINVAL on
 * bad input.  At 2.1 it takes port_id, net_id and fixed_ips (one address). */
static int
check_attachment(http_request *req, json_t *ia)
{
    const char *k;
    json_t *v;
    if (!json_is_object(ia)) {
        api_error(req, 400, "Invalid input for field/attribute interfaceAttachment.");
        return -EINVAL;
    }
    json_object_foreach(ia, k, v) {
        if (strcmp(k, "port_id") && strcmp(k, "net_id") && strcmp(k, "fixed_ips")) {
            api_error(req, 400, "Invalid input for field/attribute interfaceAttachment. "
                      "Additional properties are not allowed ('%s' was unexpected)", k);
            return -EINVAL;
        }
        if (strcmp(k, "fixed_ips")
            && (!json_is_string(v) || !util_is_uuid(json_string_value(v)))) {
            api_error(req, 400, "Invalid input for field/attribute %s. Value must be a UUID.",
                      k);
            return -EINVAL;
        }
    }
    json_t *port = json_object_get(ia, "port_id");
    json_t *net = json_object_get(ia, "net_id");
    json_t *ips = json_object_get(ia, "fixed_ips");
    if (port && net) {
        api_error(req, 400, "Must not input both network_id and port_id");
        return -EINVAL;
    }
    if (ips) {
        json_t *ip = json_object_get(json_array_get(ips, 0), "ip_address");
        unsigned char buf[16];
        if (!json_is_array(ips) || json_array_size(ips) != 1 || !json_is_string(ip)
            || json_object_size(json_array_get(ips, 0)) != 1
            || (inet_pton(AF_INET, json_string_value(ip), buf) != 1
                && inet_pton(AF_INET6, json_string_value(ip), buf) != 1)) {
            api_error(req, 400, "Invalid input for field/attribute fixed_ips: one "
                      "{\"ip_address\"} with a valid address.");
            return -EINVAL;
        }
        if (!net) {
            api_error(req, 400, "Must input network_id when request IP address");
            return -EINVAL;
        }
    }
    return 0;
}

static void
iface_create(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_SERVERS_ACTION, 6);
    if (!p)
        return;             /* Answered: the arena is gone. */
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    /* No interfaceAttachment at all: the one network the project can use. */
    json_t *ia = json_object_get(body, "interfaceAttachment");
    if (!json_is_object(body) || json_object_size(body) != (ia ? 1 : 0)) {
        api_error(req, 400, "Invalid input for field/attribute interfaceAttachment.");
        json_decref(body);
        return;
    }
    if (ia && check_attachment(req, ia) < 0) {
        json_decref(body);
        return;
    }
    p[4] = ia ? compute_json_text(req, ia) : "{}";
    p[5] = caller(req, ar);
    json_decref(body);
    compute_run(req,
        "SELECT (r->>'code')::int AS code, r->>'message' AS message, (r->'body')::text AS body"
        " FROM (SELECT compute_interface_attach($4::uuid, $5::jsonb, $6::jsonb) AS r) x",
        6, p, NULL);
}

static void
iface_delete(http_request *req, struct api_req *ar)
{
    const char **p = compute_server_begin(req, ar, POL_SERVERS_ACTION, 6);
    if (!p)
        return;             /* Answered: the arena is gone. */
    p[4] = http_req_param(req, "port_id");
    if (!p[4] || strlen(p[4]) > COMPUTE_NAME_MAX)
        p[4] = "";
    p[5] = caller(req, ar);
    compute_run(req,
        "SELECT (r->>'code')::int AS code, r->>'message' AS message"
        " FROM (SELECT compute_interface_detach($4::uuid, $5, $6::jsonb) AS r) x",
        6, p, NULL);
}

void
compute_interfaces_register(struct api *a)
{
    api_route(a, API_COMPUTE, "GET", "/v2.1/servers/{id}/os-interface", iface_list);
    api_route(a, API_COMPUTE, "POST", "/v2.1/servers/{id}/os-interface", iface_create);
    api_route(a, API_COMPUTE, "GET", "/v2.1/servers/{id}/os-interface/{port_id}", iface_show);
    api_route(a, API_COMPUTE, "DELETE", "/v2.1/servers/{id}/os-interface/{port_id}",
              iface_delete);
}
