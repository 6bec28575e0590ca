/* Neutron list semantics (see net_list.h). */
#include "net_list.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void
net_list_query_init(struct net_list_query *q)
{
    memset(q, 0, sizeof *q);
}

static int
add_str(const char **arr, size_t *n, const char *v)
{
    if (*n >= NET_LIST_MAX_PARAMS)
        return -E2BIG;
    arr[(*n)++] = v;
    return 0;
}

int
net_list_query_add(struct net_list_query *q, const char *name,
                   const char *value, char *errbuf, size_t errlen)
{
    if (!strcmp(name, "fields"))
        return add_str(q->fields, &q->n_fields, value);
    if (!strcmp(name, "sort_key"))
        return add_str(q->sort_keys, &q->n_sort_keys, value);
    if (!strcmp(name, "sort_dir")) {
        if (strcmp(value, "asc") && strcmp(value, "desc")) {
            snprintf(errbuf, errlen, "Invalid input for sort_dir. Reason: '%s' is not in ['asc', 'desc'].",
                     value);
            return -EINVAL;
        }
        return add_str(q->sort_dirs, &q->n_sort_dirs, value);
    }
    if (!strcmp(name, "limit")) {
        char *end = NULL;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (!*value || *end || errno || v < 0) {
            snprintf(errbuf, errlen, "Invalid input for limit. Reason: '%.64s' is not a non-negative integer.",
                     value);
            return -EINVAL;
        }
        q->limit = v;
        return 0;
    }
    if (!strcmp(name, "marker")) {
        q->marker = *value ? value : NULL;
        return 0;
    }
    if (!strcmp(name, "page_reverse")) {
        q->page_reverse = !strcasecmp(value, "true") || !strcmp(value, "1");
        return 0;
    }
    if (q->n_filters >= NET_LIST_MAX_PARAMS)
        return -E2BIG;
    q->filters[q->n_filters].name = name;
    q->filters[q->n_filters].value = value;
    q->n_filters++;
    return 0;
}

/* Does one attribute value match one filter value? */
static int
value_matches(const json_t *v, const char *want)
{
    char num[32];

    switch (json_typeof(v)) {
    case JSON_STRING:
        return !strcmp(json_string_value(v), want);
    case JSON_TRUE:
        return !strcasecmp(want, "true") || !strcmp(want, "1");
    case JSON_FALSE:
        return !strcasecmp(want, "false") || !strcmp(want, "0");
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return !strcmp(num, want);
    case JSON_REAL:
        return 0;
    case JSON_NULL:
        return !*want || !strcmp(want, "None");
    case JSON_ARRAY: {
        /* A list attribute matches when any element does; for lists of
         * objects such as fixed_ips the filter is "key=value". */
        size_t i;
        json_t *e;
        const char *eq = strchr(want, '=');
        json_array_foreach(v, i, e) {
            if (json_is_object(e) && eq) {
                char key[64];
                size_t kl = (size_t)(eq - want);
                if (kl >= sizeof key)
                    continue;
                memcpy(key, want, kl);
                key[kl] = '\0';
                const json_t *ev = json_object_get(e, key);
                if (ev && value_matches(ev, eq + 1))
                    return 1;
            } else if (!json_is_object(e) && value_matches(e, want)) {
                return 1;
            }
        }
        return 0;
    }
    case JSON_OBJECT:
    default:
        return 0;
    }
}

/* The attribute a filter names: a top-level key, or (a Nimbus extension)
 * "<attribute>.<key>" for a key inside an object attribute, such as
 * binding:profile.migrating_to; NULL when absent. */
static const json_t *
filter_attribute(const json_t *item, const char *name)
{
    const json_t *v = json_object_get(item, name);
    const char *dot = strchr(name, '.');
    if (v || !dot || dot == name)
        return v;
    const json_t *obj = json_object_getn(item, name, (size_t)(dot - name));
    return json_is_object(obj) ? json_object_get(obj, dot + 1) : NULL;
}

int
net_list_match(const json_t *item, const struct net_list_query *q)
{
    for (size_t i = 0; i < q->n_filters; i++) {
        const char *name = q->filters[i].name;
        int seen_before = 0;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(q->filters[j].name, name))
                seen_before = 1;
        if (seen_before)
            continue;
        /* OR over every value given for this name. */
        const json_t *v = filter_attribute(item, name);
        int ok = 0;
        for (size_t j = i; j < q->n_filters && !ok; j++)
            if (!strcmp(q->filters[j].name, name) && v)
                ok = value_matches(v, q->filters[j].value);
        if (!ok)
            return 0;
    }
    return 1;
}

void
net_list_project(json_t *obj, const struct net_list_query *q)
{
    if (!q->n_fields || !json_is_object(obj))
        return;
    const char *key;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(obj, tmp, key, v) {
        int keep = 0;
        for (size_t i = 0; i < q->n_fields && !keep; i++)
            keep = !strcmp(q->fields[i], key);
        if (!keep)
            json_object_del(obj, key);
    }
}

/* Orders JSON values: null first, then booleans, numbers, strings. */
static int
value_cmp(const json_t *a, const json_t *b)
{
    int ra = !a || json_is_null(a) ? 0 : json_is_boolean(a) ? 1 : json_is_number(a) ? 2 : 3;
    int rb = !b || json_is_null(b) ? 0 : json_is_boolean(b) ? 1 : json_is_number(b) ? 2 : 3;
    if (ra != rb)
        return ra < rb ? -1 : 1;
    switch (ra) {
    case 1:
        return (int)json_is_true(a) - (int)json_is_true(b);
    case 2: {
        double x = json_number_value(a), y = json_number_value(b);
        return x < y ? -1 : x > y;
    }
    case 3:
        if (json_is_string(a) && json_is_string(b))
            return strcmp(json_string_value(a), json_string_value(b));
        return 0;
    default:
        return 0;
    }
}

static int
item_cmp(const void *pa, const void *pb, void *arg)
{
    const struct net_list_query *q = arg;
    const json_t *a = *(json_t *const *)pa, *b = *(json_t *const *)pb;
    for (size_t i = 0; i < q->n_sort_keys; i++) {
        int c = value_cmp(json_object_get(a, q->sort_keys[i]),
                          json_object_get(b, q->sort_keys[i]));
        if (i < q->n_sort_dirs && !strcmp(q->sort_dirs[i], "desc"))
            c = -c;
        if (c)
            return c;
    }
    if (!q->n_sort_keys)
        return 0;               /* Stable: keep the database's order. */
    return value_cmp(json_object_get(a, "id"), json_object_get(b, "id"));
}

/* A growing query string. */
struct qbuf {
    char *buf;
    size_t len, cap;
    int failed;
};

static void
qbuf_put(struct qbuf *b, const char *s, int encode)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s && !b->failed; s++) {
        if (b->len + 4 >= b->cap) {
            size_t ncap = b->cap ? b->cap * 2 : 256;
            char *n = realloc(b->buf, ncap);
            if (!n) {
                b->failed = 1;
                return;
            }
            b->buf = n;
            b->cap = ncap;
        }
        unsigned char c = (unsigned char)*s;
        if (!encode || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'
            || c == '~' || c == ':') {
            b->buf[b->len++] = (char)c;
        } else {
            b->buf[b->len++] = '%';
            b->buf[b->len++] = hex[c >> 4];
            b->buf[b->len++] = hex[c & 15];
        }
        b->buf[b->len] = '\0';
    }
}

static void
qbuf_param(struct qbuf *b, const char *k, const char *v)
{
    if (b->len)
        qbuf_put(b, "&", 0);
    qbuf_put(b, k, 1);
    qbuf_put(b, "=", 0);
    qbuf_put(b, v, 1);
}

/* Builds "<base>?<query>&limit=N&marker=M[&page_reverse=True]". */
static char *
page_link(const struct net_list_query *q, const char *base, const char *marker,
          int reverse)
{
    struct qbuf b = { NULL, 0, 0, 0 };
    char lim[32];

    for (size_t i = 0; i < q->n_filters; i++)
        qbuf_param(&b, q->filters[i].name, q->filters[i].value);
    for (size_t i = 0; i < q->n_fields; i++)
        qbuf_param(&b, "fields", q->fields[i]);
    for (size_t i = 0; i < q->n_sort_keys; i++)
        qbuf_param(&b, "sort_key", q->sort_keys[i]);
    for (size_t i = 0; i < q->n_sort_dirs; i++)
        qbuf_param(&b, "sort_dir", q->sort_dirs[i]);
    snprintf(lim, sizeof lim, "%ld", q->limit);
    qbuf_param(&b, "limit", lim);
    qbuf_param(&b, "marker", marker);
    if (reverse)
        qbuf_param(&b, "page_reverse", "True");
    char *out = NULL;
    if (!b.failed && b.buf && asprintf(&out, "%s?%s", base, b.buf) < 0)
        out = NULL;
    free(b.buf);
    return out;
}

json_t *
net_list_apply(json_t *items, const struct net_list_query *q,
               const char *collection, const char *link_base)
{
    size_t n = json_array_size(items), m = 0;
    json_t **v = calloc(n ? n : 1, sizeof *v);
    json_t *out = json_object(), *arr = json_array();
    if (!v || !out || !arr)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(items, i);
        if (net_list_match(it, q))
            v[m++] = it;
    }
    if (q->n_sort_keys)
        qsort_r(v, m, sizeof *v, item_cmp, (void *)q);

    /* The page: [start, end). */
    size_t start = 0, end = m;
    size_t mpos = m;
    if (q->marker) {
        for (size_t i = 0; i < m; i++) {
            const char *id = json_string_value(json_object_get(v[i], "id"));
            if (id && !strcmp(id, q->marker)) {
                mpos = i;
                break;
            }
        }
    }
    if (q->page_reverse) {
        end = q->marker ? (mpos < m ? mpos : 0) : m;
        start = q->limit && end > (size_t)q->limit ? end - (size_t)q->limit : 0;
    } else {
        start = q->marker ? (mpos < m ? mpos + 1 : m) : 0;
        end = q->limit && m - start > (size_t)q->limit ? start + (size_t)q->limit : m;
    }
    for (size_t i = start; i < end; i++) {
        json_t *c = json_deep_copy(v[i]);
        if (!c)
            goto fail;
        net_list_project(c, q);
        json_array_append_new(arr, c);
    }
    if (json_object_set_new(out, collection, arr) < 0) {
        arr = NULL;
        goto fail;
    }
    arr = NULL;
    if (q->limit) {
        json_t *links = json_array();
        char key[96];
        if (!links)
            goto fail;
        snprintf(key, sizeof key, "%s_links", collection);
        int more_after = end < m, more_before = start > 0;
        if (end > start && (q->page_reverse ? more_before : more_after)) {
            /* The direction the client is walking. */
            const char *edge = json_string_value(json_object_get(
                v[q->page_reverse ? start : end - 1], "id"));
            char *href = edge ? page_link(q, link_base, edge, q->page_reverse) : NULL;
            if (href) {
                json_array_append_new(links, json_pack("{s:s,s:s}", "rel",
                                      q->page_reverse ? "previous" : "next", "href", href));
                free(href);
            }
        }
        if (end > start && (q->page_reverse ? more_after : (q->marker != NULL))) {
            const char *edge = json_string_value(json_object_get(
                v[q->page_reverse ? end - 1 : start], "id"));
            char *href = edge ? page_link(q, link_base, edge, !q->page_reverse) : NULL;
            if (href) {
                json_array_append_new(links, json_pack("{s:s,s:s}", "rel",
                                      q->page_reverse ? "next" : "previous", "href", href));
                free(href);
            }
        }
        json_object_set_new(out, key, links);
    }
    free(v);
    return out;
fail:
    free(v);
    json_decref(arr);
    json_decref(out);
    return NULL;
}
