/* The decision: filter the hosts, weigh the survivors, order them. */
#include "sched_core.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct scored {
    struct sched_host *h;
    double w;
};

static int
cmp_scored(const void *a, const void *b)
{
    const struct scored *x = a, *y = b;
    if (x->w != y->w)
        return x->w < y->w ? 1 : -1;
    return (x->h->id > y->h->id) - (x->h->id < y->h->id);
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
    for (size_t i = 0; i < n; i++)
        s[i].h = out[i];
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
