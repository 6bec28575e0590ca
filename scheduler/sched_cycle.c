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
    uint64_t t = util_now_ns();
    db_result *r = NULL;
    int rc = exec(s, "SELECT " SCHED_HOST_COLUMNS " FROM compute_nodes ORDER BY id", 0, NULL,
                  &r);
    if (rc < 0)
        return rc;
    sched_hosts_free(&s->hosts);
    rc = sched_hosts_update(&s->hosts, r, 0);
    db_result_free(r);
    s->hosts_loaded = rc == 0;
    s->counters.ns_hosts += util_now_ns() - t;
    return rc;
}

int
sched_refresh_hosts(struct sched_ctx *s, const int64_t *ids, size_t n)
{
    if (!n)
        return 0;
    uint64_t t = util_now_ns();
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
    s->counters.ns_hosts += util_now_ns() - t;
    return rc;
}

/* A PostgreSQL array literal under construction ("{a,b}"); p is owned by
 * the caller (free()). */
struct arr {
    char *p;
    size_t len, cap;
    bool oom;
};

static void
arr_add(struct arr *a, const char *item)
{
    size_t n = strlen(item);
    if (a->oom)
        return;
    /* Separator, item, and room for the closing brace and NUL. */
    if (a->len + n + 3 > a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        while (cap < a->len + n + 3)
            cap *= 2;
        char *p = realloc(a->p, cap);
        if (!p) {
            a->oom = true;
            return;
        }
        a->p = p;
        a->cap = cap;
    }
    a->p[a->len] = a->len ? ',' : '{';
    a->len++;
    memcpy(a->p + a->len, item, n);
    a->len += n;
    a->p[a->len] = '\0';
}

static void
arr_add_i64(struct arr *a, int64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%lld", (long long)v);
    arr_add(a, b);
}

/* Closes the literal and returns it; NULL after an allocation failure. */
static const char *
arr_end(struct arr *a)
{
    if (a->oom)
        return NULL;
    if (!a->p)
        return "{}";
    a->p[a->len++] = '}';
    a->p[a->len] = '\0';
    return a->p;
}

/* Fills the hosts of the same_host / different_host hints of 'rq'. */
static int
resolve_hints(struct sched_ctx *s, struct sched_request *rq)
{
    db_result *r = NULL;
    int rc;
    for (int pass = 0; pass < 2; pass++) {
        size_t n = pass ? rq->n_diff_ids : rq->n_same_ids;
        if (!n)
            continue;
        struct arr a = { 0 };
        for (size_t i = 0; i < n; i++)
            arr_add(&a, pass ? rq->diff_ids[i] : rq->same_ids[i]);
        const char *p[1] = { arr_end(&a) };
        if (!p[0]) {
            free(a.p);
            return -ENOMEM;
        }
        rc = exec(s, "SELECT DISTINCT host FROM instances WHERE uuid = ANY ($1::uuid[])"
                     " AND host IS NOT NULL AND NOT deleted", 1, p, &r);
        free(a.p);
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

/* ---- The batch.
 *
 * Each cycle leases up to batch_size requests and runs rounds until every
 * one is placed, failed or given back:
 *   1. When requests of server groups are pending, the round is one
 *      transaction that first locks those groups (in uuid order) and then
 *      reads their members' hosts, so that members of a group are decided
 *      by one scheduler at a time against committed placements.
 *   2. Every pending request is decided against the in-memory host view,
 *      which is charged as it goes: the requests of one shape share a
 *      ranking (one pass over the hosts per shape and cycle); the others
 *      (groups, hints, forced host) filter every host, and a group's
 *      choices join its members' hosts for the next member.
 *   3. ONE statement claims all the decisions: it locks the instances and
 *      their build requests (ours only), then the hosts in id order, adds
 *      the per-host sums with the condition used + sum <= total x ratio,
 *      binds the instances, deletes the build requests, records the events
 *      and notifies the agents.  A host whose condition fails takes none of
 *      its requests (a lost race): it is read again and those requests are
 *      decided again in the next round, at most max_attempts times before
 *      they are given back.
 *   4. A request no host fits is decided again once on a freshly loaded
 *      view, then fails with the fault naming the filters.
 * Locks are always taken in the order groups, instances, hosts (hosts by
 * id), and a transaction holds them for one claim statement only, so
 * schedulers cannot deadlock each other or nimbus-api. */

enum item_state { ITEM_PENDING, ITEM_CHOSEN, ITEM_DONE };

struct item {
    struct sched_request rq;
    enum item_state state;
    int64_t host_id;
    char host[SCHED_NAME_MAX + 1];
    int attempts;
    bool no_host;
    char *fault;
    bool group_gone;
};

static void
item_done(struct sched_ctx *s, struct item *it, uint64_t t0)
{
    it->state = ITEM_DONE;
    if (!s->latency)
        s->latency = calloc(SCHED_LATENCY_SAMPLES, sizeof *s->latency);
    if (s->latency && s->n_latency < SCHED_LATENCY_SAMPLES)
        s->latency[s->n_latency++] = (double)(util_now_ns() - t0) / 1e6;
}

static struct sched_image *
image_cached(struct sched_ctx *s, const char *id, time_t now)
{
    for (size_t i = 0; i < SCHED_IMAGE_CACHE; i++)
        if (s->images[i].fetched && now - s->images[i].fetched < SCHED_IMAGE_TTL
            && !strcmp(s->images[i].id, id))
            return &s->images[i];
    return NULL;
}

static void
image_apply(struct sched_request *rq, const struct sched_image *im)
{
    if (!rq->container_format[0]) {
        snprintf(rq->container_format, sizeof rq->container_format, "%s", im->container_format);
        rq->container = sched_request_is_container(rq);
    }
    if (!rq->hypervisor_type[0])
        snprintf(rq->hypervisor_type, sizeof rq->hypervisor_type, "%s", im->hypervisor_type);
    if (!rq->architecture[0])
        snprintf(rq->architecture, sizeof rq->architecture, "%s", im->architecture);
}

/* Fills the image fields the spec lacks from nimbus-image's table (kept
 * SCHED_IMAGE_TTL seconds: an image's container format and properties
 * rarely change, and a change applies to builds decided after that). */
static int
resolve_images(struct sched_ctx *s, struct item *items, size_t n)
{
    struct arr a = { 0 };
    size_t k = 0;
    time_t now = time(NULL);
    for (size_t i = 0; i < n; i++) {
        struct sched_request *rq = &items[i].rq;
        if (items[i].state != ITEM_PENDING || !rq->image_ref[0])
            continue;
        const struct sched_image *im = image_cached(s, rq->image_ref, now);
        if (im) {
            image_apply(rq, im);
        } else {
            arr_add(&a, rq->image_ref);
            k++;
        }
    }
    if (!k)
        return 0;
    const char *p[1] = { arr_end(&a) };
    if (!p[0]) {
        free(a.p);
        return -ENOMEM;
    }
    db_result *r = NULL;
    int rc = exec(s, "SELECT id::text, coalesce(container_format, ''),"
                     " coalesce(properties->>'hypervisor_type', ''),"
                     " coalesce(properties->>'architecture', '')"
                     " FROM images WHERE id = ANY ($1::uuid[])", 1, p, &r);
    free(a.p);
    if (rc < 0)
        return rc;
    for (int j = 0; j < db_rows(r); j++) {
        /* Into the oldest slot. */
        struct sched_image *im = &s->images[0];
        for (size_t i = 1; i < SCHED_IMAGE_CACHE; i++)
            if (s->images[i].fetched < im->fetched)
                im = &s->images[i];
        snprintf(im->id, sizeof im->id, "%s", db_get(r, j, 0));
        snprintf(im->container_format, sizeof im->container_format, "%s", db_get(r, j, 1));
        snprintf(im->hypervisor_type, sizeof im->hypervisor_type, "%s", db_get(r, j, 2));
        snprintf(im->architecture, sizeof im->architecture, "%s", db_get(r, j, 3));
        im->fetched = now;
        for (size_t i = 0; i < n; i++)
            if (items[i].state == ITEM_PENDING && !strcmp(items[i].rq.image_ref, im->id))
                image_apply(&items[i].rq, im);
    }
    db_result_free(r);
    return 0;
}

/* Locks the groups of the pending requests and reads their members'
 * hosts (inside the round's transaction). */
static int
lock_groups(struct sched_ctx *s, struct item *items, size_t n)
{
    struct arr g = { 0 };
    int rc = -ENOMEM;
    db_result *r = NULL;
    for (size_t i = 0; i < n; i++)
        if (items[i].state == ITEM_PENDING && items[i].rq.group[0])
            arr_add(&g, items[i].rq.group);
    const char *p[1] = { arr_end(&g) };
    if (!p[0])
        goto out;
    rc = exec(s, "SELECT uuid::text FROM server_groups WHERE uuid = ANY ($1::uuid[])"
                 " ORDER BY uuid FOR UPDATE", 1, p, &r);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        struct item *it = &items[i];
        if (it->state != ITEM_PENDING || !it->rq.group[0])
            continue;
        bool found = false;
        for (int j = 0; j < db_rows(r) && !found; j++)
            found = !strcmp(db_get(r, j, 0), it->rq.group);
        if (!found) {
            it->rq.group[0] = '\0';        /* Deleted meanwhile. */
            it->rq.group_policy[0] = '\0';
        }
        it->rq.n_group_hosts = 0;
    }
    db_result_free(r);
    r = NULL;
    /* A new statement, hence a snapshot taken after the locks: members
     * placed by whoever held a lock before us (or by our earlier rounds)
     * are seen; pending members have no host. */
    rc = exec(s, "SELECT server_group::text, host FROM instances"
                 " WHERE server_group = ANY ($1::uuid[]) AND host IS NOT NULL AND NOT deleted",
              1, p, &r);
    if (rc < 0)
        goto out;
    for (int j = 0; j < db_rows(r); j++) {
        for (size_t i = 0; i < n; i++) {
            struct sched_request *rq = &items[i].rq;
            if (items[i].state == ITEM_PENDING && rq->group[0] && rq->group_hosts
                && rq->n_group_hosts < SCHED_MAX_LIST && !strcmp(rq->group, db_get(r, j, 0)))
                snprintf(rq->group_hosts[rq->n_group_hosts++], SCHED_NAME_MAX + 1, "%s",
                         db_get(r, j, 1));
        }
    }
out:
    db_result_free(r);
    free(g.p);
    return rc;
}

static struct sched_ranking *
ranking_for(struct sched_ctx *s, const struct sched_request *rq)
{
    struct sched_ranking *stale = NULL;
    for (size_t i = 0; i < s->n_rankings; i++) {
        if (sched_ranking_matches(&s->rankings[i], &s->hosts, rq))
            return &s->rankings[i];
        if (s->rankings[i].generation != s->hosts.generation)
            stale = &s->rankings[i];  /* Built on a view since reloaded. */
    }
    struct sched_ranking *r = stale;
    if (!r) {
        if (s->n_rankings == SCHED_MAX_RANKINGS)
            return NULL;          /* Many shapes at once: decide one by one. */
        r = &s->rankings[s->n_rankings++];
    }
    if (sched_ranking_build(r, &s->pipeline, &s->policy, &s->hosts, rq) < 0) {
        r->generation = s->hosts.generation - 1;  /* Stays stale: reused later. */
        return NULL;
    }
    return r;
}

/* Decides one pending request against the view and charges the view. */
static int
decide(struct sched_ctx *s, struct item *items, size_t n, struct item *it,
       struct sched_host **cand)
{
    struct sched_request *rq = &it->rq;
    struct sched_host *h = NULL;
    struct sched_ranking *rk = NULL;
    if (sched_ranking_eligible(rq) && (rk = ranking_for(s, rq)))
        h = sched_ranking_next(rk, &s->pipeline, &s->policy, rq, (unsigned)rand_r(&s->seed));
    if (!h) {
        struct sched_trace trace;
        rk = NULL;
        if (sched_select(&s->pipeline, &s->policy, &s->hosts, rq, cand, &trace,
                         (unsigned)rand_r(&s->seed)))
            h = cand[0];
        if (!h) {
            char msg[1024];
            sched_trace_format(&s->pipeline, &trace, msg, sizeof msg);
            free(it->fault);
            it->fault = strdup(msg);
            it->no_host = true;
            return it->fault ? 0 : -ENOMEM;
        }
    }
    h->vcpus_used += rq->vcpus;
    h->memory_mb_used += rq->memory_mb;
    h->local_gb_used += rq->disk_gb;
    h->running_vms++;
    if (rk)
        sched_ranking_settle(rk, &s->pipeline);
    it->state = ITEM_CHOSEN;
    it->host_id = h->id;
    snprintf(it->host, sizeof it->host, "%s", h->host);
    if (rq->group[0]) {
        /* The next members see this one. */
        for (size_t i = 0; i < n; i++) {
            struct sched_request *o = &items[i].rq;
            if (&items[i] != it && items[i].state == ITEM_PENDING && o->group_hosts
                && !strcmp(o->group, rq->group) && o->n_group_hosts < SCHED_MAX_LIST)
                snprintf(o->group_hosts[o->n_group_hosts++], SCHED_NAME_MAX + 1, "%s", h->host);
        }
    }
    return 0;
}

static int
cmp_item_uuid(const void *a, const void *b)
{
    const struct item *x = *(struct item *const *)a, *y = *(struct item *const *)b;
    return strcmp(x->rq.instance, y->rq.instance);
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int
cmp_item_host(const void *a, const void *b)
{
    const struct item *x = *(struct item *const *)a, *y = *(struct item *const *)b;
    return (x->host_id > y->host_id) - (x->host_id < y->host_id);
}

/* Claims every chosen request, inside the round's transaction (see the
 * comment above): lock the instances and our build requests, lock the
 * hosts in id order, add each host's sum with the condition in one UPDATE,
 * then bind, dequeue, record and notify the won requests in one statement.
 * Each step is set-based over arrays, so a batch costs five statements
 * whatever its size. */
static int
claim_batch(struct sched_ctx *s, struct item *items, size_t n, uint64_t t0,
            int64_t *refresh, size_t *n_refresh)
{
    struct arr u = { 0 }, hid = { 0 }, hv = { 0 }, hm = { 0 }, hd = { 0 }, hc = { 0 };
    struct arr wu = { 0 }, wh = { 0 }, wn = { 0 }, wz = { 0 };
    struct item **chosen = calloc(n ? n : 1, sizeof *chosen);
    size_t k = 0;
    int rc = -ENOMEM;
    db_result *r = NULL;
    if (!chosen)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (items[i].state == ITEM_CHOSEN)
            chosen[k++] = &items[i];
    if (!k) {
        rc = 0;
        goto out;
    }
    /* 1. The requests still ours and alive (the others are gone), locked
     * in uuid order.  Each row is found by its key (LATERAL), whatever the
     * planner believes about the tables' sizes. */
    qsort(chosen, k, sizeof *chosen, cmp_item_uuid);
    for (size_t i = 0; i < k; i++)
        arr_add(&u, chosen[i]->rq.instance);
    const char *p1[2] = { s->name, arr_end(&u) };
    if (!p1[1])
        goto out;
    rc = exec(s, "SELECT q.u::text FROM unnest($2::uuid[]) WITH ORDINALITY AS q (u, o)"
                 " JOIN LATERAL (SELECT 1 FROM instances i WHERE i.uuid = q.u AND NOT i.deleted"
                 "   FOR UPDATE) li ON true"
                 " JOIN LATERAL (SELECT 1 FROM build_requests b WHERE b.instance_uuid = q.u"
                 "   AND b.claimed_by = $1 FOR UPDATE) lb ON true"
                 " ORDER BY q.o", 2, p1, &r);
    if (rc < 0)
        goto out;
    /* Rows come in uuid order: mark the live ones by a merge. */
    size_t live = 0;
    for (size_t i = 0, j = 0; i < k; i++) {
        while (j < (size_t)db_rows(r) && strcmp(db_get(r, (int)j, 0), chosen[i]->rq.instance) < 0)
            j++;
        if (j < (size_t)db_rows(r) && !strcmp(db_get(r, (int)j, 0), chosen[i]->rq.instance)) {
            chosen[live++] = chosen[i];
        } else {
            item_done(s, chosen[i], t0);  /* Deleted meanwhile, or lease lost. */
            refresh[(*n_refresh)++] = chosen[i]->host_id;
        }
    }
    db_result_free(r);
    r = NULL;
    if (!live) {
        rc = 0;
        goto out;
    }
    /* 2. Per-host sums, hosts in id order. */
    qsort(chosen, live, sizeof *chosen, cmp_item_host);
    size_t n_hosts = 0;
    for (size_t i = 0; i < live;) {
        int64_t v = 0, m = 0, d = 0, c = 0;
        size_t j = i;
        for (; j < live && chosen[j]->host_id == chosen[i]->host_id; j++) {
            v += chosen[j]->rq.vcpus;
            m += chosen[j]->rq.memory_mb;
            d += chosen[j]->rq.disk_gb;
            c++;
        }
        arr_add_i64(&hid, chosen[i]->host_id);
        arr_add_i64(&hv, v);
        arr_add_i64(&hm, m);
        arr_add_i64(&hd, d);
        arr_add_i64(&hc, c);
        n_hosts++;
        i = j;
    }
    const char *p2[5] = { arr_end(&hid), arr_end(&hv), arr_end(&hm), arr_end(&hd),
                          arr_end(&hc) };
    rc = -ENOMEM;
    if (!p2[0] || !p2[1] || !p2[2] || !p2[3] || !p2[4])
        goto out;
    /* 3. The conditional claim: a host whose sum does not fit is left
     * alone, and all its requests lose.  The hosts are locked in id order
     * (the sub-select) before any is updated, so two schedulers never
     * wait on each other in a cycle. */
    rc = exec(s,
        "UPDATE compute_nodes SET vcpus_used = vcpus_used + w.wv,"
        " memory_mb_used = memory_mb_used + w.wm, local_gb_used = local_gb_used + w.wd,"
        " running_vms = running_vms + w.wc, updated_at = now()"
        " FROM unnest($1::bigint[], $2::int[], $3::int[], $4::int[], $5::int[])"
        "   AS w (wid, wv, wm, wd, wc)"
        " WHERE id = w.wid AND id = ANY (ARRAY (SELECT id FROM compute_nodes"
        "   WHERE id = ANY ($1::bigint[]) ORDER BY id FOR UPDATE))"
        "  AND NOT disabled AND NOT forced_down"
        "  AND vcpus_used + w.wv <= vcpus * cpu_allocation_ratio"
        "  AND memory_mb_used + w.wm <= (memory_mb - reserved_host_memory_mb)"
        "      * ram_allocation_ratio"
        "  AND local_gb_used + w.wd <= local_gb * disk_allocation_ratio"
        " RETURNING " SCHED_HOST_COLUMNS, 5, p2, &r);
    if (rc < 0)
        goto out;
    if ((rc = sched_hosts_update(&s->hosts, r, 0)) < 0)
        goto out;
    /* Won hosts: the result, sorted by id like 'chosen'. */
    int64_t *won = calloc((size_t)db_rows(r) + 1, sizeof *won);
    if (!won) {
        rc = -ENOMEM;
        goto out;
    }
    size_t n_won = 0;
    for (int j = 0; j < db_rows(r); j++)
        won[n_won++] = strtoll(db_get(r, j, 0), NULL, 10);
    qsort(won, n_won, sizeof *won, cmp_i64);
    size_t placed = 0;
    for (size_t i = 0, j = 0; i < live; i++) {
        struct item *it = chosen[i];
        while (j < n_won && won[j] < it->host_id)
            j++;
        if (j < n_won && won[j] == it->host_id) {
            const struct sched_host *h = sched_hosts_find(&s->hosts, it->host_id);
            arr_add(&wu, it->rq.instance);
            arr_add(&wh, h ? h->host : it->host);
            arr_add(&wn, h ? h->node : it->host);
            arr_add(&wz, h ? h->az : "");
            chosen[placed++] = it;
        } else {
            s->counters.lost_races++;
            it->state = ITEM_PENDING;
            it->attempts++;
            if (!*n_refresh || refresh[*n_refresh - 1] != it->host_id)
                refresh[(*n_refresh)++] = it->host_id;
        }
    }
    free(won);
    db_result_free(r);
    r = NULL;
    if (!placed) {
        rc = 0;
        goto out;
    }
    /* 4. Bind, dequeue, record, notify the agents. */
    const char *p4[4] = { arr_end(&wu), arr_end(&wh), arr_end(&wn), arr_end(&wz) };
    rc = -ENOMEM;
    if (!p4[0] || !p4[1] || !p4[2] || !p4[3])
        goto out;
    rc = exec(s,
        "WITH w AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])"
        "   AS w (uuid, host, node, az)),"
        " i AS (UPDATE instances SET host = w.host, node = w.node,"
        "   availability_zone = coalesce(instances.availability_zone, w.az),"
        "   task_state = 'spawning', updated_at = clock_timestamp()"
        "  FROM w WHERE instances.uuid = w.uuid AND instances.uuid = ANY ($1::uuid[])),"
        " d AS (DELETE FROM build_requests WHERE instance_uuid = ANY ($1::uuid[])),"
        " e AS (INSERT INTO instance_action_events (action_id, event, result, finish_time)"
        "   SELECT a.id, 'schedule_instance', 'Success', clock_timestamp()"
        "   FROM w JOIN LATERAL (SELECT id FROM instance_actions"
        "    WHERE instance_uuid = w.uuid AND action = 'create' OFFSET 0) a ON true)"
        "SELECT count(pg_notify('nimbus_instance_placed', w.host || ' ' || w.uuid::text))"
        " FROM w", 4, p4, NULL);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < placed; i++) {
        s->counters.placed++;
        item_done(s, chosen[i], t0);
    }
out:
    db_result_free(r);
    free(chosen);
    free(u.p);
    free(hid.p);
    free(hv.p);
    free(hm.p);
    free(hd.p);
    free(hc.p);
    free(wu.p);
    free(wh.p);
    free(wn.p);
    free(wz.p);
    return rc;
}

static int
release_requests(struct sched_ctx *s, struct item *items, size_t n)
{
    struct arr u = { 0 };
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (items[i].state != ITEM_DONE) {
            arr_add(&u, items[i].rq.instance);
            k++;
        }
    if (!k)
        return 0;
    const char *p[2] = { arr_end(&u), s->name };
    int rc = p[0] ? exec(s, "UPDATE build_requests SET claimed_by = NULL, claimed_until = NULL"
                            " WHERE instance_uuid = ANY ($1::uuid[]) AND claimed_by = $2",
                         2, p, NULL) : -ENOMEM;
    free(u.p);
    return rc;
}

/* One round over the pending requests.  Returns 0 or a negative errno. */
static int
round_run(struct sched_ctx *s, struct item *items, size_t n, uint64_t t0, bool *reloaded)
{
    bool tx = false, groups = false, reload = false;
    int64_t *refresh = calloc(n, sizeof *refresh);
    size_t n_refresh = 0;
    struct sched_host **cand = NULL;
    int rc;
    if (!refresh)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (items[i].state == ITEM_PENDING && items[i].rq.group[0])
            groups = true;
    /* Every statement of the round finds its rows by key; statistics that
     * lag behind a burst of requests must not turn one into a scan of the
     * table per batch. */
    struct db_error err = { 0 };
    if ((rc = db_sync_exec_script(s->conn, "BEGIN; SET LOCAL enable_seqscan = off",
                                  &err)) < 0) {
        s->counters.errors++;
        log_warn("sched", "database error %d %s: %s", rc, err.sqlstate,
                 err.message ? err.message : "");
        free(refresh);
        return rc;
    }
    tx = true;
    if (groups && (rc = lock_groups(s, items, n)) < 0)
        goto out;
    if (!(cand = calloc(s->hosts.n ? s->hosts.n : 1, sizeof *cand))) {
        rc = -ENOMEM;
        goto out;
    }
    s->policy.now = time(NULL);
    uint64_t t = util_now_ns();
    for (size_t i = 0; i < n; i++)
        if (items[i].state == ITEM_PENDING && (rc = decide(s, items, n, &items[i], cand)) < 0)
            goto out;
    s->counters.ns_decide += util_now_ns() - t;
    t = util_now_ns();
    if ((rc = claim_batch(s, items, n, t0, refresh, &n_refresh)) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        struct item *it = &items[i];
        if (it->state == ITEM_PENDING && it->no_host) {
            it->no_host = false;
            if (!*reloaded) {
                reload = true;            /* Decide "no valid host" on a fresh view only. */
            } else {
                log_info("sched", "instance %s: %s", it->rq.instance, it->fault);
                if ((rc = fail_request(s, &it->rq, it->fault)) < 0)
                    goto out;
                item_done(s, it, t0);
            }
        }
    }
    if (tx) {
        tx = false;
        if ((rc = exec(s, "COMMIT", 0, NULL, NULL)) < 0)
            goto out;
    }
    s->counters.ns_claim += util_now_ns() - t;
    /* Lost every race: give the request back for the next cycle. */
    for (size_t i = 0; i < n; i++)
        if (items[i].state == ITEM_PENDING && items[i].attempts >= s->max_attempts) {
            const char *p[2] = { items[i].rq.instance, s->name };
            if ((rc = exec(s, "UPDATE build_requests SET claimed_by = NULL, claimed_until = NULL"
                              " WHERE instance_uuid = $1::uuid AND claimed_by = $2",
                           2, p, NULL)) < 0)
                goto out;
            items[i].state = ITEM_DONE;
        }
    if (reload) {
        *reloaded = true;
        rc = sched_load_hosts(s);
    } else {
        /* Hosts whose claim failed, and hosts charged for requests that
         * were gone: read them again. */
        rc = sched_refresh_hosts(s, refresh, n_refresh);
    }
out:
    if (tx) {
        (void)exec(s, "ROLLBACK", 0, NULL, NULL);
        if (rc >= 0)
            rc = -EIO;
    }
    if (rc < 0 && sched_load_hosts(s) < 0)
        s->hosts_loaded = false;   /* Claims of a rolled-back round never happened. */
    free(cand);
    free(refresh);
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
    uint64_t tl = util_now_ns();
    rc = exec(s,
        "UPDATE build_requests b SET claimed_by = $1,"
        " claimed_until = now() + ($2 || ' seconds')::interval, attempts = b.attempts + 1"
        /* An array, so that the update finds its rows by primary key
         * instead of joining the whole queue. */
        " WHERE b.instance_uuid = ANY (ARRAY (SELECT instance_uuid FROM build_requests"
        "   WHERE claimed_until IS NULL OR claimed_until < now()"
        "   ORDER BY created_at LIMIT $3::int FOR UPDATE SKIP LOCKED))"
        " RETURNING b.instance_uuid, b.spec::text, b.attempts, b.created_at", 3, p, &r);
    if (rc < 0)
        return rc;
    uint64_t t0 = util_now_ns();
    s->counters.ns_lease += t0 - tl;
    s->counters.cycles++;
    size_t n = (size_t)db_rows(r);
    s->counters.leased += n;
    if (!n) {
        db_result_free(r);
        return 0;
    }
    struct item *items = calloc(n, sizeof *items);
    if (!items) {
        db_result_free(r);
        return -ENOMEM;
    }
    /* Rankings are rebuilt every cycle: the view changed in between. */
    s->n_rankings = 0;
    for (size_t i = 0; i < n; i++) {
        struct item *it = &items[i];
        if ((rc = sched_request_parse(&it->rq, db_get(r, (int)i, 0), db_get(r, (int)i, 1))) < 0) {
            log_warn("sched", "instance %s: malformed build request", db_get(r, (int)i, 0));
            (void)fail_request(s, &it->rq, "Malformed build request.");
            item_done(s, it, t0);
        } else if (atoi(db_get(r, (int)i, 2)) > 5) {
            (void)fail_request(s, &it->rq, "Scheduling abandoned after 5 attempts.");
            item_done(s, it, t0);
        } else if ((it->rq.n_same_ids || it->rq.n_diff_ids)
                   && (rc = resolve_hints(s, &it->rq)) < 0) {
            goto out;
        }
    }
    if ((rc = resolve_images(s, items, n)) < 0)
        goto out;
    s->counters.ns_decide += util_now_ns() - t0;
    bool reloaded = false;
    for (;;) {
        bool pending = false;
        for (size_t i = 0; i < n && !pending; i++)
            pending = items[i].state != ITEM_DONE;
        if (!pending)
            break;
        if ((rc = round_run(s, items, n, t0, &reloaded)) < 0)
            goto out;
    }
    rc = (int)n;
out:
    if (rc < 0) {
        log_warn("sched", "cycle failed (%d); %zu requests given back", rc, n);
        (void)release_requests(s, items, n);
    }
    for (size_t i = 0; i < n; i++) {
        sched_request_clear(&items[i].rq);
        free(items[i].fault);
    }
    free(items);
    db_result_free(r);
    return rc;
}

void
sched_ctx_free(struct sched_ctx *s)
{
    for (size_t i = 0; i < SCHED_MAX_RANKINGS; i++)
        sched_ranking_free(&s->rankings[i]);
    s->n_rankings = 0;
    sched_hosts_free(&s->hosts);
    free(s->latency);
    s->latency = NULL;
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
        "   'hints', st.scheduler_hints, 'image_ref', st.image_ref)"
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
