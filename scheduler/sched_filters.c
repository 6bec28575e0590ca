/* Host filters and weighers: each a small function in one table, picked and
 * ordered by [scheduler] filters and weighers. */
#include "sched_core.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool
in_list(char (*list)[SCHED_NAME_MAX + 1], size_t n, const char *host)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], host))
            return true;
    return false;
}

static bool
f_enabled(const struct sched_host *h, const struct sched_request *rq,
          const struct sched_policy *pol)
{
    return h->present && !h->disabled;
}

static bool
f_alive(const struct sched_host *h, const struct sched_request *rq,
        const struct sched_policy *pol)
{
    return !h->forced_down && h->last_heartbeat + pol->service_down_time >= pol->now;
}

static bool
f_az(const struct sched_host *h, const struct sched_request *rq,
     const struct sched_policy *pol)
{
    return !rq->az[0] || !strcmp(rq->az, h->az);
}

static bool
f_force_host(const struct sched_host *h, const struct sched_request *rq,
             const struct sched_policy *pol)
{
    return !rq->force_host[0] || !strcmp(rq->force_host, h->host)
           || !strcmp(rq->force_host, h->node);
}

static bool
f_ram(const struct sched_host *h, const struct sched_request *rq,
      const struct sched_policy *pol)
{
    return (double)(h->memory_mb_used + rq->memory_mb)
           <= (double)(h->memory_mb - h->reserved_memory_mb) * h->ram_ratio;
}

static bool
f_cpu(const struct sched_host *h, const struct sched_request *rq,
      const struct sched_policy *pol)
{
    return (double)(h->vcpus_used + rq->vcpus) <= (double)h->vcpus * h->cpu_ratio;
}

static bool
f_disk(const struct sched_host *h, const struct sched_request *rq,
       const struct sched_policy *pol)
{
    return (double)(h->local_gb_used + rq->disk_gb) <= (double)h->local_gb * h->disk_ratio;
}

/* Container images (container_format docker or ociarchive) run only on
 * runc hosts, and runc hosts run nothing else; then the image's
 * hypervisor_type and architecture properties, when set, must match. */
static bool
f_image_props(const struct sched_host *h, const struct sched_request *rq,
              const struct sched_policy *pol)
{
    if (h->runc != rq->container)
        return false;
    if (rq->hypervisor_type[0] && strcasecmp(rq->hypervisor_type, h->hypervisor_type))
        return false;
    return !rq->architecture[0] || !strcasecmp(rq->architecture, h->architecture);
}

static bool
f_affinity(const struct sched_host *h, const struct sched_request *rq,
           const struct sched_policy *pol)
{
    if (strcmp(rq->group_policy, "affinity") || !rq->n_group_hosts)
        return true;
    return in_list(rq->group_hosts, rq->n_group_hosts, h->host);
}

static bool
f_anti_affinity(const struct sched_host *h, const struct sched_request *rq,
                const struct sched_policy *pol)
{
    if (strcmp(rq->group_policy, "anti-affinity"))
        return true;
    return !in_list(rq->group_hosts, rq->n_group_hosts, h->host);
}

static bool
f_same_host(const struct sched_host *h, const struct sched_request *rq,
            const struct sched_policy *pol)
{
    return !rq->n_same_ids || in_list(rq->same_hosts, rq->n_same_hosts, h->host);
}

static bool
f_different_host(const struct sched_host *h, const struct sched_request *rq,
                 const struct sched_policy *pol)
{
    return !in_list(rq->diff_hosts, rq->n_diff_hosts, h->host);
}

static bool a_az(const struct sched_request *rq) { return rq->az[0] != '\0'; }
static bool a_force(const struct sched_request *rq) { return rq->force_host[0] != '\0'; }
static bool a_aff(const struct sched_request *rq) { return !strcmp(rq->group_policy, "affinity"); }
static bool
a_anti(const struct sched_request *rq)
{
    return !strcmp(rq->group_policy, "anti-affinity");
}
static bool a_same(const struct sched_request *rq) { return rq->n_same_ids > 0; }
static bool a_diff(const struct sched_request *rq) { return rq->n_diff_hosts > 0; }
static bool
a_soft(const struct sched_request *rq)
{
    return rq->n_group_hosts && !strncmp(rq->group_policy, "soft-", 5);
}

const struct sched_filter sched_filters[] = {
    { "enabled", "The host's compute service is enabled.", f_enabled },
    { "alive", "The host heart-beat within service_down_time and is not forced down.", f_alive },
    { "availability_zone", "The host is in the requested availability zone.", f_az, a_az },
    { "force_host", "The host is the one an admin asked for (zone:host).", f_force_host, a_force },
    { "ram", "Free RAM with ram_allocation_ratio fits the flavor.", f_ram },
    { "cpu", "Free vCPUs with cpu_allocation_ratio fit the flavor.", f_cpu },
    { "disk", "Free disk with disk_allocation_ratio fits the flavor.", f_disk },
    { "image_properties", "Container images (docker, ociarchive) only on runc hosts and"
      " nothing else there; hypervisor type and architecture match the image's.",
      f_image_props },
    { "affinity", "Hard affinity: the host of the group's other members.", f_affinity, a_aff },
    { "anti_affinity", "Hard anti-affinity: no other member of the group.", f_anti_affinity, a_anti },
    { "same_host", "The host of the instances in the same_host hint.", f_same_host, a_same },
    { "different_host", "None of the instances in the different_host hint.", f_different_host, a_diff },
};
const size_t sched_filters_count = sizeof sched_filters / sizeof sched_filters[0];

/* ---- Weighers (raw scores; higher is better before the multiplier). */

static double
w_ram(const struct sched_host *h, const struct sched_request *rq)
{
    return (double)(h->memory_mb - h->reserved_memory_mb) * h->ram_ratio
           - (double)h->memory_mb_used;
}

static double
w_cpu(const struct sched_host *h, const struct sched_request *rq)
{
    return (double)h->vcpus * h->cpu_ratio - (double)h->vcpus_used;
}

static double
w_disk(const struct sched_host *h, const struct sched_request *rq)
{
    return (double)h->local_gb * h->disk_ratio - (double)h->local_gb_used;
}

static double
w_instances(const struct sched_host *h, const struct sched_request *rq)
{
    return -(double)h->running_vms;
}

static double
w_failures(const struct sched_host *h, const struct sched_request *rq)
{
    return -(double)h->build_failures;
}

static double
w_load(const struct sched_host *h, const struct sched_request *rq)
{
    return -h->load;
}

static double
w_soft_group(const struct sched_host *h, const struct sched_request *rq)
{
    double members = 0;
    for (size_t i = 0; i < rq->n_group_hosts; i++)
        if (!strcmp(rq->group_hosts[i], h->host))
            members++;
    if (!strcmp(rq->group_policy, "soft-affinity"))
        return members;
    if (!strcmp(rq->group_policy, "soft-anti-affinity"))
        return -members;
    return 0;
}

static double m_ram(const struct sched_policy *p) { return p->ram_multiplier; }
static double m_cpu(const struct sched_policy *p) { return p->cpu_multiplier; }
static double m_disk(const struct sched_policy *p) { return p->disk_multiplier; }
static double m_instances(const struct sched_policy *p) { return p->instances_multiplier; }
static double m_failures(const struct sched_policy *p) { return p->failure_multiplier; }
static double m_load(const struct sched_policy *p) { return p->load_multiplier; }
static double m_soft_group(const struct sched_policy *p) { return p->soft_group_multiplier; }

const struct sched_weigher sched_weighers[] = {
    { "ram", "More free RAM is better (spread); negative multiplier packs.", w_ram, m_ram },
    { "cpu", "More free vCPUs is better (spread); negative multiplier packs.", w_cpu, m_cpu },
    { "disk", "More free disk is better.", w_disk, m_disk },
    { "instances", "Fewer instances is better (spread).", w_instances, m_instances },
    { "build_failures", "Hosts with recent build failures come last.", w_failures, m_failures },
    { "load", "Lower reported load is better.", w_load, m_load },
    { "soft_group", "Soft affinity / soft anti-affinity of the server group.", w_soft_group,
      m_soft_group, a_soft },
};
const size_t sched_weighers_count = sizeof sched_weighers / sizeof sched_weighers[0];

const struct sched_filter *
sched_filter_find(const char *name)
{
    for (size_t i = 0; i < sched_filters_count; i++)
        if (!strcmp(sched_filters[i].name, name))
            return &sched_filters[i];
    return NULL;
}

const struct sched_weigher *
sched_weigher_find(const char *name)
{
    for (size_t i = 0; i < sched_weighers_count; i++)
        if (!strcmp(sched_weighers[i].name, name))
            return &sched_weighers[i];
    return NULL;
}

/* Splits 'list' at commas and calls 'add' with each trimmed name. */
static int
each_name(const char *list, int (*add)(void *ctx, const char *name), void *ctx)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list ? list : "");
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ' || *t == '\t')
            t++;
        char *e = t + strlen(t);
        while (e > t && (e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        if (!*t)
            continue;
        int rc = add(ctx, t);
        if (rc < 0)
            return rc;
    }
    return 0;
}

struct parse_ctx {
    struct sched_pipeline *p;
    char *err;
    size_t errlen;
};

static int
add_filter(void *arg, const char *name)
{
    struct parse_ctx *c = arg;
    const struct sched_filter *f = sched_filter_find(name);
    if (!f || c->p->n_filters == SCHED_MAX_FILTERS) {
        snprintf(c->err, c->errlen, "unknown or too many filters: '%s'", name);
        return -EINVAL;
    }
    c->p->filters[c->p->n_filters++] = f;
    return 0;
}

static int
add_weigher(void *arg, const char *name)
{
    struct parse_ctx *c = arg;
    const struct sched_weigher *w = sched_weigher_find(name);
    if (!w || c->p->n_weighers == SCHED_MAX_WEIGHERS) {
        snprintf(c->err, c->errlen, "unknown or too many weighers: '%s'", name);
        return -EINVAL;
    }
    c->p->weighers[c->p->n_weighers++] = w;
    return 0;
}

int
sched_pipeline_parse(struct sched_pipeline *p, const char *filters, const char *weighers,
                     char *err, size_t errlen)
{
    struct parse_ctx c = { p, err, errlen };
    memset(p, 0, sizeof *p);
    int rc = each_name(filters, add_filter, &c);
    if (rc == 0)
        rc = each_name(weighers, add_weigher, &c);
    return rc;
}
