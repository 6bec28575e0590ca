/* The database side of scheduling, on one synchronous connection (run on a
 * worker thread by main.c).
 *
 * 1. Lease a batch of build requests: one UPDATE over a SELECT ... FOR
 *    UPDATE SKIP LOCKED, so schedulers never take the same request, and a
 *    lease left by a dead scheduler expires.
 * 2. For each request choose hosts from the in-memory view, then claim with
 *    ONE conditional UPDATE of compute_nodes (used + requested <= total x
 *    ratio) that in the same statement binds the instance to the host and
 *    deletes its build request.  No other row lock is held meanwhile, so
 *    schedulers cannot deadlock and can never overbook.  A lost race
 *    refreshes that host and decides again.
 * 3. Requests of a server group run in a transaction that first locks the
 *    group row, so two members are never placed at the same time and the
 *    (anti-)affinity check sees the other members' hosts. */
#include "sched_core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

static int
exec(struct sched_ctx *s, const char *sql, int n, const char *const *p, db_result **out)
{
    struct db_error err;
    int rc = db_sync_exec(s->conn, sql, n, p, out, &err);
    if (rc < 0) {
        s->counters.errors++;
        log_warn("sched", "database error %d %s: %s", rc, err.sqlstate,
                 err.message ? err.message : "");
    }
    return rc;
}

int
sched_load_hosts(struct sched_ctx *s)
{
    db_result *r = NULL;
    int rc = exec(s, "SELECT " SCHED_HOST_COLUMNS " FROM compute_nodes ORDER BY id", 0, NULL,
                  &r);
    if (rc < 0)
        return rc;
    sched_hosts_free(&s->hosts);
    rc = sched_hosts_update(&s->hosts, r, 0);
    db_result_free(r);
    s->hosts_loaded = rc == 0;
    return rc;
}

int
sched_refresh_hosts(struct sched_ctx *s, const int64_t *ids, size_t n)
{
    if (!n)
        return 0;
    size_t len = n * 21 + 3;
    char *arr = malloc(len);
    if (!arr)
        return -ENOMEM;
    size_t off = 0;
    arr[off++] = '{';
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(arr + off, len - off, "%s%lld", i ? "," : "", (long long)ids[i]);
    snprintf(arr + off, len - off, "}");
    const char *p[1] = { arr };
    db_result *r = NULL;
    int rc = exec(s, "SELECT " SCHED_HOST_COLUMNS " FROM compute_nodes"
                     " WHERE id = ANY ($1::bigint[]) ORDER BY id", 1, p, &r);
    free(arr);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        struct sched_host *h = sched_hosts_find(&s->hosts, ids[i]);
        if (h)
            h->present = false;    /* Back to true if the row is returned. */
    }
    rc = sched_hosts_update(&s->hosts, r, 0);
    db_result_free(r);
    return rc;
}

/* Fills the group's member hosts and the hint hosts of 'rq'. */
static int
resolve_hosts(struct sched_ctx *s, struct sched_request *rq)
{
    db_result *r = NULL;
    int rc;
    if (rq->group[0]) {
        const char *p[2] = { rq->group, rq->instance };
        rc = exec(s, "SELECT host FROM instances WHERE server_group = $1::uuid"
                     " AND host IS NOT NULL AND NOT deleted AND uuid <> $2::uuid LIMIT 256",
                  2, p, &r);
        if (rc < 0)
            return rc;
        for (int i = 0; i < db_rows(r) && rq->n_group_hosts < SCHED_MAX_LIST; i++)
            snprintf(rq->group_hosts[rq->n_group_hosts++], SCHED_NAME_MAX + 1, "%s",
                     db_get(r, i, 0));
        db_result_free(r);
    }
    for (int pass = 0; pass < 2; pass++) {
        size_t n = pass ? rq->n_diff_ids : rq->n_same_ids;
        if (!n)
            continue;
        char arr[SCHED_MAX_LIST * 38 + 3];
        size_t off = 0;
        arr[off++] = '{';
        for (size_t i = 0; i < n; i++)
            off += (size_t)snprintf(arr + off, sizeof arr - off, "%s%s", i ? "," : "",
                                    pass ? rq->diff_ids[i] : rq->same_ids[i]);
        snprintf(arr + off, sizeof arr - off, "}");
        const char *p[1] = { arr };
        rc = exec(s, "SELECT DISTINCT host FROM instances WHERE uuid = ANY ($1::uuid[])"
                     " AND host IS NOT NULL AND NOT deleted", 1, p, &r);
        if (rc < 0)
            return rc;
        for (int i = 0; i < db_rows(r) && i < SCHED_MAX_LIST; i++) {
            if (pass)
                snprintf(rq->diff_hosts[rq->n_diff_hosts++], SCHED_NAME_MAX + 1, "%s",
                         db_get(r, i, 0));
            else
                snprintf(rq->same_hosts[rq->n_same_hosts++], SCHED_NAME_MAX + 1, "%s",
                         db_get(r, i, 0));
        }
        db_result_free(r);
    }
    return 0;
}

/* One claim: returns 1 when placed, 0 when the host no longer fits (its
 * row is refreshed), -ENOENT when the request is gone (instance deleted or
 * lease lost), or a negative errno. */
static int
claim(struct sched_ctx *s, const struct sched_request *rq, struct sched_host *h)
{
    char id[24], v[24], m[24], d[24];
    snprintf(id, sizeof id, "%lld", (long long)h->id);
    snprintf(v, sizeof v, "%lld", (long long)rq->vcpus);
    snprintf(m, sizeof m, "%lld", (long long)rq->memory_mb);
    snprintf(d, sizeof d, "%lld", (long long)rq->disk_gb);
    const char *p[6] = { id, v, m, d, rq->instance, s->name };
    db_result *r = NULL;
    int rc = exec(s,
        "WITH inst AS (SELECT uuid FROM instances WHERE uuid = $5::uuid AND NOT deleted"
        "   FOR UPDATE),"
        " br AS (SELECT 1 FROM build_requests WHERE instance_uuid = $5::uuid AND claimed_by = $6),"
        " c AS (UPDATE compute_nodes SET vcpus_used = vcpus_used + $2::int,"
        "   memory_mb_used = memory_mb_used + $3::int, local_gb_used = local_gb_used + $4::int,"
        "   running_vms = running_vms + 1, updated_at = now()"
        "  WHERE id = $1::bigint AND NOT disabled AND NOT forced_down"
        "   AND vcpus_used + $2::int <= vcpus * cpu_allocation_ratio"
        "   AND memory_mb_used + $3::int <= (memory_mb - reserved_host_memory_mb)"
        "       * ram_allocation_ratio"
        "   AND local_gb_used + $4::int <= local_gb * disk_allocation_ratio"
        "   AND EXISTS (SELECT 1 FROM inst) AND EXISTS (SELECT 1 FROM br)"
        "  RETURNING *),"
        " i AS (UPDATE instances SET host = c.host, node = c.hypervisor_hostname,"
        "   availability_zone = coalesce(instances.availability_zone, c.availability_zone),"
        "   task_state = 'spawning', updated_at = clock_timestamp()"
        "  FROM c WHERE instances.uuid = $5::uuid RETURNING instances.uuid),"
        " d AS (DELETE FROM build_requests WHERE instance_uuid = $5::uuid"
        "   AND EXISTS (SELECT 1 FROM c) RETURNING 1),"
        " ev AS (INSERT INTO instance_action_events (action_id, event, result, finish_time)"
        "   SELECT a.id, 'schedule_instance', 'Success', clock_timestamp() FROM instance_actions a"
        "   WHERE a.instance_uuid = $5::uuid AND a.action = 'create' AND EXISTS (SELECT 1 FROM c))"
        "SELECT (SELECT count(*) FROM inst) AS have_inst, (SELECT count(*) FROM br) AS have_br,"
        " x.*, CASE WHEN x.id IS NOT NULL THEN"
        "  pg_notify('nimbus_instance_placed', x.host || ' ' || $5) END"
        " FROM (SELECT 1) one LEFT JOIN (SELECT " SCHED_HOST_COLUMNS " FROM c) x ON true",
        6, p, &r);
    if (rc < 0)
        return rc;
    bool have = db_get(r, 0, 0) && strcmp(db_get(r, 0, 0), "0")
                && db_get(r, 0, 1) && strcmp(db_get(r, 0, 1), "0");
    bool placed = db_get(r, 0, 2) != NULL;
    rc = sched_hosts_update(&s->hosts, r, 2);
    db_result_free(r);
    if (rc < 0)
        return rc;
    if (placed)
        return 1;
    if (!have)
        return -ENOENT;
    s->counters.lost_races++;
    return sched_refresh_hosts(s, &h->id, 1);
}

static int
fail_request(struct sched_ctx *s, const struct sched_request *rq, const char *msg)
{
    const char *p[3] = { rq->instance, s->name, msg };
    s->counters.no_valid_host++;
    return exec(s,
        "WITH br AS (DELETE FROM build_requests WHERE instance_uuid = $1::uuid"
        "   AND claimed_by = $2 RETURNING 1),"
        " ev AS (INSERT INTO instance_action_events (action_id, event, result, finish_time,"
        "   traceback) SELECT a.id, 'schedule_instance', 'Error', clock_timestamp(), $3"
        "   FROM instance_actions a WHERE a.instance_uuid = $1::uuid AND a.action = 'create'"
        "   AND EXISTS (SELECT 1 FROM br))"
        "UPDATE instances SET vm_state = 'error', task_state = NULL,"
        " updated_at = clock_timestamp(), fault = jsonb_build_object('code', 500,"
        " 'message', $3, 'details', 'nimbus-scheduler ' || $2 || ': ' || $3,"
        " 'created', compute_ts(now()))"
        " WHERE uuid = $1::uuid AND NOT deleted AND EXISTS (SELECT 1 FROM br)", 3, p, NULL);
}

static int
release_request(struct sched_ctx *s, const struct sched_request *rq)
{
    const char *p[2] = { rq->instance, s->name };
    return exec(s, "UPDATE build_requests SET claimed_by = NULL, claimed_until = NULL"
                   " WHERE instance_uuid = $1::uuid AND claimed_by = $2", 2, p, NULL);
}

/* Places one request.  Returns 0 (placed, failed or gone) or a negative
 * errno (database trouble: the lease expires and someone retries). */
static int
place(struct sched_ctx *s, struct sched_request *rq, bool *reloaded)
{
    struct sched_host **cand = NULL;
    struct sched_trace trace;
    int rc = 0;
    bool in_tx = false;
    if (rq->group[0]) {
        const char *p[1] = { rq->group };
        db_result *r = NULL;
        if ((rc = exec(s, "BEGIN", 0, NULL, NULL)) < 0)
            return rc;
        in_tx = true;
        rc = exec(s, "SELECT 1 FROM server_groups WHERE uuid = $1::uuid FOR UPDATE", 1, p, &r);
        if (rc < 0)
            goto out;
        if (db_rows(r) == 0) {
            rq->group[0] = '\0';        /* Group deleted meanwhile. */
            rq->group_policy[0] = '\0';
        }
        db_result_free(r);
    }
    if ((rc = resolve_hosts(s, rq)) < 0)
        goto out;
    for (int attempt = 0; attempt < s->max_attempts; attempt++) {
        free(cand);
        cand = calloc(s->hosts.n ? s->hosts.n : 1, sizeof *cand);
        if (!cand) {
            rc = -ENOMEM;
            goto out;
        }
        s->policy.now = time(NULL);
        size_t n = sched_select(&s->pipeline, &s->policy, &s->hosts, rq, cand, &trace,
                                (unsigned)rand_r(&s->seed));
        if (n == 0 && !*reloaded) {
            /* Decide "no valid host" on a fresh view only. */
            *reloaded = true;
            if ((rc = sched_load_hosts(s)) < 0)
                goto out;
            attempt--;
            continue;
        }
        if (n == 0) {
            char msg[1024];
            sched_trace_format(&s->pipeline, &trace, msg, sizeof msg);
            log_info("sched", "instance %s: %s", rq->instance, msg);
            rc = fail_request(s, rq, msg);
            goto out;
        }
        rc = claim(s, rq, cand[0]);
        if (rc == 1) {
            s->counters.placed++;
            rc = 0;
            goto out;
        }
        if (rc == -ENOENT) {
            rc = 0;                     /* Deleted meanwhile, or lease lost. */
            goto out;
        }
        if (rc < 0)
            goto out;
    }
    /* Lost every race: give the request back for the next cycle. */
    rc = release_request(s, rq);
out:
    if (in_tx) {
        if (rc < 0)
            (void)exec(s, "ROLLBACK", 0, NULL, NULL);
        else
            rc = exec(s, "COMMIT", 0, NULL, NULL);
        if (rc < 0 && (rc = sched_load_hosts(s)) == 0)
            rc = -EAGAIN;   /* Claims of a rolled-back transaction never happened. */
    }
    free(cand);
    return rc;
}

int
sched_cycle(struct sched_ctx *s)
{
    int rc;
    if (!s->hosts_loaded && (rc = sched_load_hosts(s)) < 0)
        return rc;
    char batch[16], lease[16];
    snprintf(batch, sizeof batch, "%d", s->batch_size);
    snprintf(lease, sizeof lease, "%d", s->lease_seconds);
    const char *p[3] = { s->name, lease, batch };
    db_result *r = NULL;
    rc = exec(s,
        "UPDATE build_requests b SET claimed_by = $1,"
        " claimed_until = now() + ($2 || ' seconds')::interval, attempts = b.attempts + 1"
        " FROM (SELECT instance_uuid FROM build_requests"
        "   WHERE claimed_until IS NULL OR claimed_until < now()"
        "   ORDER BY created_at LIMIT $3::int FOR UPDATE SKIP LOCKED) q"
        " WHERE b.instance_uuid = q.instance_uuid"
        " RETURNING b.instance_uuid, b.spec::text, b.attempts, b.created_at"
        " ", 3, p, &r);
    if (rc < 0)
        return rc;
    s->counters.cycles++;
    int n = db_rows(r);
    s->counters.leased += (uint64_t)n;
    bool reloaded = false;
    struct sched_request *rq = malloc(sizeof *rq);
    if (!rq) {
        db_result_free(r);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        memset(rq, 0, sizeof *rq);
        if (sched_request_parse(rq, db_get(r, i, 0), db_get(r, i, 1)) < 0) {
            log_warn("sched", "instance %s: malformed build request", db_get(r, i, 0));
            (void)fail_request(s, rq, "Malformed build request.");
            continue;
        }
        if (atoi(db_get(r, i, 2)) > 5) {
            (void)fail_request(s, rq, "Scheduling abandoned after 5 attempts.");
            continue;
        }
        uint64_t t0 = util_now_ns();
        rc = place(s, rq, &reloaded);
        if (!s->latency)
            s->latency = calloc(SCHED_LATENCY_SAMPLES, sizeof *s->latency);
        if (s->latency && s->n_latency < SCHED_LATENCY_SAMPLES)
            s->latency[s->n_latency++] = (double)(util_now_ns() - t0) / 1e6;
        if (rc < 0 && rc != -EAGAIN)
            log_warn("sched", "instance %s: placement failed (%d); retried after the lease",
                     rq->instance, rc);
    }
    free(rq);
    db_result_free(r);
    return n;
}

int
sched_heartbeat(struct sched_ctx *s)
{
    const char *p[1] = { s->name };
    return exec(s, "INSERT INTO scheduler_services (host) VALUES ($1)"
                   " ON CONFLICT (host) DO UPDATE SET last_heartbeat = now()", 1, p, NULL);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double
sched_latency_percentile(struct sched_ctx *s, double p)
{
    if (!s->n_latency)
        return 0;
    qsort(s->latency, s->n_latency, sizeof *s->latency, cmp_double);
    size_t i = (size_t)(p / 100.0 * (double)(s->n_latency - 1) + 0.5);
    return s->latency[i < s->n_latency ? i : s->n_latency - 1];
}

int
sched_rescue_dead_hosts(struct sched_ctx *s)
{
    char down[16], maxr[16];
    snprintf(down, sizeof down, "%d", s->policy.service_down_time);
    snprintf(maxr, sizeof maxr, "%d", s->max_reschedules);
    const char *p[2] = { down, maxr };
    db_result *r = NULL;
    /* One statement: the stuck builds are locked (SKIP LOCKED: schedulers
     * share the work), their claims released, and each is either queued
     * again with a spec rebuilt from the instance or failed. */
    int rc = exec(s,
        "WITH stuck AS (SELECT i.* FROM instances i JOIN compute_nodes n"
        "   ON n.hypervisor_hostname = i.node"
        "  WHERE i.vm_state = 'building' AND NOT i.deleted"
        "   AND (n.forced_down OR n.last_heartbeat IS NULL"
        "        OR n.last_heartbeat < now() - ($1 || ' seconds')::interval)"
        "   AND i.updated_at < now() - ($1 || ' seconds')::interval"
        "  ORDER BY i.updated_at LIMIT 200 FOR UPDATE OF i SKIP LOCKED),"
        " rel AS (UPDATE compute_nodes n SET vcpus_used = greatest(n.vcpus_used - x.v, 0),"
        "   memory_mb_used = greatest(n.memory_mb_used - x.m, 0),"
        "   local_gb_used = greatest(n.local_gb_used - x.d, 0),"
        "   running_vms = greatest(n.running_vms - x.c, 0)"
        "  FROM (SELECT node, sum(vcpus) v, sum(memory_mb) m, sum(root_gb + ephemeral_gb) d,"
        "   count(*) c FROM stuck GROUP BY node) x WHERE n.hypervisor_hostname = x.node"
        "  RETURNING 1),"
        " again AS (INSERT INTO build_requests (instance_uuid, project_id, spec)"
        "  SELECT st.uuid, st.project_id, jsonb_build_object('vcpus', st.vcpus,"
        "   'memory_mb', st.memory_mb, 'root_gb', st.root_gb + st.ephemeral_gb,"
        "   'availability_zone', st.availability_zone, 'group', st.server_group,"
        "   'group_policy', (SELECT policy FROM server_groups g WHERE g.uuid = st.server_group),"
        "   'hints', st.scheduler_hints)"
        "  FROM stuck st WHERE st.reschedules < $2::int"
        "  ON CONFLICT (instance_uuid) DO NOTHING RETURNING instance_uuid),"
        " upd AS (UPDATE instances i SET host = NULL, node = NULL, updated_at = clock_timestamp(),"
        "   reschedules = i.reschedules + 1,"
        "   vm_state = CASE WHEN st.reschedules < $2::int THEN 'building' ELSE 'error' END,"
        "   task_state = CASE WHEN st.reschedules < $2::int THEN 'scheduling' END,"
        "   fault = CASE WHEN st.reschedules < $2::int THEN i.fault ELSE jsonb_build_object("
        "    'code', 500, 'message', 'Build failed: host ' || st.host || ' stopped reporting ("
        "after ' || st.reschedules || ' reschedules).', 'created', compute_ts(now())) END"
        "  FROM stuck st WHERE i.uuid = st.uuid RETURNING 1)"
        "SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM rel)", 2, p, &r);
    if (rc < 0)
        return rc;
    int n = atoi(db_get(r, 0, 0));
    db_result_free(r);
    if (n) {
        s->counters.rescheduled += (uint64_t)n;
        log_info("sched", "%d build(s) moved off dead hosts", n);
        s->hosts_loaded = false;
    }
    return n;
}
