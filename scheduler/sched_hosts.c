/* The in-memory view of the hosts, and build request specs. */
#include "sched_core.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

void
sched_hosts_free(struct sched_hosts *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
    h->generation++;
}

struct sched_host *
sched_hosts_find(struct sched_hosts *h, int64_t id)
{
    /* Rows arrive ordered by id and new hosts get larger ids, so the array
     * stays sorted: binary search. */
    size_t lo = 0, hi = h->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (h->v[mid].id == id)
            return &h->v[mid];
        if (h->v[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int
cmp_host_id(const void *a, const void *b)
{
    const struct sched_host *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

static void
copy_str(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src ? src : "");
}

static int64_t
get_i64(const db_result *r, int row, int col)
{
    const char *v = db_get(r, row, col);
    return v ? strtoll(v, NULL, 10) : 0;
}

static double
get_f(const db_result *r, int row, int col)
{
    const char *v = db_get(r, row, col);
    return v ? strtod(v, NULL) : 0.0;
}

static bool
get_b(const db_result *r, int row, int col)
{
    const char *v = db_get(r, row, col);
    return v && v[0] == 't';
}

int
sched_hosts_update(struct sched_hosts *h, const db_result *r, int col)
{
    bool resort = false;
    for (int i = 0; i < db_rows(r); i++) {
        if (!db_get(r, i, col))
            continue;
        int64_t id = get_i64(r, i, col);
        struct sched_host *x = sched_hosts_find(h, id);
        if (!x) {
            if (h->n == h->cap) {
                size_t cap = h->cap ? h->cap * 2 : 64;
                struct sched_host *v = realloc(h->v, cap * sizeof *v);
                if (!v)
                    return -ENOMEM;
                h->v = v;
                h->cap = cap;
                h->generation++;
            }
            x = &h->v[h->n++];
            if (h->n > 1 && h->v[h->n - 2].id > id)
                resort = true;
        }
        memset(x, 0, sizeof *x);
        x->id = id;
        copy_str(x->host, sizeof x->host, db_get(r, i, col + 1));
        copy_str(x->node, sizeof x->node, db_get(r, i, col + 2));
        copy_str(x->az, sizeof x->az, db_get(r, i, col + 3));
        copy_str(x->hypervisor_type, sizeof x->hypervisor_type, db_get(r, i, col + 4));
        copy_str(x->architecture, sizeof x->architecture, db_get(r, i, col + 5));
        x->vcpus = get_i64(r, i, col + 6);
        x->memory_mb = get_i64(r, i, col + 7);
        x->local_gb = get_i64(r, i, col + 8);
        x->reserved_memory_mb = get_i64(r, i, col + 9);
        x->vcpus_used = get_i64(r, i, col + 10);
        x->memory_mb_used = get_i64(r, i, col + 11);
        x->local_gb_used = get_i64(r, i, col + 12);
        x->running_vms = get_i64(r, i, col + 13);
        x->cpu_ratio = get_f(r, i, col + 14);
        x->ram_ratio = get_f(r, i, col + 15);
        x->disk_ratio = get_f(r, i, col + 16);
        x->load = get_f(r, i, col + 17);
        x->build_failures = get_i64(r, i, col + 18);
        x->disabled = get_b(r, i, col + 19);
        x->forced_down = get_b(r, i, col + 20);
        x->last_heartbeat = (time_t)get_i64(r, i, col + 21);
        x->present = true;
        x->runc = !strcasecmp(x->hypervisor_type, "runc");
        if (resort) {
            qsort(h->v, h->n, sizeof *h->v, cmp_host_id);
            h->generation++;
            resort = false;
        }
    }
    return 0;
}

static const char *
jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

int
sched_request_lists(struct sched_request *rq)
{
    if (rq->group_hosts)
        return 0;
    rq->group_hosts = calloc(SCHED_MAX_LIST, sizeof *rq->group_hosts);
    rq->same_hosts = calloc(SCHED_MAX_LIST, sizeof *rq->same_hosts);
    rq->diff_hosts = calloc(SCHED_MAX_LIST, sizeof *rq->diff_hosts);
    rq->same_ids = calloc(SCHED_MAX_LIST, sizeof *rq->same_ids);
    rq->diff_ids = calloc(SCHED_MAX_LIST, sizeof *rq->diff_ids);
    if (!rq->group_hosts || !rq->same_hosts || !rq->diff_hosts || !rq->same_ids
        || !rq->diff_ids) {
        sched_request_clear(rq);
        return -ENOMEM;
    }
    return 0;
}

void
sched_request_clear(struct sched_request *rq)
{
    free(rq->group_hosts);
    free(rq->same_hosts);
    free(rq->diff_hosts);
    free(rq->same_ids);
    free(rq->diff_ids);
    memset(rq, 0, sizeof *rq);
}

bool
sched_request_is_container(const struct sched_request *rq)
{
    return !strcasecmp(rq->container_format, "docker")
           || !strcasecmp(rq->container_format, "ociarchive");
}

static void
uuid_list(json_t *v, char (*out)[37], size_t *n)
{
    *n = 0;
    if (json_is_string(v)) {
        if (util_is_uuid(json_string_value(v)))
            snprintf(out[(*n)++], 37, "%s", json_string_value(v));
        return;
    }
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (*n < SCHED_MAX_LIST && json_is_string(e) && util_is_uuid(json_string_value(e)))
            snprintf(out[(*n)++], 37, "%s", json_string_value(e));
    }
}

int
sched_request_parse(struct sched_request *rq, const char *instance, const char *spec)
{
    json_error_t jerr;
    snprintf(rq->instance, sizeof rq->instance, "%s", instance);
    json_t *j = json_loads(spec, 0, &jerr);
    if (!json_is_object(j)) {
        json_decref(j);
        return -EINVAL;
    }
    rq->vcpus = json_integer_value(json_object_get(j, "vcpus"));
    rq->memory_mb = json_integer_value(json_object_get(j, "memory_mb"));
    rq->disk_gb = json_integer_value(json_object_get(j, "root_gb"));
    copy_str(rq->az, sizeof rq->az, jstr(j, "availability_zone"));
    copy_str(rq->force_host, sizeof rq->force_host, jstr(j, "force_host"));
    copy_str(rq->group, sizeof rq->group, jstr(j, "group"));
    copy_str(rq->group_policy, sizeof rq->group_policy, jstr(j, "group_policy"));
    json_t *props = json_object_get(j, "image_properties");
    copy_str(rq->hypervisor_type, sizeof rq->hypervisor_type, jstr(props, "hypervisor_type"));
    copy_str(rq->architecture, sizeof rq->architecture, jstr(props, "architecture"));
    copy_str(rq->container_format, sizeof rq->container_format,
             jstr(props, "container_format"));
    rq->container = sched_request_is_container(rq);
    if (util_is_uuid(jstr(j, "image_ref")))
        copy_str(rq->image_ref, sizeof rq->image_ref, jstr(j, "image_ref"));
    json_t *hints = json_object_get(j, "hints");
    json_t *same = json_object_get(hints, "same_host");
    json_t *diff = json_object_get(hints, "different_host");
    int rc = 0;
    if ((same || diff || rq->group[0]) && (rc = sched_request_lists(rq)) == 0) {
        uuid_list(same, rq->same_ids, &rq->n_same_ids);
        uuid_list(diff, rq->diff_ids, &rq->n_diff_ids);
    }
    json_decref(j);
    return rc;
}
