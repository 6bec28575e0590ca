/* Unit tests of the scheduler's decision (filters, weighers, selection,
 * fault text) on hand-made hosts: no database. */
#include "sched_core.h"

#include <stdlib.h>
#include <string.h>

#include "../check.h"

static struct sched_host *
add(struct sched_hosts *h, int64_t id, const char *name, int64_t vcpus, int64_t ram,
    int64_t used_ram, const char *az)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 8;
        h->v = realloc(h->v, h->cap * sizeof *h->v);
    }
    struct sched_host *x = &h->v[h->n++];
    memset(x, 0, sizeof *x);
    x->id = id;
    snprintf(x->host, sizeof x->host, "%s", name);
    snprintf(x->node, sizeof x->node, "%s.node", name);
    snprintf(x->az, sizeof x->az, "%s", az);
    snprintf(x->hypervisor_type, sizeof x->hypervisor_type, "QEMU");
    snprintf(x->architecture, sizeof x->architecture, "x86_64");
    x->vcpus = vcpus;
    x->memory_mb = ram;
    x->memory_mb_used = used_ram;
    x->local_gb = 100;
    x->cpu_ratio = x->ram_ratio = x->disk_ratio = 1.0;
    x->present = true;
    x->last_heartbeat = 1000;
    return x;
}

static struct sched_request *
request(int64_t vcpus, int64_t ram)
{
    struct sched_request *rq = calloc(1, sizeof *rq);
    if (!rq || sched_request_lists(rq) < 0)
        abort();
    snprintf(rq->instance, sizeof rq->instance, "11111111-1111-1111-1111-111111111111");
    rq->vcpus = vcpus;
    rq->memory_mb = ram;
    rq->disk_gb = 1;
    return rq;
}

int
main(void)
{
    struct sched_pipeline p;
    char err[128];
    CHECK_INT(sched_pipeline_parse(&p, "enabled, alive,availability_zone,ram,cpu,disk,"
                                   "image_properties,affinity,anti_affinity,same_host,"
                                   "different_host,force_host", "ram,instances,soft_group",
                                   err, sizeof err), 0);
    CHECK_INT(p.n_filters, 12);
    CHECK_INT(p.n_weighers, 3);
    struct sched_pipeline bad;
    CHECK(sched_pipeline_parse(&bad, "enabled,nope", "", err, sizeof err) < 0);
    CHECK(strstr(err, "nope") != NULL);

    struct sched_policy pol = { .now = 1010, .service_down_time = 60, .ram_multiplier = 1.0,
                                .instances_multiplier = 0.5, .soft_group_multiplier = 10,
                                .host_subset_size = 1 };
    struct sched_hosts hosts = { 0 };
    add(&hosts, 1, "a", 4, 8192, 0, "nova");
    add(&hosts, 2, "b", 4, 8192, 4096, "nova");
    add(&hosts, 3, "c", 4, 16384, 0, "other");
    struct sched_host *d = add(&hosts, 4, "d", 4, 32768, 0, "nova");
    d->disabled = true;
    struct sched_host *e = add(&hosts, 5, "e", 4, 32768, 0, "nova");
    e->last_heartbeat = 100;        /* Dead. */
    struct sched_host *out[8];
    struct sched_trace t;

    /* Spread: the most free RAM first; disabled and dead hosts removed. */
    struct sched_request *rq = request(1, 1024);
    size_t n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 3);
    CHECK_STR(out[0]->host, "c");
    /* The ranking: with a subset of 3, pick 1 is the second best, 2 the third. */
    pol.host_subset_size = 3;
    sched_select(&p, &pol, &hosts, rq, out, &t, 1);
    CHECK_STR(out[0]->host, "a");
    sched_select(&p, &pol, &hosts, rq, out, &t, 2);
    CHECK_STR(out[0]->host, "b");
    pol.host_subset_size = 1;
    CHECK_INT(t.left[0], 4);
    CHECK_INT(t.left[1], 3);

    /* Pack: negative multiplier prefers the fullest host. */
    struct sched_policy pack = pol;
    pack.ram_multiplier = -1.0;
    pack.instances_multiplier = 0;
    n = sched_select(&p, &pack, &hosts, rq, out, &t, 0);
    CHECK_STR(out[0]->host, "b");

    /* Availability zone. */
    snprintf(rq->az, sizeof rq->az, "other");
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 1);
    CHECK_STR(out[0]->host, "c");
    rq->az[0] = '\0';

    /* Resources with allocation ratios: 6 GB fits a (8 GB free) and c. */
    rq->memory_mb = 6000;
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 2);
    hosts.v[1].ram_ratio = 2.5;     /* b: 8192 * 2.5 - 4096 = 16384 free. */
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 3);
    hosts.v[1].ram_ratio = 1.0;

    /* No valid host: the fault names the filter that emptied the list. */
    rq->memory_mb = 100000;
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 0);
    char msg[512];
    sched_trace_format(&p, &t, msg, sizeof msg);
    CHECK(strstr(msg, "No valid host was found") != NULL);
    CHECK(strstr(msg, "filter enabled removed 1, left 4") != NULL);
    CHECK(strstr(msg, "filter alive removed 1, left 3") != NULL);
    CHECK(strstr(msg, "filter ram removed 3, left 0") != NULL);
    rq->memory_mb = 512;

    /* vCPUs. */
    rq->vcpus = 5;
    CHECK_INT(sched_select(&p, &pol, &hosts, rq, out, &t, 0), 0);
    rq->vcpus = 1;

    /* Image properties. */
    snprintf(rq->hypervisor_type, sizeof rq->hypervisor_type, "xen");
    CHECK_INT(sched_select(&p, &pol, &hosts, rq, out, &t, 0), 0);
    snprintf(rq->hypervisor_type, sizeof rq->hypervisor_type, "qemu");
    CHECK_INT(sched_select(&p, &pol, &hosts, rq, out, &t, 0), 3);
    rq->hypervisor_type[0] = '\0';

    /* Container images (container_format docker or ociarchive) go only to
     * runc hosts, and other images never there. */
    struct sched_host *rc_host = add(&hosts, 6, "r", 4, 65536, 0, "nova");
    snprintf(rc_host->hypervisor_type, sizeof rc_host->hypervisor_type, "RUNC");
    rc_host->runc = true;
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 3);
    for (size_t i = 0; i < n; i++)
        CHECK(strcmp(out[i]->host, "r") != 0);
    snprintf(rq->container_format, sizeof rq->container_format, "docker");
    CHECK(sched_request_is_container(rq));
    rq->container = true;
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 1);
    CHECK_STR(out[0]->host, "r");
    snprintf(rq->container_format, sizeof rq->container_format, "ociarchive");
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 1);
    CHECK_STR(out[0]->host, "r");
    /* No runc host: the fault names the filter. */
    rc_host->disabled = true;
    CHECK_INT(sched_select(&p, &pol, &hosts, rq, out, &t, 0), 0);
    sched_trace_format(&p, &t, msg, sizeof msg);
    CHECK(strstr(msg, "filter image_properties removed 3, left 0") != NULL);
    snprintf(rq->container_format, sizeof rq->container_format, "bare");
    CHECK(!sched_request_is_container(rq));
    rq->container = false;
    rq->container_format[0] = '\0';
    hosts.n--;                      /* Drop r. */

    /* Hard affinity / anti-affinity. */
    snprintf(rq->group_policy, sizeof rq->group_policy, "affinity");
    snprintf(rq->group_hosts[0], sizeof rq->group_hosts[0], "b");
    rq->n_group_hosts = 1;
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 1);
    CHECK_STR(out[0]->host, "b");
    snprintf(rq->group_policy, sizeof rq->group_policy, "anti-affinity");
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 2);
    for (size_t i = 0; i < n; i++)
        CHECK(strcmp(out[i]->host, "b") != 0);
    /* Soft affinity is a weight, not a filter: b first though fuller. */
    snprintf(rq->group_policy, sizeof rq->group_policy, "soft-affinity");
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 3);
    CHECK_STR(out[0]->host, "b");
    snprintf(rq->group_policy, sizeof rq->group_policy, "soft-anti-affinity");
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK(strcmp(out[0]->host, "b") != 0);
    rq->group_policy[0] = '\0';
    rq->n_group_hosts = 0;

    /* same_host / different_host hints. */
    rq->n_same_ids = 1;
    snprintf(rq->same_hosts[0], sizeof rq->same_hosts[0], "a");
    rq->n_same_hosts = 1;
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 1);
    CHECK_STR(out[0]->host, "a");
    rq->n_same_ids = rq->n_same_hosts = 0;
    snprintf(rq->diff_hosts[0], sizeof rq->diff_hosts[0], "c");
    rq->n_diff_hosts = 1;
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 2);
    rq->n_diff_hosts = 0;

    /* Forced host. */
    snprintf(rq->force_host, sizeof rq->force_host, "a");
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 0);
    CHECK_INT(n, 1);
    rq->force_host[0] = '\0';

    /* Host subset: a random pick among the best two. */
    pol.host_subset_size = 2;
    n = sched_select(&p, &pol, &hosts, rq, out, &t, 1);
    CHECK_STR(out[0]->host, "a");
    pol.host_subset_size = 1;

    /* Sampling: the best of a few random hosts; when none of the sample
     * fits, every host is considered, so only a real shortage fails. */
    struct sched_hosts many = { 0 };
    for (int i = 0; i < 100; i++)
        add(&many, i + 1, i == 57 ? "roomy" : "full", 4, 8192, i == 57 ? 0 : 8192, "nova");
    pol.hosts_sampled = 5;
    struct sched_host **mo = calloc(100, sizeof *mo);
    for (unsigned r = 0; r < 20; r++) {
        n = sched_select(&p, &pol, &many, rq, mo, &t, r);
        CHECK_INT(n, 1);
        CHECK_STR(mo[0]->host, "roomy");
    }
    rq->memory_mb = 100000;
    CHECK_INT(sched_select(&p, &pol, &many, rq, mo, &t, 3), 0);
    CHECK_INT(t.start, 100);
    rq->memory_mb = 512;
    pol.hosts_sampled = 0;
    free(mo);
    sched_hosts_free(&many);

    /* Build request specs. */
    struct sched_request *r2 = calloc(1, sizeof *r2);
    CHECK_INT(sched_request_parse(r2, "22222222-2222-2222-2222-222222222222",
        "{\"vcpus\": 2, \"memory_mb\": 2048, \"root_gb\": 20, \"availability_zone\": \"z\","
        " \"group\": \"33333333-3333-3333-3333-333333333333\", \"group_policy\": \"affinity\","
        " \"hints\": {\"different_host\": [\"44444444-4444-4444-4444-444444444444\", \"bad\"],"
        " \"same_host\": \"55555555-5555-5555-5555-555555555555\"},"
        " \"image_properties\": {\"architecture\": \"aarch64\"}}"), 0);
    CHECK_INT(r2->vcpus, 2);
    CHECK_INT(r2->memory_mb, 2048);
    CHECK_INT(r2->disk_gb, 20);
    CHECK_STR(r2->az, "z");
    CHECK_STR(r2->group_policy, "affinity");
    CHECK_INT(r2->n_diff_ids, 1);
    CHECK_INT(r2->n_same_ids, 1);
    CHECK_STR(r2->architecture, "aarch64");
    sched_request_clear(r2);
    CHECK(sched_request_parse(r2, "x", "not json") < 0);
    sched_request_clear(r2);
    CHECK_INT(sched_request_parse(r2, "22222222-2222-2222-2222-222222222222",
        "{\"vcpus\": 1, \"image_ref\": \"66666666-6666-6666-6666-666666666666\","
        " \"image_properties\": {\"container_format\": \"docker\"}}"), 0);
    CHECK_STR(r2->image_ref, "66666666-6666-6666-6666-666666666666");
    CHECK(sched_request_is_container(r2) && r2->container);
    CHECK(r2->group_hosts == NULL);   /* No group or hint: no lists. */
    sched_request_clear(r2);
    free(r2);

    /* Rankings: a batch of one shape decided in one pass gives the same
     * hosts as deciding each request over every host, charging as it goes
     * (one weigher here: with several, a ranking keeps the normalisation
     * of the start of the batch, which can order near-equal hosts
     * differently). */
    struct sched_pipeline p1;
    CHECK_INT(sched_pipeline_parse(&p1, "enabled,alive,availability_zone,ram,cpu,disk,"
                                   "image_properties", "ram", err, sizeof err), 0);
    struct sched_hosts ra = { 0 }, rb = { 0 };
    for (int i = 0; i < 200; i++) {
        int64_t used = (int64_t)((i * 7919) % 13) * 512;
        add(&ra, i + 1, "h", 8, 8192, used, i % 5 ? "nova" : "other");
        add(&rb, i + 1, "h", 8, 8192, used, i % 5 ? "nova" : "other");
        snprintf(ra.v[i].host, sizeof ra.v[i].host, "h%d", i + 1);
        snprintf(rb.v[i].host, sizeof rb.v[i].host, "h%d", i + 1);
    }
    struct sched_request *rr = request(1, 1024);
    snprintf(rr->az, sizeof rr->az, "nova");
    CHECK(sched_ranking_eligible(rr));
    struct sched_ranking rk = { 0 };
    CHECK_INT(sched_ranking_build(&rk, &p1, &pol, &ra, rr), 0);
    CHECK(sched_ranking_matches(&rk, &ra, rr));
    CHECK_INT(rk.n, 160);
    struct sched_host **ro = calloc(200, sizeof *ro);
    size_t placed = 0, same = 0;
    for (;;) {
        struct sched_host *a = sched_ranking_next(&rk, &p1, &pol, rr, 0);
        n = sched_select(&p1, &pol, &rb, rr, ro, &t, 0);
        CHECK((a == NULL) == (n == 0));
        if (!a || !n)
            break;
        /* The same host, or one exactly as good (ties keep id order). */
        same += a->id == ro[0]->id;
        CHECK(a->memory_mb - a->memory_mb_used == ro[0]->memory_mb - ro[0]->memory_mb_used);
        CHECK(strcmp(a->az, "nova") == 0);
        a->memory_mb_used += rr->memory_mb;
        a->vcpus_used += rr->vcpus;
        a->local_gb_used += rr->disk_gb;
        a->running_vms++;
        sched_ranking_settle(&rk, &p);
        struct sched_host *b = sched_hosts_find(&rb, ro[0]->id);
        b->memory_mb_used += rr->memory_mb;
        b->vcpus_used += rr->vcpus;
        b->local_gb_used += rr->disk_gb;
        b->running_vms++;
        placed++;
    }
    CHECK(placed > 500);
    CHECK(same > placed / 2);
    int64_t free_a = 0, free_b = 0;
    for (size_t i = 0; i < ra.n; i++) {
        CHECK(ra.v[i].memory_mb_used <= ra.v[i].memory_mb);
        free_a += ra.v[i].memory_mb - ra.v[i].memory_mb_used;
        free_b += rb.v[i].memory_mb - rb.v[i].memory_mb_used;
    }
    CHECK(free_a == free_b);
    /* Another shape does not match; a moved view makes the ranking stale. */
    rr->memory_mb = 2048;
    CHECK(!sched_ranking_matches(&rk, &ra, rr));
    rr->memory_mb = 1024;
    ra.generation++;
    CHECK(!sched_ranking_matches(&rk, &ra, rr));
    /* Hints, forced hosts and groups whose members weigh or pin the choice
     * are decided over every host. */
    snprintf(rr->force_host, sizeof rr->force_host, "h1");
    CHECK(!sched_ranking_eligible(rr));
    rr->force_host[0] = '\0';
    snprintf(rr->group, sizeof rr->group, "33333333-3333-3333-3333-333333333333");
    snprintf(rr->group_policy, sizeof rr->group_policy, "affinity");
    CHECK(sched_ranking_eligible(rr));       /* No member placed yet. */
    snprintf(rr->group_hosts[0], sizeof rr->group_hosts[0], "h3");
    rr->n_group_hosts = 1;
    CHECK(!sched_ranking_eligible(rr));
    snprintf(rr->group_policy, sizeof rr->group_policy, "soft-anti-affinity");
    CHECK(!sched_ranking_eligible(rr));
    /* Hard anti-affinity: the ranking skips the members' hosts and keeps
     * them for other requests. */
    snprintf(rr->group_policy, sizeof rr->group_policy, "anti-affinity");
    CHECK(sched_ranking_eligible(rr));
    struct sched_hosts gh = { 0 };
    for (int i = 0; i < 10; i++) {
        add(&gh, i + 1, "g", 8, 8192 + i * 1024, 0, "nova");
        snprintf(gh.v[i].host, sizeof gh.v[i].host, "g%d", i + 1);
    }
    CHECK_INT(sched_ranking_build(&rk, &p, &pol, &gh, rr), 0);
    struct sched_host *top = sched_ranking_next(&rk, &p, &pol, NULL, 0);
    CHECK(top != NULL);
    sched_ranking_settle(&rk, &p);
    snprintf(rr->group_hosts[0], sizeof rr->group_hosts[0], "%s", top->host);
    struct sched_host *other = sched_ranking_next(&rk, &p, &pol, rr, 0);
    CHECK(other && other != top);
    sched_ranking_settle(&rk, &p);
    rr->group[0] = rr->group_policy[0] = '\0';
    rr->n_group_hosts = 0;
    CHECK(sched_ranking_next(&rk, &p, &pol, rr, 0) == top);
    sched_ranking_settle(&rk, &p);
    sched_hosts_free(&gh);
    /* Ties between identical hosts: a scheduler's own order, not the ids. */
    struct sched_hosts same_hosts = { 0 };
    for (int i = 0; i < 50; i++)
        add(&same_hosts, i + 1, "s", 8, 8192, 0, "nova");
    struct sched_policy seeded = pol;
    seeded.tie_seed = 12345;
    CHECK_INT(sched_ranking_build(&rk, &p, &seeded, &same_hosts, rr), 0);
    struct sched_host *first = sched_ranking_next(&rk, &p, &seeded, rr, 0);
    CHECK(first && first->id != 1);
    seeded.tie_seed = 0;
    CHECK_INT(sched_ranking_build(&rk, &p, &seeded, &same_hosts, rr), 0);
    first = sched_ranking_next(&rk, &p, &seeded, rr, 0);
    CHECK(first && first->id == 1);
    sched_ranking_free(&rk);
    free(ro);
    sched_request_clear(rr);
    free(rr);
    sched_hosts_free(&ra);
    sched_hosts_free(&rb);
    sched_hosts_free(&same_hosts);

    sched_request_clear(rq);
    free(rq);
    sched_hosts_free(&hosts);
    return check_exit();
}
