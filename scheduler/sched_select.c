/* The decision: filter the hosts, weigh the survivors, order them. */
#include "sched_core.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct scored {
    struct sched_host *h;
    double w;
    uint64_t key;
};

/* The tie-break key of a host: its id, or a permutation of the ids proper
 * to the scheduler (splitmix64 of id ^ seed). */
static uint64_t
tie_key(const struct sched_policy *pol, const struct sched_host *h)
{
    if (!pol->tie_seed)
        return (uint64_t)h->id;
    uint64_t z = (uint64_t)h->id ^ pol->tie_seed;
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int
cmp_scored(const void *a, const void *b)
{
    const struct scored *x = a, *y = b;
    if (x->w != y->w)
        return x->w < y->w ? 1 : -1;
    return (x->key > y->key) - (x->key < y->key);
}

/* Filters and weighs the hosts of 'idx' (NULL: all of them). */
static size_t
select_among(const struct sched_pipeline *p, const struct sched_policy *pol,
             const struct sched_hosts *hosts, const size_t *idx, size_t n_idx,
             const struct sched_request *rq, struct sched_host **out,
             struct sched_trace *trace, unsigned rnd)
{
    size_t n = 0;
    size_t removed[SCHED_MAX_FILTERS] = { 0 };
    memset(trace, 0, sizeof *trace);
    trace->start = n_idx;
    /* One pass over the hosts with every filter in order: a host counts as
     * removed by the first filter it fails, exactly as if each filter ran
     * over the survivors of the previous one. */
    size_t active[SCHED_MAX_FILTERS], n_active = 0;
    for (size_t f = 0; f < p->n_filters; f++)
        if (!p->filters[f]->applies || p->filters[f]->applies(rq))
            active[n_active++] = f;
    for (size_t j = 0; j < n_idx; j++) {
        struct sched_host *h = &hosts->v[idx ? idx[j] : j];
        size_t k;
        for (k = 0; k < n_active; k++)
            if (!p->filters[active[k]]->pass(h, rq, pol))
                break;
        if (k < n_active)
            removed[active[k]]++;
        else
            out[n++] = h;
    }
    size_t left = n_idx;
    for (size_t f = 0; f < p->n_filters; f++) {
        left -= removed[f];
        trace->left[f] = left;
    }
    if (n < 2)
        return n;
    struct scored *s = calloc(n, sizeof *s);
    double *raw = calloc(n, sizeof *raw);
    if (!s || !raw) {
        free(s);
        free(raw);
        return n;               /* Unweighed order still gives valid hosts. */
    }
    for (size_t i = 0; i < n; i++) {
        s[i].h = out[i];
        s[i].key = tie_key(pol, out[i]);
    }
    for (size_t w = 0; w < p->n_weighers; w++) {
        double mult = p->weighers[w]->multiplier(pol);
        if (mult == 0 || (p->weighers[w]->applies && !p->weighers[w]->applies(rq)))
            continue;
        double lo = 0, hi = 0;
        for (size_t i = 0; i < n; i++) {
            raw[i] = p->weighers[w]->weigh(out[i], rq);
            if (i == 0 || raw[i] < lo)
                lo = raw[i];
            if (i == 0 || raw[i] > hi)
                hi = raw[i];
        }
        /* Nova's normalisation: scores to [0, 1] over the candidates. */
        for (size_t i = 0; i < n; i++)
            s[i].w += mult * (hi > lo ? (raw[i] - lo) / (hi - lo) : 0.0);
    }
    /* Only the best few are ever tried (the caller re-decides after a lost
     * race), so a partial selection of the top 'subset' replaces a full
     * sort: O(n * subset) instead of O(n log n). */
    size_t subset = pol->host_subset_size > 1 ? (size_t)pol->host_subset_size : 1;
    if (subset > n)
        subset = n;
    for (size_t k = 0; k < subset; k++) {
        size_t best = k;
        for (size_t i = k + 1; i < n; i++)
            if (cmp_scored(&s[i], &s[best]) < 0)
                best = i;
        struct scored t = s[k];
        s[k] = s[best];
        s[best] = t;
    }
    /* With several schedulers, picking at random among the best few keeps
     * them from all racing for the same host. */
    size_t pick = rnd % subset;
    if (pick) {
        struct scored t = s[0];
        s[0] = s[pick];
        s[pick] = t;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = s[i].h;
    free(s);
    free(raw);
    return n;
}

size_t
sched_select(const struct sched_pipeline *p, const struct sched_policy *pol,
             const struct sched_hosts *hosts, const struct sched_request *rq,
             struct sched_host **out, struct sched_trace *trace, unsigned rnd)
{
    size_t k = pol->hosts_sampled > 0 ? (size_t)pol->hosts_sampled : 0;
    if (k && hosts->n > k) {
        /* Power of many choices: the best of k random hosts spreads load
         * almost as well as the best of all, at k/n of the cost.  Hosts
         * are drawn with replacement (a 64-bit LCG seeded by 'rnd'). */
        size_t *idx = malloc(k * sizeof *idx);
        if (idx) {
            uint64_t x = (uint64_t)rnd * 6364136223846793005ULL + 1442695040888963407ULL;
            for (size_t i = 0; i < k; i++) {
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                idx[i] = (size_t)((x >> 33) % hosts->n);
            }
            size_t n = select_among(p, pol, hosts, idx, k, rq, out, trace, rnd);
            free(idx);
            if (n)
                return n;
        }
        /* Nothing fitted in the sample: decide over every host, so "no
         * valid host" is never a sampling accident. */
    }
    return select_among(p, pol, hosts, NULL, hosts->n, rq, out, trace, rnd);
}

/* ---- Rankings. */

bool
sched_ranking_eligible(const struct sched_request *rq)
{
    if (rq->force_host[0] || rq->n_same_ids || rq->n_diff_ids)
        return false;
    return !rq->group[0] || !rq->n_group_hosts || !strcmp(rq->group_policy, "anti-affinity");
}

bool
sched_ranking_matches(const struct sched_ranking *r, const struct sched_hosts *hosts,
                      const struct sched_request *rq)
{
    const struct sched_request *a = &r->shape;
    return r->heap && r->generation == hosts->generation && a->vcpus == rq->vcpus
           && a->memory_mb == rq->memory_mb && a->disk_gb == rq->disk_gb
           && !strcmp(a->az, rq->az) && !strcmp(a->hypervisor_type, rq->hypervisor_type)
           && !strcmp(a->architecture, rq->architecture) && a->container == rq->container;
}

/* True when entry a goes before entry b. */
static bool
rank_before(const struct sched_rank_entry *a, const struct sched_rank_entry *b)
{
    return a->w > b->w || (a->w == b->w && a->key < b->key);
}

static void
rank_sift_down(struct sched_ranking *r, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        if (l < r->n && rank_before(&r->heap[l], &r->heap[best]))
            best = l;
        if (l + 1 < r->n && rank_before(&r->heap[l + 1], &r->heap[best]))
            best = l + 1;
        if (best == i)
            return;
        struct sched_rank_entry t = r->heap[i];
        r->heap[i] = r->heap[best];
        r->heap[best] = t;
        i = best;
    }
}

static void
rank_sift_up(struct sched_ranking *r, size_t i)
{
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!rank_before(&r->heap[i], &r->heap[up]))
            return;
        struct sched_rank_entry t = r->heap[i];
        r->heap[i] = r->heap[up];
        r->heap[up] = t;
        i = up;
    }
}

static double
rank_weight(const struct sched_ranking *r, const struct sched_pipeline *p,
            const struct sched_host *h)
{
    double w = 0;
    for (size_t k = 0; k < p->n_weighers; k++)
        if (r->mult[k] != 0 && r->span[k] > 0)
            w += r->mult[k] * (p->weighers[k]->weigh(h, &r->shape) - r->lo[k]) / r->span[k];
    return w;
}

static bool
rank_pass(const struct sched_ranking *r, const struct sched_pipeline *p,
          const struct sched_policy *pol, const struct sched_host *h)
{
    for (size_t k = 0; k < r->n_active; k++)
        if (!p->filters[r->active[k]]->pass(h, &r->shape, pol))
            return false;
    return true;
}

static void
rank_pop(struct sched_ranking *r)
{
    r->heap[0] = r->heap[--r->n];
    rank_sift_down(r, 0);
}

int
sched_ranking_build(struct sched_ranking *r, const struct sched_pipeline *p,
                    const struct sched_policy *pol, const struct sched_hosts *hosts,
                    const struct sched_request *rq)
{
    struct sched_rank_entry *heap = r->heap;
    size_t cap = r->cap;
    if (cap < hosts->n || !heap) {
        free(heap);
        cap = hosts->n ? hosts->n : 1;
        if (!(heap = malloc(cap * sizeof *heap))) {
            memset(r, 0, sizeof *r);
            return -ENOMEM;
        }
    }
    memset(r, 0, sizeof *r);
    r->heap = heap;
    r->cap = cap;
    r->generation = hosts->generation;
    /* The shape: everything the filters and weighers read, without lists. */
    struct sched_request *a = &r->shape;
    a->vcpus = rq->vcpus;
    a->memory_mb = rq->memory_mb;
    a->disk_gb = rq->disk_gb;
    memcpy(a->az, rq->az, sizeof a->az);
    memcpy(a->hypervisor_type, rq->hypervisor_type, sizeof a->hypervisor_type);
    memcpy(a->architecture, rq->architecture, sizeof a->architecture);
    memcpy(a->container_format, rq->container_format, sizeof a->container_format);
    a->container = rq->container;
    for (size_t f = 0; f < p->n_filters; f++)
        if (!p->filters[f]->applies || p->filters[f]->applies(a))
            r->active[r->n_active++] = f;
    for (size_t i = 0; i < hosts->n; i++) {
        struct sched_host *h = &hosts->v[i];
        if (rank_pass(r, p, pol, h))
            r->heap[r->n++] = (struct sched_rank_entry){ h, 0, tie_key(pol, h) };
    }
    for (size_t k = 0; k < p->n_weighers; k++) {
        double mult = p->weighers[k]->multiplier(pol);
        if (mult == 0 || (p->weighers[k]->applies && !p->weighers[k]->applies(a)))
            continue;
        double lo = 0, hi = 0;
        for (size_t i = 0; i < r->n; i++) {
            double x = p->weighers[k]->weigh(r->heap[i].h, a);
            if (i == 0 || x < lo)
                lo = x;
            if (i == 0 || x > hi)
                hi = x;
        }
        r->mult[k] = mult;
        r->lo[k] = lo;
        r->span[k] = hi - lo;
    }
    for (size_t i = 0; i < r->n; i++)
        r->heap[i].w = rank_weight(r, p, r->heap[i].h);
    for (size_t i = r->n / 2; i-- > 0;)
        rank_sift_down(r, i);
    return 0;
}

/* Brings the best valid host to the top: drops hosts that fail the filters
 * now and re-weighs the top until its weight is current. */
static bool
rank_top(struct sched_ranking *r, const struct sched_pipeline *p,
         const struct sched_policy *pol)
{
    while (r->n) {
        struct sched_rank_entry *t = &r->heap[0];
        if (!rank_pass(r, p, pol, t->h)) {
            rank_pop(r);
            continue;
        }
        double w = rank_weight(r, p, t->h);
        if (w == t->w)
            return true;
        t->w = w;
        rank_sift_down(r, 0);
    }
    return false;
}

/* The request's own filters (those its group adds to the shape's). */
static bool
rank_request_pass(const struct sched_pipeline *p, const struct sched_policy *pol,
                  const struct sched_request *rq, const struct sched_host *h)
{
    for (size_t f = 0; f < p->n_filters; f++)
        if ((!p->filters[f]->applies || p->filters[f]->applies(rq))
            && !p->filters[f]->pass(h, rq, pol))
            return false;
    return true;
}

#define RANK_REJECTS_MAX 64

struct sched_host *
sched_ranking_next(struct sched_ranking *r, const struct sched_pipeline *p,
                   const struct sched_policy *pol, const struct sched_request *rq,
                   unsigned rnd)
{
    size_t subset = pol->host_subset_size > 1 ? (size_t)pol->host_subset_size : 1;
    if (subset > SCHED_RANK_SUBSET_MAX)
        subset = SCHED_RANK_SUBSET_MAX;
    struct sched_rank_entry best[SCHED_RANK_SUBSET_MAX], rejects[RANK_REJECTS_MAX];
    size_t k = 0, n_rejects = 0;
    bool own = rq && rq->group[0];
    while (k < subset && rank_top(r, p, pol)) {
        if (own && !rank_request_pass(p, pol, rq, r->heap[0].h)) {
            if (n_rejects == RANK_REJECTS_MAX)
                break;
            rejects[n_rejects++] = r->heap[0];
        } else {
            best[k++] = r->heap[0];
        }
        rank_pop(r);
    }
    for (size_t i = 0; i < n_rejects; i++) {
        r->heap[r->n] = rejects[i];
        rank_sift_up(r, r->n++);
    }
    if (!k || (n_rejects == RANK_REJECTS_MAX && k < subset)) {
        for (size_t i = 0; i < k; i++) {
            r->heap[r->n] = best[i];
            rank_sift_up(r, r->n++);
        }
        return NULL;
    }
    size_t pick = rnd % k;
    for (size_t i = 0; i < k; i++) {
        if (i == pick)
            continue;
        r->heap[r->n] = best[i];
        rank_sift_up(r, r->n++);
    }
    /* The choice goes back on top until the caller has taken its share. */
    r->heap[r->n] = best[pick];
    r->heap[r->n].w = HUGE_VAL;
    rank_sift_up(r, r->n++);
    return best[pick].h;
}

void
sched_ranking_settle(struct sched_ranking *r, const struct sched_pipeline *p)
{
    if (!r->n)
        return;
    r->heap[0].w = rank_weight(r, p, r->heap[0].h);
    rank_sift_down(r, 0);
}

void
sched_ranking_free(struct sched_ranking *r)
{
    free(r->heap);
    memset(r, 0, sizeof *r);
}

void
sched_trace_format(const struct sched_pipeline *p, const struct sched_trace *t,
                   char *buf, size_t len)
{
    size_t off = 0;
    size_t before = t->start;
    int w = snprintf(buf, len, "No valid host was found. There are not enough hosts "
                     "available. (%zu hosts", t->start);
    off = w > 0 ? (size_t)w : 0;
    for (size_t f = 0; f < p->n_filters && off < len; f++) {
        if (t->left[f] != before) {
            w = snprintf(buf + off, len - off, "; filter %s removed %zu, left %zu",
                         p->filters[f]->name, before - t->left[f], t->left[f]);
            off += w > 0 ? (size_t)w : 0;
        }
        before = t->left[f];
        if (!before)
            break;
    }
    if (off < len)
        snprintf(buf + off, len - off, ")");
}
