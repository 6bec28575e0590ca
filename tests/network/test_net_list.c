/* Unit tests of Neutron list semantics (api-server/network/net_list.c):
 * filters, fields, sorting and paging links. */
#include "net_list.h"

#include <stdlib.h>

#include "check.h"

static json_t *
items(void)
{
    return json_loads("["
        "{\"id\":\"a\",\"name\":\"x\",\"shared\":false,\"mtu\":1450,\"subnets\":[\"s1\"],"
        " \"fixed_ips\":[{\"subnet_id\":\"s1\",\"ip_address\":\"10.0.0.2\"}],\"gw\":null,"
        " \"binding:profile\":{\"migrating_to\":\"h2\"}},"
        "{\"id\":\"b\",\"name\":\"y\",\"shared\":true,\"mtu\":1500,\"subnets\":[],"
        " \"fixed_ips\":[],\"gw\":\"10.0.0.1\"},"
        "{\"id\":\"c\",\"name\":\"x\",\"shared\":true,\"mtu\":9000,\"subnets\":[\"s2\",\"s1\"],"
        " \"fixed_ips\":[{\"subnet_id\":\"s2\",\"ip_address\":\"10.0.1.9\"}],\"gw\":null}"
        "]", 0, NULL);
}

static struct net_list_query
query(const char *const *kv)
{
    struct net_list_query q;
    char err[200];
    net_list_query_init(&q);
    for (; kv[0]; kv += 2)
        CHECK_INT(net_list_query_add(&q, kv[0], kv[1], err, sizeof err), 0);
    return q;
}

/* Ids of the listed items, joined: "a,b". */
static char *
ids(json_t *out, const char *coll)
{
    static char buf[256];
    size_t i;
    json_t *it;
    buf[0] = '\0';
    json_array_foreach(json_object_get(out, coll), i, it) {
        if (i)
            strcat(buf, ",");
        const char *id = json_string_value(json_object_get(it, "id"));
        strcat(buf, id ? id : "?");
    }
    return buf;
}

static char *
run(json_t *all, const char *const *kv)
{
    struct net_list_query q = query(kv);
    json_t *out = net_list_apply(all, &q, "networks", "http://h/v2.0/networks");
    char *r = ids(out, "networks");
    json_decref(out);
    return r;
}

int
main(void)
{
    json_t *all = items();
    CHECK(all != NULL);

    CHECK_STR(run(all, (const char *[]){ NULL }), "a,b,c");
    CHECK_STR(run(all, (const char *[]){ "name", "x", NULL }), "a,c");
    CHECK_STR(run(all, (const char *[]){ "name", "x", "name", "y", NULL }), "a,b,c");
    CHECK_STR(run(all, (const char *[]){ "name", "x", "shared", "True", NULL }), "c");
    CHECK_STR(run(all, (const char *[]){ "shared", "false", NULL }), "a");
    CHECK_STR(run(all, (const char *[]){ "mtu", "1500", NULL }), "b");
    CHECK_STR(run(all, (const char *[]){ "subnets", "s1", NULL }), "a,c");
    CHECK_STR(run(all, (const char *[]){ "fixed_ips", "ip_address=10.0.1.9", NULL }), "c");
    CHECK_STR(run(all, (const char *[]){ "fixed_ips", "subnet_id=s1", NULL }), "a");
    CHECK_STR(run(all, (const char *[]){ "gw", "", NULL }), "a,c");
    CHECK_STR(run(all, (const char *[]){ "no_such_attr", "1", NULL }), "");
    /* A key inside an object attribute (Nimbus extension). */
    CHECK_STR(run(all, (const char *[]){ "binding:profile.migrating_to", "h2", NULL }), "a");
    CHECK_STR(run(all, (const char *[]){ "binding:profile.migrating_to", "h1", NULL }), "");
    CHECK_STR(run(all, (const char *[]){ "fixed_ips.subnet_id", "s1", NULL }), "");
    CHECK_STR(run(all, (const char *[]){ ".migrating_to", "h2", NULL }), "");
    CHECK_STR(run(all, (const char *[]){ "sort_key", "mtu", "sort_dir", "desc", NULL }), "c,b,a");
    CHECK_STR(run(all, (const char *[]){ "sort_key", "name", "sort_key", "mtu",
                                         "sort_dir", "desc", "sort_dir", "asc", NULL }), "b,a,c");
    CHECK_STR(run(all, (const char *[]){ "limit", "2", NULL }), "a,b");
    CHECK_STR(run(all, (const char *[]){ "limit", "2", "marker", "b", NULL }), "c");
    CHECK_STR(run(all, (const char *[]){ "limit", "1", "marker", "c", "page_reverse", "True", NULL }), "b");

    /* Links: next only while more follow, previous once a marker is given. */
    struct net_list_query q = query((const char *[]){ "name", "x y", "limit", "1", NULL });
    json_t *two = json_loads("[{\"id\":\"a\",\"name\":\"x y\"},{\"id\":\"b\",\"name\":\"x y\"}]", 0, NULL);
    json_t *out = net_list_apply(two, &q, "networks", "http://h/v2.0/networks");
    json_t *links = json_object_get(out, "networks_links");
    CHECK_INT(json_array_size(links), 1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(links, 0), "rel")), "next");
    CHECK_STR(json_string_value(json_object_get(json_array_get(links, 0), "href")),
              "http://h/v2.0/networks?name=x%20y&limit=1&marker=a");
    json_decref(out);
    q = query((const char *[]){ "limit", "1", "marker", "a", NULL });
    out = net_list_apply(two, &q, "networks", "http://h/v2.0/networks");
    links = json_object_get(out, "networks_links");
    CHECK_INT(json_array_size(links), 1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(links, 0), "rel")), "previous");
    json_decref(out);
    q = query((const char *[]){ NULL });
    out = net_list_apply(two, &q, "networks", "http://h/v2.0/networks");
    CHECK(json_object_get(out, "networks_links") == NULL);
    json_decref(out);
    json_decref(two);

    /* fields= keeps only what is asked. */
    q = query((const char *[]){ "fields", "id", "fields", "mtu", NULL });
    out = net_list_apply(all, &q, "networks", "http://h/v2.0/networks");
    CHECK_INT(json_object_size(json_array_get(json_object_get(out, "networks"), 0)), 2);
    json_decref(out);

    /* Malformed values are refused. */
    struct net_list_query bad;
    char err[200];
    net_list_query_init(&bad);
    CHECK(net_list_query_add(&bad, "limit", "-1", err, sizeof err) < 0);
    CHECK(net_list_query_add(&bad, "limit", "x", err, sizeof err) < 0);
    CHECK(net_list_query_add(&bad, "sort_dir", "up", err, sizeof err) < 0);
    for (int i = 0; i < NET_LIST_MAX_PARAMS; i++)
        CHECK_INT(net_list_query_add(&bad, "name", "n", err, sizeof err), 0);
    CHECK(net_list_query_add(&bad, "name", "n", err, sizeof err) < 0);

    json_decref(all);
    return check_exit();
}
