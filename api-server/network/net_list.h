/* Neutron list semantics over JSON arrays: filters from the query string
 * (any attribute; a repeated key means OR, different keys AND; as a Nimbus
 * extension "<attribute>.<key>" filters on a key inside an object attribute,
 * such as binding:profile.migrating_to), fields=,
 * sort_key/sort_dir, limit/marker/page_reverse and the "<collection>_links"
 * that go with them.  Pure functions over jansson values, so that unit tests
 * can call them without a server. */
#ifndef NIMBUS_NET_LIST_H
#define NIMBUS_NET_LIST_H

#include <jansson.h>
#include <stddef.h>

/* Most query parameters accepted in one request; more is a 400. */
#define NET_LIST_MAX_PARAMS 64

struct net_list_param {
    const char *name;
    const char *value;
};

/* A parsed list query.  Strings are borrowed from the caller and must
 * outlive the query. */
struct net_list_query {
    struct net_list_param filters[NET_LIST_MAX_PARAMS];
    size_t n_filters;
    const char *fields[NET_LIST_MAX_PARAMS];
    size_t n_fields;
    const char *sort_keys[NET_LIST_MAX_PARAMS];
    size_t n_sort_keys;
    const char *sort_dirs[NET_LIST_MAX_PARAMS];
    size_t n_sort_dirs;
    long limit;                    /* 0: no limit. */
    const char *marker;            /* NULL: from the start. */
    int page_reverse;
};

void net_list_query_init(struct net_list_query *q);

/* Adds one decoded query parameter.  Returns 0, or -EINVAL with a message
 * for people in 'err' (static or from 'errbuf') for a malformed value
 * (limit not a non-negative integer, sort_dir not asc/desc), -E2BIG when
 * there are too many parameters. */
int net_list_query_add(struct net_list_query *q, const char *name,
                       const char *value, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* True when 'item' matches every filter of 'q'. */
int net_list_match(const json_t *item, const struct net_list_query *q);

/* Keeps only the attributes named by fields= (no-op without them).  Works
 * in place on 'obj'. */
void net_list_project(json_t *obj, const struct net_list_query *q);

/* Applies the whole query to 'items' (an array; borrowed) and returns a new
 * object {"<collection>": [...]} with "<collection>_links" when paginating.
 * 'link_base' is the URL of the collection without a query string
 * ("http://h:9696/v2.0/networks").  Returns NULL on allocation failure. */
json_t *net_list_apply(json_t *items, const struct net_list_query *q,
                       const char *collection, const char *link_base);

#endif
