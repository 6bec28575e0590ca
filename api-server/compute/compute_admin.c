/* Project and cloud resources of the Compute API: server groups, quota
 * sets, limits, hypervisors, services and availability zones. */
#include "compute.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "arena.h"
#include "util.h"

/* A host is up when it heart-beat within this many seconds and is not
 * forced down (Nova's service_down_time). */
#define SERVICE_DOWN_TIME "60"

/* ---- os-server-groups (2.1: "policies" list and "metadata"). */

#define GROUP_JSON \
    "jsonb_build_object('id', g.uuid, 'name', g.name, 'policies', jsonb_build_array(g.policy)," \
    " 'members', coalesce((SELECT jsonb_agg(m.uuid ORDER BY m.created_at) FROM instances m" \
    "  WHERE m.server_group = g.uuid AND NOT m.deleted), '[]'), 'metadata', '{}'::jsonb)"

static const char *
group_missing(http_request *req, const char *id)
{
    return arena_printf(http_req_arena(req), "Instance group %s could not be found.",
                        id ? id : "");
}

static void
groups_list(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_SERVER_GROUPS_LIST) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    const char *all = http_req_query_param(req, "all_projects");
    p[3] = api_is_admin(ar) && all && strcasecmp(all, "false") && strcmp(all, "0")
           ? "true" : "false";
    compute_run(req,
        "SELECT jsonb_build_object('server_groups', coalesce(jsonb_agg(" GROUP_JSON
        " ORDER BY g.created_at), '[]'))::text AS body FROM server_groups g"
        " WHERE $4::boolean OR g.project_id = $2", 4, p, NULL);
}

static void
groups_show(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_SERVER_GROUPS_LIST) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    p[3] = http_req_param(req, "id");
    if (!util_is_uuid(p[3])) {
        api_error(req, 404, "%s", group_missing(req, p[3]));
        return;
    }
    compute_run(req,
        "SELECT jsonb_build_object('server_group', " GROUP_JSON ")::text AS body"
        " FROM server_groups g WHERE g.uuid = $4::uuid AND ($3::boolean OR g.project_id = $2)",
        4, p, group_missing(req, p[3]));
}

static void
groups_create(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_SERVER_GROUPS) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    const char **p = compute_params(req, ar, 7);
    json_t *g = json_object_get(body, "server_group");
    json_t *name = json_object_get(g, "name");
    json_t *pol = json_object_get(g, "policies");
    json_t *p0 = json_array_get(pol, 0);
    const char *k;
    json_t *v;
    if (!json_is_object(g) || !json_is_string(name) || !*json_string_value(name)
        || strlen(json_string_value(name)) > COMPUTE_NAME_MAX) {
        api_error(req, 400, "Invalid input for field/attribute name.");
        goto out;
    }
    json_object_foreach(g, k, v) {
        if (strcmp(k, "name") && strcmp(k, "policies")) {
            api_error(req, 400, "Invalid input for field/attribute server_group. Additional "
                      "properties are not allowed ('%s' was unexpected)", k);
            goto out;
        }
    }
    const char *ps = json_string_value(p0);
    if (!json_is_array(pol) || json_array_size(pol) != 1 || !ps
        || (strcmp(ps, "affinity") && strcmp(ps, "anti-affinity")
            && strcmp(ps, "soft-affinity") && strcmp(ps, "soft-anti-affinity"))) {
        api_error(req, 400, "Invalid input for field/attribute policies. Value must be one of "
                  "affinity, anti-affinity, soft-affinity, soft-anti-affinity.");
        goto out;
    }
    char *id = arena_alloc(http_req_arena(req), 37);
    util_uuid4(id);
    p[3] = id;
    p[4] = compute_dup(req, json_string_value(name));
    p[5] = compute_dup(req, ps);
    p[6] = ar->token->user_id;
    compute_run(req,
        "WITH n AS (SELECT count(*) AS c FROM server_groups WHERE project_id = $2),"
        " ins AS (INSERT INTO server_groups (uuid, name, policy, project_id, user_id)"
        "  SELECT $4::uuid, $5, $6, $2, $7 FROM n WHERE compute_quota_limit($2, 'server_groups')"
        "  < 0 OR n.c < compute_quota_limit($2, 'server_groups') RETURNING *)"
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM ins) THEN 200 ELSE 403 END AS code,"
        " 'Quota exceeded, too many server groups.' AS message,"
        " (SELECT jsonb_build_object('server_group', jsonb_build_object('id', g.uuid, 'name',"
        "  g.name, 'policies', jsonb_build_array(g.policy), 'members', '[]'::jsonb,"
        "  'metadata', '{}'::jsonb)) FROM ins g)::text AS body", 7, p, NULL);
out:
    json_decref(body);
}

static void
groups_delete(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_SERVER_GROUPS) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    p[3] = http_req_param(req, "id");
    if (!util_is_uuid(p[3])) {
        api_error(req, 404, "%s", group_missing(req, p[3]));
        return;
    }
    compute_run(req,
        "DELETE FROM server_groups g WHERE g.uuid = $4::uuid AND ($3::boolean OR"
        " g.project_id = $2) RETURNING 204 AS code", 4, p, group_missing(req, p[3]));
}

/* ---- os-quota-sets. */

#define QUOTA_RESOURCES \
    "ARRAY['cores', 'fixed_ips', 'floating_ips', 'injected_file_content_bytes'," \
    " 'injected_file_path_bytes', 'injected_files', 'instances', 'key_pairs'," \
    " 'metadata_items', 'ram', 'security_group_rules', 'security_groups'," \
    " 'server_group_members', 'server_groups']"

/* The usage of one resource for a project ($4). */
#define QUOTA_IN_USE \
    "CASE r WHEN 'instances' THEN (SELECT count(*) FROM instances WHERE project_id = $4" \
    "  AND NOT deleted)" \
    " WHEN 'cores' THEN (SELECT coalesce(sum(vcpus), 0) FROM instances WHERE project_id = $4" \
    "  AND NOT deleted)" \
    " WHEN 'ram' THEN (SELECT coalesce(sum(memory_mb), 0) FROM instances WHERE project_id = $4" \
    "  AND NOT deleted)" \
    " WHEN 'server_groups' THEN (SELECT count(*) FROM server_groups WHERE project_id = $4)" \
    " WHEN 'key_pairs' THEN 0 ELSE 0 END"

static int
quota_target(http_request *req, struct api_req *ar, const char **out)
{
    const char *t = http_req_param(req, "tenant_id");
    if (!t || strlen(t) > 64) {
        api_error(req, 404, "Project could not be found.");
        return -ENOENT;
    }
    if (!api_is_admin(ar) && strcmp(t, ar->token->project_id)) {
        api_error(req, 403, "Policy doesn't allow os_compute_api:os-quota-sets:show to be "
                  "performed.");
        return -EACCES;
    }
    *out = t;
    return 0;
}

static void
quotas_show_common(http_request *req, struct api_req *ar, bool detail)
{
    if (compute_begin(req, ar, POL_QUOTAS_SHOW) < 0)
        return;
    const char **p = compute_params(req, ar, 5);
    if (quota_target(req, ar, &p[3]) < 0)
        return;
    p[4] = detail ? "true" : "false";
    compute_run(req,
        "SELECT jsonb_build_object('quota_set', jsonb_build_object('id', $4) ||"
        " (SELECT jsonb_object_agg(r, CASE WHEN $5::boolean THEN jsonb_build_object("
        "   'limit', compute_quota_limit($4, r), 'in_use', " QUOTA_IN_USE ", 'reserved', 0)"
        "   ELSE to_jsonb(compute_quota_limit($4, r)) END)"
        "  FROM unnest(" QUOTA_RESOURCES ") r))::text AS body", 5, p, NULL);
}

static void
quotas_show(http_request *req, struct api_req *ar)
{
    quotas_show_common(req, ar, false);
}

static void
quotas_detail(http_request *req, struct api_req *ar)
{
    quotas_show_common(req, ar, true);
}

static void
quotas_defaults(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_QUOTAS_SHOW) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    if (quota_target(req, ar, &p[3]) < 0)
        return;
    compute_run(req,
        "SELECT jsonb_build_object('quota_set', jsonb_build_object('id', $4) ||"
        " (SELECT jsonb_object_agg(d.resource, d.hard_limit) FROM quota_defaults d"
        "  WHERE d.resource = ANY (" QUOTA_RESOURCES ")))::text AS body", 4, p, NULL);
}

static void
quotas_update(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_QUOTAS_UPDATE) < 0)
        return;
    const char **p = compute_params(req, ar, 6);
    if (quota_target(req, ar, &p[3]) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    json_t *qs = json_object_get(body, "quota_set");
    json_t *clean = json_object();
    const char *k;
    json_t *v;
    static const char *const known[] = {
        "cores", "fixed_ips", "floating_ips", "injected_file_content_bytes",
        "injected_file_path_bytes", "injected_files", "instances", "key_pairs",
        "metadata_items", "ram", "security_group_rules", "security_groups",
        "server_group_members", "server_groups",
    };
    bool force = false;
    if (!json_is_object(qs)) {
        api_error(req, 400, "Invalid input for field/attribute quota_set.");
        goto out;
    }
    json_object_foreach(qs, k, v) {
        if (!strcmp(k, "force")) {
            force = json_is_true(v) || (json_is_string(v) && !strcasecmp(json_string_value(v), "true"));
            continue;
        }
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok = ok || !strcmp(k, known[i]);
        long n;
        if (json_is_integer(v))
            n = (long)json_integer_value(v);
        else if (json_is_string(v) && *json_string_value(v))
            n = strtol(json_string_value(v), NULL, 10);
        else
            ok = false;
        if (!ok || n < -1 || n > 2147483647) {
            api_error(req, 400, "Invalid input for field/attribute %s in quota_set.", k);
            goto out;
        }
        json_object_set_new(clean, k, json_integer(n));
    }
    (void)force;
    p[4] = compute_json_text(req, clean);
    compute_run(req,
        "WITH up AS (INSERT INTO quotas (project_id, resource, hard_limit)"
        "  SELECT $4, key, value::int FROM jsonb_each_text($5::jsonb)"
        "  ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = EXCLUDED.hard_limit"
        "  RETURNING resource, hard_limit)"
        "SELECT jsonb_build_object('quota_set', (SELECT jsonb_object_agg(r,"
        "  coalesce((SELECT hard_limit FROM up WHERE resource = r), compute_quota_limit($4, r)))"
        "  FROM unnest(" QUOTA_RESOURCES ") r))::text AS body", 5, p, NULL);
out:
    json_decref(clean);
    json_decref(body);
}

static void
quotas_delete(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_QUOTAS_UPDATE) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    if (quota_target(req, ar, &p[3]) < 0)
        return;
    compute_run(req, "WITH d AS (DELETE FROM quotas WHERE project_id = $4 RETURNING 1)"
                     " SELECT 202 AS code, (SELECT count(*) FROM d) AS n", 4, p, NULL);
}

/* ---- limits. */

static void
limits_show(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_LIMITS) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    const char *t = http_req_query_param(req, "tenant_id");
    p[3] = t && api_is_admin(ar) && strlen(t) <= 64 ? t : ar->token->project_id;
    compute_run(req,
        "SELECT jsonb_build_object('limits', jsonb_build_object('rate', '[]'::jsonb,"
        " 'absolute', jsonb_build_object("
        "  'maxServerMeta', compute_quota_limit($4, 'metadata_items'),"
        "  'maxPersonality', compute_quota_limit($4, 'injected_files'),"
        "  'maxPersonalitySize', compute_quota_limit($4, 'injected_file_content_bytes'),"
        "  'maxImageMeta', compute_quota_limit($4, 'metadata_items'),"
        "  'maxTotalKeypairs', compute_quota_limit($4, 'key_pairs'),"
        "  'maxSecurityGroupRules', compute_quota_limit($4, 'security_group_rules'),"
        "  'maxSecurityGroups', compute_quota_limit($4, 'security_groups'),"
        "  'maxServerGroups', compute_quota_limit($4, 'server_groups'),"
        "  'maxServerGroupMembers', compute_quota_limit($4, 'server_group_members'),"
        "  'maxTotalCores', compute_quota_limit($4, 'cores'),"
        "  'maxTotalInstances', compute_quota_limit($4, 'instances'),"
        "  'maxTotalRAMSize', compute_quota_limit($4, 'ram'),"
        "  'maxTotalFloatingIps', compute_quota_limit($4, 'floating_ips'),"
        "  'totalServerGroupsUsed', (SELECT count(*) FROM server_groups WHERE project_id = $4),"
        "  'totalCoresUsed', coalesce(u.cores, 0), 'totalRAMUsed', coalesce(u.ram, 0),"
        "  'totalInstancesUsed', coalesce(u.instances, 0),"
        "  'totalFloatingIpsUsed', 0, 'totalSecurityGroupsUsed', 0)))::text AS body"
        " FROM (SELECT 1) one LEFT JOIN quota_usage u ON u.project_id = $4", 4, p, NULL);
}

/* ---- os-hypervisors. */

#define HV_UP \
    "(NOT n.forced_down AND n.last_heartbeat > now() - interval '" SERVICE_DOWN_TIME " seconds')"

#define HV_SHORT \
    "jsonb_build_object('id', n.id, 'hypervisor_hostname', n.hypervisor_hostname," \
    " 'state', CASE WHEN " HV_UP " THEN 'up' ELSE 'down' END," \
    " 'status', CASE WHEN n.disabled THEN 'disabled' ELSE 'enabled' END)"

#define HV_DETAIL \
    HV_SHORT " || jsonb_build_object('cpu_info', jsonb_build_object('arch', n.architecture)::text," \
    " 'current_workload', 0, 'disk_available_least', n.local_gb - n.local_gb_used," \
    " 'free_disk_gb', n.local_gb - n.local_gb_used, 'free_ram_mb', n.memory_mb - n.memory_mb_used," \
    " 'host_ip', n.host_ip, 'hypervisor_type', n.hypervisor_type," \
    " 'hypervisor_version', n.hypervisor_version, 'local_gb', n.local_gb," \
    " 'local_gb_used', n.local_gb_used, 'memory_mb', n.memory_mb," \
    " 'memory_mb_used', n.memory_mb_used, 'running_vms', n.running_vms," \
    " 'vcpus', n.vcpus, 'vcpus_used', n.vcpus_used," \
    " 'service', jsonb_build_object('host', n.host, 'id', n.id, 'disabled_reason'," \
    "  n.disabled_reason))"

static void
hv_list_common(http_request *req, struct api_req *ar, bool detail)
{
    if (compute_begin(req, ar, POL_HYPERVISORS) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    p[3] = detail ? "true" : "false";
    compute_run(req,
        "SELECT jsonb_build_object('hypervisors', coalesce(jsonb_agg(CASE WHEN $4::boolean"
        " THEN " HV_DETAIL " ELSE " HV_SHORT " END ORDER BY n.id), '[]'))::text AS body"
        " FROM compute_nodes n", 4, p, NULL);
}

static void
hv_list(http_request *req, struct api_req *ar)
{
    hv_list_common(req, ar, false);
}

static void
hv_detail(http_request *req, struct api_req *ar)
{
    hv_list_common(req, ar, true);
}

static void
hv_show(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_HYPERVISORS) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    const char *id = http_req_param(req, "id");
    const char *missing = arena_printf(http_req_arena(req), "Hypervisor with ID '%s' could "
                                       "not be found.", id ? id : "");
    if (!id || !*id || strlen(id) > 18 || strspn(id, "0123456789") != strlen(id)) {
        api_error(req, 404, "%s", missing);
        return;
    }
    p[3] = id;
    compute_run(req, "SELECT jsonb_build_object('hypervisor', " HV_DETAIL ")::text AS body"
                     " FROM compute_nodes n WHERE n.id = $4::bigint", 4, p, missing);
}

static void
hv_statistics(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_HYPERVISORS) < 0)
        return;
    const char **p = compute_params(req, ar, 3);
    compute_run(req,
        "SELECT jsonb_build_object('hypervisor_statistics', jsonb_build_object("
        " 'count', count(*), 'current_workload', 0,"
        " 'disk_available_least', coalesce(sum(local_gb - local_gb_used), 0),"
        " 'free_disk_gb', coalesce(sum(local_gb - local_gb_used), 0),"
        " 'free_ram_mb', coalesce(sum(memory_mb - memory_mb_used), 0),"
        " 'local_gb', coalesce(sum(local_gb), 0), 'local_gb_used', coalesce(sum(local_gb_used), 0),"
        " 'memory_mb', coalesce(sum(memory_mb), 0),"
        " 'memory_mb_used', coalesce(sum(memory_mb_used), 0),"
        " 'running_vms', coalesce(sum(running_vms), 0), 'vcpus', coalesce(sum(vcpus), 0),"
        " 'vcpus_used', coalesce(sum(vcpus_used), 0)))::text AS body FROM compute_nodes",
        3, p, NULL);
}

/* ---- os-migrations (admin): one row per move of a server between
 * hosts (migration 0013), newest first; filters host, status,
 * instance_uuid. */
static void
migrations_list(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_MIGRATIONS) < 0)
        return;
    const char **p = compute_params(req, ar, 6);
    p[3] = compute_qp(req, "host");
    p[4] = compute_qp(req, "status");
    p[5] = compute_qp(req, "instance_uuid");
    for (int i = 3; i < 6; i++)
        if (p[i] && strlen(p[i]) > COMPUTE_NAME_MAX) {
            api_error(req, 400, "Invalid input for query parameters.");
            return;
        }
    compute_run(req, "SELECT compute_migrations_json($4, $5, $6)::text AS body", 6, p, NULL);
}

/* ---- os-services: nova-compute rows are the compute nodes (one per
 * host), nova-scheduler rows the registered schedulers. */

#define SERVICES_ROWS \
    "SELECT n.id, 'nova-compute' AS binary, n.host, n.availability_zone AS zone," \
    "  n.disabled, n.disabled_reason, n.forced_down, n.last_heartbeat, n.updated_at" \
    " FROM compute_nodes n" \
    " UNION ALL SELECT 1000000000 + s.id, 'nova-scheduler', s.host, 'internal', s.disabled," \
    "  s.disabled_reason, s.forced_down, s.last_heartbeat, s.last_heartbeat" \
    " FROM scheduler_services s"

static void
services_list(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_SERVICES) < 0)
        return;
    const char **p = compute_params(req, ar, 5);
    p[3] = compute_qp(req, "host");
    p[4] = compute_qp(req, "binary");
    compute_run(req,
        "SELECT jsonb_build_object('services', coalesce(jsonb_agg(jsonb_build_object("
        " 'id', s.id, 'binary', s.binary, 'host', s.host, 'zone', s.zone,"
        " 'status', CASE WHEN s.disabled THEN 'disabled' ELSE 'enabled' END,"
        " 'state', CASE WHEN NOT s.forced_down AND s.last_heartbeat > now() - interval '"
        SERVICE_DOWN_TIME " seconds' THEN 'up' ELSE 'down' END,"
        " 'updated_at', compute_ts_usec(coalesce(s.last_heartbeat, s.updated_at)),"
        " 'disabled_reason', s.disabled_reason) ORDER BY s.id), '[]'))::text AS body"
        " FROM (" SERVICES_ROWS ") s WHERE ($4::text IS NULL OR s.host = $4)"
        " AND ($5::text IS NULL OR s.binary = $5)", 5, p, NULL);
}

/* PUT /os-services/{action}: enable, disable, disable-log-reason,
 * force-down. */
static void
services_update(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_SERVICES) < 0)
        return;
    const char *action = http_req_param(req, "action");
    if (strcmp(action, "enable") && strcmp(action, "disable")
        && strcmp(action, "disable-log-reason") && strcmp(action, "force-down")) {
        api_error(req, 404, "Unknown action");
        return;
    }
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    const char **p = compute_params(req, ar, 8);
    json_t *host = json_object_get(body, "host");
    json_t *bin = json_object_get(body, "binary");
    json_t *reason = json_object_get(body, "disabled_reason");
    json_t *fd = json_object_get(body, "forced_down");
    if (!json_is_string(host) || !json_is_string(bin)
        || strlen(json_string_value(host)) > COMPUTE_NAME_MAX) {
        api_error(req, 400, "Invalid input: host and binary are required.");
        goto out;
    }
    if (!strcmp(action, "disable-log-reason") && (!json_is_string(reason)
        || !*json_string_value(reason) || strlen(json_string_value(reason)) > 255)) {
        api_error(req, 400, "Invalid input for field/attribute disabled_reason.");
        goto out;
    }
    if (!strcmp(action, "force-down") && !json_is_boolean(fd)) {
        api_error(req, 400, "Invalid input for field/attribute forced_down.");
        goto out;
    }
    p[3] = compute_dup(req, action);
    p[4] = compute_dup(req, json_string_value(host));
    p[5] = compute_dup(req, json_string_value(bin));
    p[6] = json_is_string(reason) ? compute_dup(req, json_string_value(reason)) : NULL;
    p[7] = json_is_true(fd) ? "true" : "false";
    compute_run(req,
        "WITH n AS (UPDATE compute_nodes SET"
        "   disabled = CASE $4 WHEN 'enable' THEN false WHEN 'force-down' THEN disabled"
        "              ELSE true END,"
        "   disabled_reason = CASE $4 WHEN 'enable' THEN NULL WHEN 'disable-log-reason' THEN $7"
        "              WHEN 'disable' THEN NULL ELSE disabled_reason END,"
        "   forced_down = CASE $4 WHEN 'force-down' THEN $8::boolean ELSE forced_down END,"
        "   updated_at = now()"
        "  WHERE host = $5 AND $6 = 'nova-compute' RETURNING 1),"
        " s AS (UPDATE scheduler_services SET"
        "   disabled = CASE $4 WHEN 'enable' THEN false WHEN 'force-down' THEN disabled"
        "              ELSE true END,"
        "   disabled_reason = CASE $4 WHEN 'disable-log-reason' THEN $7 ELSE NULL END,"
        "   forced_down = CASE $4 WHEN 'force-down' THEN $8::boolean ELSE forced_down END"
        "  WHERE host = $5 AND $6 = 'nova-scheduler' RETURNING 1)"
        "SELECT CASE WHEN (SELECT count(*) FROM n) + (SELECT count(*) FROM s) = 0 THEN 404"
        "  ELSE 200 END AS code,"
        " 'Host ''' || $5 || ''' with binary ''' || $6 || ''' could not be found.' AS message,"
        " jsonb_build_object('service', jsonb_build_object('host', $5, 'binary', $6) ||"
        "  CASE $4 WHEN 'force-down' THEN jsonb_build_object('forced_down', $8::boolean)"
        "  WHEN 'enable' THEN jsonb_build_object('status', 'enabled')"
        "  WHEN 'disable' THEN jsonb_build_object('status', 'disabled')"
        "  ELSE jsonb_build_object('status', 'disabled', 'disabled_reason', $7) END)::text"
        " AS body", 8, p, NULL);
out:
    json_decref(body);
}

/* ---- os-availability-zone. */

static void
az_list(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_AZ) < 0)
        return;
    const char **p = compute_params(req, ar, 3);
    compute_run(req,
        "SELECT jsonb_build_object('availabilityZoneInfo', coalesce(jsonb_agg("
        " jsonb_build_object('zoneName', z.az, 'zoneState', jsonb_build_object('available',"
        " z.up), 'hosts', NULL) ORDER BY z.az), '[]'))::text AS body FROM ("
        " SELECT n.availability_zone AS az, bool_or(NOT n.disabled AND " HV_UP ") AS up"
        " FROM compute_nodes n GROUP BY n.availability_zone) z", 3, p, NULL);
}

static void
az_detail(http_request *req, struct api_req *ar)
{
    if (compute_begin(req, ar, POL_AZ_DETAIL) < 0)
        return;
    const char **p = compute_params(req, ar, 3);
    compute_run(req,
        "SELECT jsonb_build_object('availabilityZoneInfo', coalesce(jsonb_agg("
        " jsonb_build_object('zoneName', z.zone, 'zoneState', jsonb_build_object('available',"
        " z.up), 'hosts', z.hosts) ORDER BY z.zone), '[]'))::text AS body FROM ("
        " SELECT s.zone, bool_or(NOT s.disabled AND s.up) AS up,"
        "  jsonb_object_agg(s.host, jsonb_build_object(s.binary, jsonb_build_object("
        "   'available', s.up, 'active', NOT s.disabled, 'updated_at',"
        "   compute_ts_usec(s.last_heartbeat)))) AS hosts"
        " FROM (SELECT x.*, NOT x.forced_down AND x.last_heartbeat > now() - interval '"
        SERVICE_DOWN_TIME " seconds' AS up FROM (" SERVICES_ROWS ") x) s GROUP BY s.zone) z",
        3, p, NULL);
}

void
compute_admin_register(struct api *a)
{
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-server-groups", groups_list);
    api_route(a, API_COMPUTE, "POST", "/v2.1/os-server-groups", groups_create);
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-server-groups/{id}", groups_show);
    api_route(a, API_COMPUTE, "DELETE", "/v2.1/os-server-groups/{id}", groups_delete);
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-quota-sets/{tenant_id}", quotas_show);
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-quota-sets/{tenant_id}/detail", quotas_detail);
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-quota-sets/{tenant_id}/defaults",
              quotas_defaults);
    api_route(a, API_COMPUTE, "PUT", "/v2.1/os-quota-sets/{tenant_id}", quotas_update);
    api_route(a, API_COMPUTE, "DELETE", "/v2.1/os-quota-sets/{tenant_id}", quotas_delete);
    api_route(a, API_COMPUTE, "GET", "/v2.1/limits", limits_show);
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-hypervisors", hv_list);
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-hypervisors/detail", hv_detail);
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-hypervisors/statistics", hv_statistics);
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-hypervisors/{id}", hv_show);
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-migrations", migrations_list);
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-services", services_list);
    api_route(a, API_COMPUTE, "PUT", "/v2.1/os-services/{action}", services_update);
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-availability-zone", az_list);
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-availability-zone/detail", az_detail);
}
