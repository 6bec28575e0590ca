/* The decision: filter the hosts, weigh the survivors, order them. */
#include "sched.h"

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

size_t
sched_select(const struct sched_pipeline *p, const struct sched_policy *pol,
             const struct sched_hosts *hosts, const struct sched_request *rq,
             struct sched_host **out, struct sched_trace *trace, unsigned rnd)
{
    size_t n = 0;
    memset(trace, 0, sizeof *trace);
    trace->start = hosts->n;
    for (size_t i = 0; i < hosts->n; i++)
        out[n++] = &hosts->v[i];
    for (size_t f = 0; f < p->n_filters; f++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (p->filters[f]->pass(out[i], rq, pol))
                out[k++] = out[i];
        n = k;
        trace->left[f] = n;
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
        if (mult == 0)
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
    qsort(s, n, sizeof *s, cmp_scored);
    /* With several schedulers, picking at random among the best few keeps
     * them from all racing for the same host. */
    size_t subset = pol->host_subset_size > 1 ? (size_t)pol->host_subset_size : 1;
    if (subset > n)
        subset = n;
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
