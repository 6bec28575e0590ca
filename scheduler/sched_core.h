/* nimbus-scheduler: the placement decision (hosts, filters, weighers) and
 * the database cycle that takes build requests and claims resources.
 *
 * The decision part (sched_hosts, sched_filters, sched_weighers,
 * sched_select) is pure C over an in-memory view of the hosts: no I/O, so
 * tests drive it directly.  sched_cycle does the I/O with a synchronous
 * database connection and is run on a worker thread by main.c. */
#ifndef NIMBUS_SCHED_CORE_H
#define NIMBUS_SCHED_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "db.h"

#define SCHED_NAME_MAX 255
#define SCHED_MAX_FILTERS 16
#define SCHED_MAX_WEIGHERS 16
/* Most instance uuids in a same_host/different_host hint and most group
 * member hosts considered. */
#define SCHED_MAX_LIST 256

/* One hypervisor host (a compute_nodes row).  The fields every decision
 * reads come first, so that filtering thousands of hosts touches one or two
 * cache lines per host; the names, read only when a request asks about
 * them, come last. */
struct sched_host {
    int64_t id;
    int64_t vcpus, memory_mb, local_gb, reserved_memory_mb;
    int64_t vcpus_used, memory_mb_used, local_gb_used, running_vms;
    double cpu_ratio, ram_ratio, disk_ratio, load;
    int64_t build_failures;
    time_t last_heartbeat;        /* 0 when never. */
    bool disabled, forced_down;
    bool present;                 /* False once deleted from the table. */
    bool runc;                    /* hypervisor_type is runc: runs containers. */
    char host[SCHED_NAME_MAX + 1];
    char node[SCHED_NAME_MAX + 1];
    char az[SCHED_NAME_MAX + 1];
    char hypervisor_type[64];
    char architecture[32];
};

/* The view of every host, kept fresh from compute_nodes. */
struct sched_hosts {
    struct sched_host *v;
    size_t n, cap;
    /* Changes whenever the array moves (reload, growth, re-sort): host
     * pointers taken before are then invalid. */
    uint64_t generation;
};

void sched_hosts_free(struct sched_hosts *h);
/* Inserts or replaces the hosts of a result whose columns, from 'col', are
 * those of SCHED_HOST_COLUMNS (rows whose id is NULL are skipped).
 * Returns 0 or -ENOMEM. */
int sched_hosts_update(struct sched_hosts *h, const db_result *r, int col)
    __attribute__((warn_unused_result));
/* The host with this id, or NULL. */
struct sched_host *sched_hosts_find(struct sched_hosts *h, int64_t id);

#define SCHED_HOST_COLUMNS \
    "id, host, hypervisor_hostname, availability_zone, hypervisor_type, architecture," \
    " vcpus, memory_mb, local_gb, reserved_host_memory_mb, vcpus_used, memory_mb_used," \
    " local_gb_used, running_vms, cpu_allocation_ratio, ram_allocation_ratio," \
    " disk_allocation_ratio, load, build_failures, disabled, forced_down," \
    " coalesce(extract(epoch FROM last_heartbeat)::bigint, 0) AS heartbeat"

/* What one build request asks for (from build_requests.spec).  The host
 * and instance lists of groups and hints are allocated only for requests
 * that have them (sched_request_lists), so that a whole batch of plain
 * requests stays small. */
struct sched_request {
    char instance[37];
    int64_t vcpus, memory_mb, disk_gb;
    char az[SCHED_NAME_MAX + 1];           /* "" = any. */
    char force_host[SCHED_NAME_MAX + 1];   /* "" = none. */
    char group[37];                        /* "" = none. */
    char group_policy[32];
    char image_ref[37];                    /* "" = none or not a uuid. */
    char hypervisor_type[64];              /* Image property, "" = any. */
    char architecture[32];                 /* Image property, "" = any. */
    char container_format[32];             /* The image's, "" = unknown. */
    bool container;                        /* sched_request_is_container(), kept
                                            * by whoever sets container_format. */
    /* Hosts of the group's other members, and of the same_host /
     * different_host instances (filled from the database).  NULL until
     * sched_request_lists; each holds SCHED_MAX_LIST entries. */
    char (*group_hosts)[SCHED_NAME_MAX + 1];
    size_t n_group_hosts;
    char (*same_hosts)[SCHED_NAME_MAX + 1];
    size_t n_same_hosts;
    char (*diff_hosts)[SCHED_NAME_MAX + 1];
    size_t n_diff_hosts;
    /* Instance uuids from the hints (resolved to hosts by the cycle). */
    char (*same_ids)[37];
    size_t n_same_ids;
    char (*diff_ids)[37];
    size_t n_diff_ids;
};

/* Allocates the lists of 'rq' (no-op when they exist).  Returns 0 or
 * -ENOMEM. */
int sched_request_lists(struct sched_request *rq) __attribute__((warn_unused_result));
/* Frees the lists (NULL-safe) and zeroes the request. */
void sched_request_clear(struct sched_request *rq);

/* True for the container images (container_format docker or ociarchive):
 * they run only on hosts whose hypervisor_type is runc, and nothing else
 * runs there. */
bool sched_request_is_container(const struct sched_request *rq);

/* Parses a build request spec (JSON text) into 'rq' (zeroed by the
 * caller; free with sched_request_clear); returns 0, -EINVAL or -ENOMEM. */
int sched_request_parse(struct sched_request *rq, const char *instance, const char *spec)
    __attribute__((warn_unused_result));

/* Settings of the decision (the [scheduler] section). */
struct sched_policy {
    time_t now;
    int service_down_time;            /* Seconds without heartbeat → dead. */
    double ram_multiplier, cpu_multiplier, disk_multiplier, instances_multiplier;
    double failure_multiplier, load_multiplier, soft_group_multiplier;
    int host_subset_size;             /* Pick at random among the best N. */
    int hosts_sampled;                /* >0: consider this many random hosts
                                       * (all when none of them fits). */
    uint64_t tie_seed;                /* Order of equally good hosts: by id when
                                       * 0, else a permutation of the ids
                                       * proper to this scheduler, so that
                                       * several schedulers facing identical
                                       * hosts do not all race for the same. */
};

/* A filter keeps a host (true) or removes it. */
struct sched_filter {
    const char *name;
    const char *help;
    bool (*pass)(const struct sched_host *h, const struct sched_request *rq,
                 const struct sched_policy *pol);
    /* NULL, or false when the request does not use this filter (it would
     * keep every host): the filter is then skipped. */
    bool (*applies)(const struct sched_request *rq);
};

/* A weigher gives a raw score; higher is better.  Scores are normalised to
 * [0, 1] over the candidates and multiplied by 'multiplier' of the policy. */
struct sched_weigher {
    const char *name;
    const char *help;
    double (*weigh)(const struct sched_host *h, const struct sched_request *rq);
    double (*multiplier)(const struct sched_policy *pol);
    /* NULL, or false when the weigher gives every host the same score for
     * this request. */
    bool (*applies)(const struct sched_request *rq);
};

const struct sched_filter *sched_filter_find(const char *name);
const struct sched_weigher *sched_weigher_find(const char *name);
/* The tables, for documentation and tests. */
extern const struct sched_filter sched_filters[];
extern const size_t sched_filters_count;
extern const struct sched_weigher sched_weighers[];
extern const size_t sched_weighers_count;

/* The configured pipeline. */
struct sched_pipeline {
    const struct sched_filter *filters[SCHED_MAX_FILTERS];
    size_t n_filters;
    const struct sched_weigher *weighers[SCHED_MAX_WEIGHERS];
    size_t n_weighers;
};

/* Builds a pipeline from comma-separated names; on an unknown name returns
 * -EINVAL and names it in 'err'. */
int sched_pipeline_parse(struct sched_pipeline *p, const char *filters, const char *weighers,
                         char *err, size_t errlen) __attribute__((warn_unused_result));

/* The outcome of filtering: which filter left how many hosts. */
struct sched_trace {
    size_t start;
    size_t left[SCHED_MAX_FILTERS];
};

/* Fills 'out' (room for hosts->n entries) with the candidate hosts and
 * returns how many; out[0] is the choice (picked at random among the best
 * host_subset_size), the order of the rest is unspecified; 'trace' says how many hosts
 * each filter left.  'rnd' is a random number for the subset choice. */
size_t sched_select(const struct sched_pipeline *p, const struct sched_policy *pol,
                    const struct sched_hosts *hosts, const struct sched_request *rq,
                    struct sched_host **out, struct sched_trace *trace, unsigned rnd);

/* A ranking of the hosts for the requests of one shape (same resources,
 * zone and image; no group, hint or forced host), so that a batch of them
 * costs one pass over the hosts instead of one per request: the hosts that
 * pass the filters, in a heap ordered by weight.  The weighers' [0, 1]
 * normalisation is computed once, when the ranking is built; a host's
 * filters and weight are evaluated again when it reaches the top, so
 * resources taken meanwhile (by this ranking or any other decision on the
 * same view) are seen.  The ranking holds pointers into the host view and
 * is stale once its generation changes. */
struct sched_rank_entry {
    struct sched_host *h;
    double w;
    uint64_t key;                     /* Tie-break (lower first). */
};

struct sched_ranking {
    struct sched_request shape;       /* Its lists stay NULL. */
    uint64_t generation;              /* hosts->generation when built. */
    struct sched_rank_entry *heap;
    size_t n, cap;
    size_t active[SCHED_MAX_FILTERS];
    size_t n_active;
    double lo[SCHED_MAX_WEIGHERS], span[SCHED_MAX_WEIGHERS], mult[SCHED_MAX_WEIGHERS];
};

/* A ranking chooses among at most this many best hosts. */
#define SCHED_RANK_SUBSET_MAX 64

/* True when 'rq' can be decided by a ranking: no hint and no forced host;
 * a server group only when its policy adds filters and no weight (hard
 * anti-affinity, or affinity before any member has a host) or when it has
 * no member on a host yet. */
bool sched_ranking_eligible(const struct sched_request *rq);
/* True when 'rq' has the shape of 'r' (and 'r' is built on the current
 * generation of 'hosts'). */
bool sched_ranking_matches(const struct sched_ranking *r, const struct sched_hosts *hosts,
                           const struct sched_request *rq);
/* Builds 'r' (zeroed or previously built) for the shape of 'rq'.  Returns 0
 * or -ENOMEM. */
int sched_ranking_build(struct sched_ranking *r, const struct sched_pipeline *p,
                        const struct sched_policy *pol, const struct sched_hosts *hosts,
                        const struct sched_request *rq) __attribute__((warn_unused_result));
/* The best host for 'rq' (of the ranking's shape) now, or NULL when none
 * passes the filters any longer or too many good hosts fail the request's
 * own filters (its group): the caller then decides over every host.  Hosts
 * that fail the shape's filters are dropped; hosts that fail only the
 * request's stay.  With host_subset_size N > 1 the choice is random among
 * the N best.  The caller then adds the request's resources to the host
 * and calls sched_ranking_settle. */
struct sched_host *sched_ranking_next(struct sched_ranking *r, const struct sched_pipeline *p,
                                      const struct sched_policy *pol,
                                      const struct sched_request *rq, unsigned rnd);
/* Re-weighs the host last returned by sched_ranking_next. */
void sched_ranking_settle(struct sched_ranking *r, const struct sched_pipeline *p);
void sched_ranking_free(struct sched_ranking *r);

/* Formats the fault message for a request no host could take. */
void sched_trace_format(const struct sched_pipeline *p, const struct sched_trace *t,
                        char *buf, size_t len);

/* ---- The database cycle. */

struct sched_counters {
    uint64_t placed, no_valid_host, lost_races, cycles, leased, errors, rescheduled;
    /* Where the time goes, in ns: leasing, deciding (parse, image and hint
     * look-ups, filters and weighers), claiming (the claim transaction),
     * reading hosts (loads and refreshes). */
    uint64_t ns_lease, ns_decide, ns_claim, ns_hosts;
};

#define SCHED_MAX_RANKINGS 8
#define SCHED_IMAGE_CACHE 32
#define SCHED_IMAGE_TTL 30        /* Seconds an image's properties are kept. */

/* What the image filter needs of an image (nimbus-image's table). */
struct sched_image {
    char id[37];
    char container_format[32];
    char hypervisor_type[64];
    char architecture[32];
    time_t fetched;               /* 0: empty slot. */
};

struct sched_ctx {
    db_conn *conn;
    char name[SCHED_NAME_MAX + 1];    /* This scheduler's service host name. */
    struct sched_pipeline pipeline;
    struct sched_policy policy;
    int batch_size;
    int lease_seconds;
    int max_attempts;
    int max_reschedules;
    struct sched_hosts hosts;
    bool hosts_loaded;
    /* Rankings of the current cycle (rebuilt each cycle; the heaps are
     * kept for reuse). */
    struct sched_ranking rankings[SCHED_MAX_RANKINGS];
    size_t n_rankings;
    /* Recently read images, so that a cycle of requests for known images
     * costs no image query. */
    struct sched_image images[SCHED_IMAGE_CACHE];
    struct sched_counters counters;
    unsigned seed;
    /* Decision latencies (lease to claim or failure) in ms, for the
     * figures logged at exit; at most SCHED_LATENCY_SAMPLES are kept. */
    double *latency;
    size_t n_latency;
};

#define SCHED_LATENCY_SAMPLES 100000

/* p-th percentile (0..100) of the recorded decision latencies, in ms. */
double sched_latency_percentile(struct sched_ctx *s, double p);

/* Loads (or reloads) every host.  Returns 0 or a negative errno. */
int sched_load_hosts(struct sched_ctx *s) __attribute__((warn_unused_result));
/* Reloads the hosts with these ids. */
int sched_refresh_hosts(struct sched_ctx *s, const int64_t *ids, size_t n)
    __attribute__((warn_unused_result));
/* Takes up to batch_size requests, decides them all against the host view
 * and claims them with one statement per round (see sched_cycle.c).
 * Returns the number of requests leased, or a negative errno. */
int sched_cycle(struct sched_ctx *s) __attribute__((warn_unused_result));
/* Builds stuck on a dead host (no heartbeat for service_down_time, or
 * forced down): gives their resources back and puts them back in the queue,
 * or ERROR after max_reschedules.  Returns how many, or a negative errno. */
int sched_rescue_dead_hosts(struct sched_ctx *s) __attribute__((warn_unused_result));
/* Frees what the context owns (not the connection). */
void sched_ctx_free(struct sched_ctx *s);

/* Records this scheduler's heartbeat in scheduler_services. */
int sched_heartbeat(struct sched_ctx *s) __attribute__((warn_unused_result));

#endif
