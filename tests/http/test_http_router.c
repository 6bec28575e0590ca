/* Unit test of the HTTP router: template matching, literal-over-capture
 * precedence, trailing slashes, captures, 404/405 with Allow and the HEAD
 * fallback, through the same function the server uses per request. */
#include "http_internal.h"

#include <errno.h>
#include <uv.h>

#include "../check.h"
#include "arena.h"

static void
handler(http_request *req, void *data)
{
}

static int
add(http_server *s, const char *method, const char *pattern, const char *tag)
{
    return http_server_route(s, method, pattern, handler, (void *)tag, NULL);
}

/* Routes 'method path' and returns the matched route's tag, or NULL. */
static const char *
route(http_server *s, struct arena *a, const char *method, const char *path, int *status)
{
    struct http_route_match m;
    int r = http_router_match(s, method, path, a, &m);
    CHECK_INT(r, 0);
    *status = m.status;
    return m.status == 0 ? m.data : NULL;
}

int
main(void)
{
    uv_loop_t loop;
    http_server *s = NULL;
    struct arena *a = arena_new(4096);
    struct http_route_match m;
    int st = 0;

    uv_loop_init(&loop);
    CHECK_INT(http_server_new(&loop, NULL, &s), 0);
    CHECK_INT(add(s, "GET", "/", "root"), 0);
    CHECK_INT(add(s, "GET", "/v2.1/servers", "list"), 0);
    CHECK_INT(add(s, "POST", "/v2.1/servers", "create"), 0);
    CHECK_INT(add(s, "GET", "/v2.1/servers/{id}", "show"), 0);
    CHECK_INT(add(s, "GET", "/v2.1/servers/detail", "detail"), 0);
    CHECK_INT(add(s, "DELETE", "/v2.1/servers/{id}", "delete"), 0);
    CHECK_INT(add(s, "POST", "/v2.1/servers/{id}/action", "action"), 0);
    CHECK_INT(add(s, "GET", "/v2.1/{project}/servers/{id}", "project-show"), 0);
    CHECK_INT(add(s, "GET", "/v2.1/os-hypervisors/{id}/servers", "hv-servers"), 0);
    CHECK_INT(add(s, "GET", "/v2.1/{a}/{b}/servers", "two-caps"), 0);

    /* Bad templates are refused. */
    CHECK_INT(add(s, "GET", "no-slash", "x"), -EINVAL);
    CHECK_INT(add(s, "GET", "/a/{}", "x"), -EINVAL);
    CHECK_INT(add(s, "GET", "/a/b{c}", "x"), -EINVAL);
    CHECK_INT(add(s, "", "/a", "x"), -EINVAL);

    CHECK_STR(route(s, a, "GET", "/", &st), "root");
    CHECK_STR(route(s, a, "GET", "/v2.1/servers", &st), "list");
    CHECK_STR(route(s, a, "GET", "/v2.1/servers/", &st), "list");
    CHECK_STR(route(s, a, "POST", "/v2.1/servers", &st), "create");
    CHECK_STR(route(s, a, "GET", "/v2.1/servers/detail", &st), "detail");
    CHECK_STR(route(s, a, "GET", "/v2.1/servers/detail/", &st), "detail");
    CHECK_STR(route(s, a, "GET", "/v2.1/servers/abc", &st), "show");
    CHECK_STR(route(s, a, "DELETE", "/v2.1/servers/detail", &st), "delete");
    CHECK_STR(route(s, a, "POST", "/v2.1/servers/abc/action", &st), "action");
    /* Literal beats capture at the first segment where they differ. */
    CHECK_STR(route(s, a, "GET", "/v2.1/os-hypervisors/h1/servers", &st), "hv-servers");
    CHECK_STR(route(s, a, "GET", "/v2.1/p1/servers/s1", &st), "project-show");
    CHECK_STR(route(s, a, "GET", "/v2.1/x/y/servers", &st), "two-caps");
    /* HEAD falls back to GET. */
    CHECK_STR(route(s, a, "HEAD", "/v2.1/servers/detail", &st), "detail");

    /* An empty segment never matches a capture. */
    CHECK(route(s, a, "GET", "/v2.1/servers//action", &st) == NULL);
    CHECK_INT(st, 404);
    CHECK(route(s, a, "GET", "/nothing", &st) == NULL);
    CHECK_INT(st, 404);
    CHECK(route(s, a, "GET", "/v2.1/servers/a/b/c/d", &st) == NULL);
    CHECK_INT(st, 404);

    /* Wrong method: 405 with every method of the path, HEAD added for GET. */
    CHECK_INT(http_router_match(s, "PUT", "/v2.1/servers", a, &m), 0);
    CHECK_INT(m.status, 405);
    CHECK_STR(m.allow, "GET, POST, HEAD");
    CHECK_INT(http_router_match(s, "PATCH", "/v2.1/servers/abc", a, &m), 0);
    CHECK_INT(m.status, 405);
    CHECK_STR(m.allow, "GET, DELETE, HEAD");

    /* Captures are percent-decoded; a bad escape is a 400. */
    CHECK_INT(http_router_match(s, "GET", "/v2.1/servers/a%20b%2Fc", a, &m), 0);
    CHECK_INT(m.status, 0);
    CHECK_INT(m.nparams, 1);
    CHECK_STR(m.names[0], "id");
    CHECK_STR(m.values[0], "a b/c");
    CHECK_STR(m.pattern, "/v2.1/servers/{id}");
    CHECK_INT(http_router_match(s, "GET", "/v2.1/p%41/servers/x+y", a, &m), 0);
    CHECK_INT(m.nparams, 2);
    CHECK_STR(m.values[0], "pA");
    CHECK_STR(m.values[1], "x+y");
    CHECK_INT(http_router_match(s, "GET", "/v2.1/servers/%zz", a, &m), 0);
    CHECK_INT(m.status, 400);

    /* Too many segments is a plain 404. */
    char deep[200] = "";
    for (int i = 0; i < 40; i++)
        strcat(deep, "/x");
    CHECK_INT(http_router_match(s, "GET", deep, a, &m), 0);
    CHECK_INT(m.status, 404);

    CHECK_STR(http_status_text(404), "Not Found");
    CHECK_STR(http_status_text(431), "Request Header Fields Too Large");

    http_server_free(s);
    arena_free(a);
    uv_loop_close(&loop);
    return check_exit();
}
