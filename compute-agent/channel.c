#include "channel.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "state_json.h"
#include "strbuf.h"

#define CHAN_MAX_EVENTS 1000
#define CHAN_MAX_ANSWER (SJ_MAX_DOC_BYTES + 1)

struct chan {
    char *api_url, *node_esc, *token, *register_json, *inventory_json;
    unsigned wait_s, heartbeat_ms;
    chan_desired_fn fn;
    void *fn_arg;

    uv_async_t async;
    pthread_t poller, reporter;
    bool poller_started, reporter_started;
    atomic_bool stopping;
    atomic_bool registered;           /* Once: the reporter waits for it. */

    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct desired_set pending;       /* Received, not yet handed to the loop. */
    bool have_pending;
    char *observed;                   /* Latest unsent observed document. */
    uint64_t observed_seq;            /* Number of that document (chan_stats). */
    char *events[CHAN_MAX_EVENTS];    /* Unsent events, oldest first. */
    size_t n_events;
    struct chan_stats st;
};

struct answer {
    char *data;
    size_t len;
    bool too_big;
};

static size_t
on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct answer *a = ud;
    size_t n = size * nmemb;
    if (a->len + n > CHAN_MAX_ANSWER) {
        a->too_big = true;
        return 0;
    }
    char *d = realloc(a->data, a->len + n + 1);
    if (!d)
        return 0;
    memcpy(d + a->len, ptr, n);
    a->data = d;
    a->len += n;
    a->data[a->len] = 0;
    return n;
}

static int
on_progress(void *p, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct chan *c = p;
    return atomic_load(&c->stopping) ? 1 : 0;
}

/* One request; returns the HTTP status, or -1 when there was none. */
static long
request(struct chan *c, CURL *h, const char *method, const char *path, const char *body,
        struct answer *out, long timeout_s)
{
    char url[2048], auth[1024];
    if (bfmt(url, sizeof url, "%s/nodes/%s%s", c->api_url, c->node_esc, path) ||
        bfmt(auth, sizeof auth, "Authorization: Bearer %s", c->token))
        return -1;
    curl_easy_reset(h);
    struct curl_slist *hdr = curl_slist_append(NULL, auth);
    hdr = curl_slist_append(hdr, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Accept: application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdr);
    long status = -1;
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

static void
count_error(struct chan *c)
{
    pthread_mutex_lock(&c->mu);
    c->st.errors++;
    pthread_mutex_unlock(&c->mu);
}

/* Sleeps up to 'ms' unless stopping (or, for the reporter, woken). */
static void
nap(struct chan *c, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    if (!atomic_load(&c->stopping))
        pthread_cond_timedwait(&c->cond, &c->mu, &ts);
    pthread_mutex_unlock(&c->mu);
}

/* Exponential backoff with jitter: 0.5 s doubling to 30 s, +-25 %. */
static unsigned
backoff_next(unsigned *b, unsigned *seed)
{
    unsigned cur = *b;
    *b = *b * 2 > 30000 ? 30000 : *b * 2;
    return cur * 3 / 4 + (unsigned)rand_r(seed) % (cur / 2 + 1);
}

static void *
poller_main(void *arg)
{
    struct chan *c = arg;
    CURL *h = curl_easy_init();
    bool registered = false;
    uint64_t since = 0;
    unsigned backoff = 500, seed = (unsigned)time(NULL);
    while (h && !atomic_load(&c->stopping)) {
        struct answer a = { 0 };
        long status;
        if (!registered) {
            status = request(c, h, "POST", "/register", c->register_json, &a, 10);
            free(a.data);
            if (status == 200 || status == 204) {
                registered = true;
                atomic_store(&c->registered, true);
                backoff = 500;
                pthread_mutex_lock(&c->mu);
                c->st.registrations++;
                pthread_mutex_unlock(&c->mu);
            } else {
                count_error(c);
                nap(c, backoff_next(&backoff, &seed));
            }
            continue;
        }
        char path[128];
        bfmt(path, sizeof path, "/desired?since=%llu&wait=%u", (unsigned long long)since, c->wait_s);
        memset(&a, 0, sizeof a);
        status = request(c, h, "GET", path, NULL, &a, (long)c->wait_s + 15);
        pthread_mutex_lock(&c->mu);
        c->st.polls++;
        pthread_mutex_unlock(&c->mu);
        if (status == 200 && a.data) {
            struct desired_set ds;
            char err[256];
            if (sj_parse_desired(a.data, a.len, &ds, err, sizeof err) == 0) {
                since = ds.version;
                backoff = 500;
                pthread_mutex_lock(&c->mu);
                if (c->have_pending)
                    desired_set_free(&c->pending);
                c->pending = ds;
                c->have_pending = true;
                c->st.desired_received++;
                pthread_mutex_unlock(&c->mu);
                uv_async_send(&c->async);
            } else {
                count_error(c);
                nap(c, backoff_next(&backoff, &seed));
            }
        } else if (status == 304) {
            backoff = 500;
        } else if (status == 401 || status == 404) {
            registered = false;
            count_error(c);
            nap(c, backoff_next(&backoff, &seed));
        } else {
            count_error(c);
            nap(c, backoff_next(&backoff, &seed));
        }
        free(a.data);
    }
    curl_easy_cleanup(h);
    return NULL;
}

static uint64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void *
reporter_main(void *arg)
{
    struct chan *c = arg;
    CURL *h = curl_easy_init();
    unsigned backoff = 500, seed = (unsigned)time(NULL) ^ 0x5bd1e995u;
    uint64_t next_beat = 0;
    while (h && !atomic_load(&c->stopping)) {
        bool failed = false;
        if (!atomic_load(&c->registered)) {
            nap(c, 100);
            continue;
        }
        if (mono_ms() >= next_beat) {
            struct answer a = { 0 };
            long s = request(c, h, "PUT", "/inventory", c->inventory_json, &a, 10);
            free(a.data);
            if (s >= 200 && s < 300)
                next_beat = mono_ms() + c->heartbeat_ms;
            else
                failed = true;
        }
        pthread_mutex_lock(&c->mu);
        char *obs = c->observed;
        uint64_t obs_seq = c->observed_seq;
        c->observed = NULL;
        size_t n = c->n_events < 100 ? c->n_events : 100;
        char *batch[100];
        memcpy(batch, c->events, n * sizeof *batch);
        memmove(c->events, c->events + n, (c->n_events - n) * sizeof *c->events);
        c->n_events -= n;
        pthread_mutex_unlock(&c->mu);

        if (obs && !failed) {
            struct answer a = { 0 };
            long s = request(c, h, "PUT", "/observed", obs, &a, 10);
            free(a.data);
            if (s >= 200 && s < 300) {
                pthread_mutex_lock(&c->mu);
                c->st.reports++;
                c->st.observed_delivered = obs_seq;
                pthread_mutex_unlock(&c->mu);
                free(obs);
                obs = NULL;
            } else {
                failed = true;
            }
        }
        if (n && !failed) {
            struct strbuf b = { 0 };
            sb_add(&b, "{\"events\":[");
            for (size_t i = 0; i < n; i++) {
                if (i)
                    sb_add(&b, ",");
                sb_add(&b, batch[i]);
            }
            sb_add(&b, "]}");
            struct answer a = { 0 };
            long s = request(c, h, "POST", "/events", b.s, &a, 10);
            free(a.data);
            sb_free(&b);
            if (s >= 200 && s < 300) {
                pthread_mutex_lock(&c->mu);
                c->st.events_sent += n;
                pthread_mutex_unlock(&c->mu);
                for (size_t i = 0; i < n; i++)
                    free(batch[i]);
                n = 0;
            } else {
                failed = true;
            }
        }
        /* Put back what was not sent: the observed state unless a newer one
         * came, events in front of newer ones (room permitting). */
        pthread_mutex_lock(&c->mu);
        if (obs) {
            if (c->observed)
                free(obs);
            else
                c->observed = obs;
        }
        if (n) {
            size_t room = CHAN_MAX_EVENTS - c->n_events;
            size_t keep = n < room ? n : room;
            memmove(c->events + keep, c->events, c->n_events * sizeof *c->events);
            memcpy(c->events, batch + (n - keep), keep * sizeof *batch);
            c->n_events += keep;
            for (size_t i = 0; i < n - keep; i++)
                free(batch[i]);
            c->st.events_dropped += n - keep;
        }
        bool more = c->observed || c->n_events;
        pthread_mutex_unlock(&c->mu);

        if (failed) {
            count_error(c);
            nap(c, backoff_next(&backoff, &seed));
            continue;
        }
        backoff = 500;
        if (!more) {
            uint64_t now = mono_ms();
            nap(c, next_beat > now ? (unsigned)(next_beat - now) : 0);
        }
    }
    curl_easy_cleanup(h);
    return NULL;
}

static void
on_async(uv_async_t *a)
{
    struct chan *c = a->data;
    pthread_mutex_lock(&c->mu);
    bool have = c->have_pending;
    struct desired_set ds = c->pending;
    c->have_pending = false;
    memset(&c->pending, 0, sizeof c->pending);
    pthread_mutex_unlock(&c->mu);
    if (have)
        c->fn(c->fn_arg, &ds);
}

static char *
xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

static void
curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int
chan_start(uv_loop_t *loop, const struct chan_config *cfg, chan_desired_fn fn,
           void *arg, struct chan **out)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, curl_init_once);
    struct chan *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    CURL *e = curl_easy_init();
    char *esc = e ? curl_easy_escape(e, cfg->node, 0) : NULL;
    c->node_esc = esc ? strdup(esc) : NULL;
    curl_free(esc);
    curl_easy_cleanup(e);
    c->api_url = xstrdup(cfg->api_url);
    c->token = xstrdup(cfg->token);
    c->register_json = xstrdup(cfg->register_json ? cfg->register_json : "{}");
    c->inventory_json = xstrdup(cfg->inventory_json ? cfg->inventory_json : "{}");
    c->wait_s = cfg->wait_s ? cfg->wait_s : 30;
    c->heartbeat_ms = cfg->heartbeat_ms ? cfg->heartbeat_ms : 5000;
    c->fn = fn;
    c->fn_arg = arg;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, NULL);
    if (!c->node_esc || !c->api_url || !c->token || !c->register_json || !c->inventory_json) {
        chan_stop(c);
        return -ENOMEM;
    }
    size_t ul = strlen(c->api_url);
    while (ul && c->api_url[ul - 1] == '/')
        c->api_url[--ul] = 0;
    int r = uv_async_init(loop, &c->async, on_async);
    if (r) {
        free(c->api_url);
        free(c->node_esc);
        free(c->token);
        free(c->register_json);
        free(c->inventory_json);
        free(c);
        return r;
    }
    c->async.data = c;
    if ((r = pthread_create(&c->poller, NULL, poller_main, c)) == 0)
        c->poller_started = true;
    if (!r && (r = pthread_create(&c->reporter, NULL, reporter_main, c)) == 0)
        c->reporter_started = true;
    if (r) {
        chan_stop(c);
        return -r;
    }
    *out = c;
    return 0;
}

void
chan_report_observed(struct chan *c, const char *json)
{
    char *copy = strdup(json);
    if (!copy)
        return;
    pthread_mutex_lock(&c->mu);
    free(c->observed);
    c->observed = copy;
    c->observed_seq++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

void
chan_report_event(struct chan *c, const char *json)
{
    /* Each event gets an id so the API can ignore a retried batch. */
    json_t *j = json_loads(json, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }
    unsigned char rnd[16];
    FILE *f = fopen("/dev/urandom", "re");
    if (!f || fread(rnd, 1, sizeof rnd, f) != sizeof rnd)
        memset(rnd, 0, sizeof rnd);
    if (f)
        fclose(f);
    char id[33];
    for (int i = 0; i < 16; i++)
        bfmt(id + 2 * i, 3, "%02x", rnd[i]);
    json_object_set_new(j, "id", json_string(id));
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    if (!s)
        return;
    pthread_mutex_lock(&c->mu);
    if (c->n_events == CHAN_MAX_EVENTS) {
        free(c->events[0]);
        memmove(c->events, c->events + 1, (CHAN_MAX_EVENTS - 1) * sizeof *c->events);
        c->n_events--;
        c->st.events_dropped++;
    }
    c->events[c->n_events++] = s;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

void
chan_stats(struct chan *c, struct chan_stats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    pthread_mutex_unlock(&c->mu);
}

static void
chan_closed(uv_handle_t *h)
{
    free(h->data);
}

void
chan_stop(struct chan *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    atomic_store(&c->stopping, true);
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    if (c->poller_started)
        pthread_join(c->poller, NULL);
    if (c->reporter_started)
        pthread_join(c->reporter, NULL);
    if (c->have_pending)
        desired_set_free(&c->pending);
    free(c->observed);
    for (size_t i = 0; i < c->n_events; i++)
        free(c->events[i]);
    free(c->api_url);
    free(c->node_esc);
    free(c->token);
    free(c->register_json);
    free(c->inventory_json);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cond);
    if (c->async.loop) {
        c->async.data = c;
        uv_close((uv_handle_t *)&c->async, chan_closed);
    } else {
        free(c);
    }
}
