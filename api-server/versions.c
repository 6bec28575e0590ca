/* Version discovery documents, exactly as the OpenStack clients read them
 * (keystoneauth discovery, novaclient, openstacksdk): identity GET / (300
 * with Location) and /v3, compute GET / and /v2.1 (with the microversion
 * fields and headers), network GET / and /v2.0. */
#include "api.h"
#include "compute_version.h"

#include <stdlib.h>
#include <string.h>

#include "arena.h"

#define IDENTITY_VERSION "v3.14"
#define IDENTITY_UPDATED "2020-04-07T00:00:00Z"
#define COMPUTE_UPDATED "2013-07-23T11:33:21Z"

/* The documents depend only on the base URL, and clients fetch them before
 * every session, so the rendered text is kept per document for the last
 * base URL seen. */
enum doc_kind { DOC_IDENTITY_ROOT, DOC_IDENTITY_V3, DOC_COMPUTE_ROOT,
                DOC_COMPUTE_V21, DOC_NETWORK_ROOT, DOC_COUNT };

struct doc_cache {
    char *base;
    char *text;
    size_t len;
};

static struct doc_cache cache[DOC_COUNT];

static json_t *
identity_version(const char *base)
{
    char href[600];
    snprintf(href, sizeof href, "%s/v3/", base);
    return json_pack("{s:s,s:s,s:s,s:[{s:s,s:s}],s:[{s:s,s:s}]}",
                     "id", IDENTITY_VERSION, "status", "stable",
                     "updated", IDENTITY_UPDATED,
                     "links", "rel", "self", "href", href,
                     "media-types", "base", "application/json", "type",
                     "application/vnd.openstack.identity-v3+json");
}

static json_t *
compute_version(const char *base, bool with_media)
{
    char href[600];
    snprintf(href, sizeof href, "%s/v2.1/", base);
    json_t *v = json_pack("{s:s,s:s,s:s,s:s,s:s,s:[{s:s,s:s}]}",
                          "id", "v2.1", "status", "CURRENT",
                          "version", COMPUTE_MAX_MICROVERSION,
                          "min_version", COMPUTE_MIN_MICROVERSION,
                          "updated", COMPUTE_UPDATED,
                          "links", "rel", "self", "href", href);
    if (with_media) {
        json_array_append_new(json_object_get(v, "links"),
                              json_pack("{s:s,s:s,s:s}", "rel", "describedby",
                                        "type", "text/html", "href",
                                        "http://docs.openstack.org/"));
        json_object_set_new(v, "media-types",
                            json_pack("[{s:s,s:s}]", "base", "application/json",
                                      "type", "application/vnd.openstack.compute+json;version=2.1"));
    }
    return v;
}

static json_t *
build_doc(enum doc_kind kind, const char *base)
{
    char href[600];
    switch (kind) {
    case DOC_IDENTITY_ROOT:
        return json_pack("{s:{s:[o]}}", "versions", "values", identity_version(base));
    case DOC_IDENTITY_V3:
        return json_pack("{s:o}", "version", identity_version(base));
    case DOC_COMPUTE_ROOT:
        return json_pack("{s:[o]}", "versions", compute_version(base, false));
    case DOC_COMPUTE_V21:
        return json_pack("{s:o}", "version", compute_version(base, true));
    case DOC_NETWORK_ROOT:
        snprintf(href, sizeof href, "%s/v2.0/", base);
        return json_pack("{s:[{s:s,s:s,s:[{s:s,s:s}]}]}", "versions",
                         "status", "CURRENT", "id", "v2.0",
                         "links", "href", href, "rel", "self");
    case DOC_COUNT:
    default:
        return NULL;
    }
}

static void
reply_doc(http_request *req, enum doc_kind kind, enum api_service svc, int status)
{
    const char *base = api_base_url(req, svc);
    struct doc_cache *c = &cache[kind];
    if (!c->base || strcmp(c->base, base)) {
        json_t *doc = build_doc(kind, base);
        char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        json_decref(doc);
        if (!text) {
            api_error(req, 500, "Cannot render the version document.");
            return;
        }
        free(c->base);
        free(c->text);
        c->base = strdup(base);
        c->text = text;
        c->len = strlen(text);
        if (!c->base)
            abort();
    }
    if (kind == DOC_IDENTITY_ROOT)
        http_resp_header(req, "Location",
                         arena_printf(http_req_arena(req), "%s/v3/", base));
    (void)http_respond(req, status, "application/json", c->text, c->len);
}

static void
identity_root(http_request *req, struct api_req *ar)
{
    reply_doc(req, DOC_IDENTITY_ROOT, API_IDENTITY, 300);
}

static void
identity_v3(http_request *req, struct api_req *ar)
{
    reply_doc(req, DOC_IDENTITY_V3, API_IDENTITY, 200);
}

static void
compute_root(http_request *req, struct api_req *ar)
{
    reply_doc(req, DOC_COMPUTE_ROOT, API_COMPUTE, 200);
}

static void
compute_v21(http_request *req, struct api_req *ar)
{
    if (compute_version_check(req) < 0)
        return;
    reply_doc(req, DOC_COMPUTE_V21, API_COMPUTE, 200);
}

static void
network_root(http_request *req, struct api_req *ar)
{
    reply_doc(req, DOC_NETWORK_ROOT, API_NETWORK, 200);
}

void
versions_register(struct api *a)
{
    api_route(a, API_IDENTITY, "GET", "/", identity_root);
    api_route(a, API_IDENTITY, "GET", "/v3", identity_v3);
    api_route(a, API_COMPUTE, "GET", "/", compute_root);
    api_route(a, API_COMPUTE, "GET", "/v2.1", compute_v21);
    api_route(a, API_NETWORK, "GET", "/", network_root);
}

void
versions_free(void)
{
    for (int i = 0; i < DOC_COUNT; i++) {
        free(cache[i].base);
        free(cache[i].text);
        cache[i].base = cache[i].text = NULL;
    }
}
