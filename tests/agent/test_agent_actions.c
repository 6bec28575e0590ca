/* Server actions on the agent side, without a daemon: the desired
 * document's "action" and "snapshot" (parser), the reconciler's resize and
 * snapshot steps with the fake hypervisor and a fake storage (once per
 * generation, after a restart too, failures retried then ERROR), and the
 * console tails of the observed state (bounded, cut at a line, valid
 * UTF-8, sent only when changed). */
#include "reconcile.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "console_report.h"
#include "hypervisor.h"
#include "state_json.h"
#include "storage.h"
#include "../check.h"

#define U1 "11111111-1111-4111-8111-111111111111"

struct fstore {
    int prepares, grows, snaps, uploads, fail_upload, wipes, fail_wipe;
    char image[64];              /* Image of the last prepare. */
};

static int
fs_prepare(void *ctx, const struct inst_desired *d, struct rc_prepared *p, char *err, size_t len)
{
    struct fstore *s = ctx;
    (void)err;
    (void)len;
    s->prepares++;
    snprintf(s->image, sizeof s->image, "%s", d->image.id);
    snprintf(p->inst_dir, sizeof p->inst_dir, "/fake/%s", d->uuid);
    snprintf(p->disk, sizeof p->disk, "/fake/%s/disk.qcow2", d->uuid);
    return 0;
}

static int
fs_remove(void *ctx, const char *uuid, char *err, size_t len)
{
    (void)ctx; (void)uuid; (void)err; (void)len;
    return 0;
}

static int
fs_grow(void *ctx, const struct inst_desired *d, char *err, size_t len)
{
    struct fstore *s = ctx;
    (void)d; (void)err; (void)len;
    s->grows++;
    return 0;
}

static int
fs_snap(void *ctx, const struct inst_desired *d, char *err, size_t len)
{
    struct fstore *s = ctx;
    (void)d; (void)err; (void)len;
    s->snaps++;
    return 0;
}

static int
fs_upload(void *ctx, const struct inst_desired *d, char *err, size_t len)
{
    struct fstore *s = ctx;
    s->uploads++;
    if (s->fail_upload) {
        s->fail_upload--;
        snprintf(err, len, "upload of %s refused", d->snapshot_image);
        return -EIO;
    }
    return 0;
}

static int
fs_wipe(void *ctx, const struct inst_desired *d, char *err, size_t len)
{
    struct fstore *s = ctx;
    s->wipes++;
    if (s->fail_wipe) {
        s->fail_wipe--;
        snprintf(err, len, "disk of %s busy", d->uuid);
        return -EBUSY;
    }
    return 0;
}

static char events[4096];

static void
on_event(void *ctx, const char *uuid, const char *event, const char *detail)
{
    (void)ctx;
    (void)detail;
    size_t n = strlen(events);
    snprintf(events + n, sizeof events - n, "%.8s:%s ", uuid, event);
}

/* A pass and the creates it handed to the reconciler's pool, with the
 * steps of both. */
static int
pass(struct reconciler *rc, struct desired_set *ds)
{
    struct rc_pass_stats st;
    int r = rc_pass(rc, ds, 1000, &st);
    if (!r)
        rc_drain(rc, &st);
    return r ? r : (int)st.actions;
}

static enum power_state
power(struct hypervisor *hv)
{
    struct inst_actual *v;
    size_t n;
    enum power_state p = POWER_NOSTATE;
    if (hv->class->list(hv, &v, &n) == 0) {
        for (size_t i = 0; i < n; i++)
            if (!strcmp(v[i].uuid, U1))
                p = v[i].power;
        free(v);
    }
    return p;
}

/* One guest U1 (1 vCPU, 128 MiB, 1 GiB, running, generation 1, image
 * 'image') under a reconciler with the fake hypervisor and the fake
 * storage, after its first pass. */
struct fixture {
    struct hypervisor *hv;
    struct fstore fs;
    struct rc_storage st;
    struct rc_config cfg;
    struct reconciler *rc;
    struct inst_desired d;
    struct desired_set ds;
};

static void
fixture_init(struct fixture *fx, const char *image)
{
    char err[128];
    struct hv_config hc = { .type = "fake" };
    memset(fx, 0, sizeof *fx);
    CHECK_INT(hv_open(&hc, &fx->hv, err, sizeof err), 0);
    fx->st = (struct rc_storage){ .prepare = fs_prepare, .remove = fs_remove, .ctx = &fx->fs,
                                  .grow = fs_grow, .snapshot = fs_snap, .upload = fs_upload,
                                  .wipe = fs_wipe, .action_ctx = &fx->fs };
    fx->cfg = (struct rc_config){ .grace_ms = 60000, .max_attempts = 3, .stop_timeout_ms = 10 };
    CHECK_INT(rc_new(fx->hv, &fx->st, &fx->cfg, on_event, NULL, &fx->rc), 0);
    fx->d = (struct inst_desired){ .uuid = U1, .name = "vm", .vcpus = 1, .ram_mb = 128,
                                   .disk_gb = 1, .power = POWER_RUNNING, .generation = 1 };
    snprintf(fx->d.image.id, sizeof fx->d.image.id, "%s", image);
    fx->ds = (struct desired_set){ .version = 1, .insts = &fx->d, .n = 1 };
    events[0] = 0;
    CHECK(pass(fx->rc, &fx->ds) > 0);
}

/* A new reconciler over the same hypervisor and storage, as after an
 * agent restart. */
static void
fixture_restart(struct fixture *fx)
{
    rc_free(fx->rc);
    CHECK_INT(rc_new(fx->hv, &fx->st, &fx->cfg, on_event, NULL, &fx->rc), 0);
}

static void
fixture_free(struct fixture *fx)
{
    rc_free(fx->rc);
    hv_close(fx->hv);
}

static void
test_parse(void)
{
    struct desired_set ds;
    char err[256];
    const char *ok = "{\"version\":3,\"instances\":[{\"uuid\":\"" U1 "\",\"flavor\":{\"vcpus\":2,"
                     "\"ram_mb\":256,\"disk_gb\":2},\"image\":{\"id\":\"i1\"},\"generation\":4,"
                     "\"action\":\"snapshot\",\"snapshot\":{\"image_id\":"
                     "\"0b9a3c1e-5f4d-4c2b-9a8e-7d6c5b4a3f21\"}}]}";
    CHECK_INT(sj_parse_desired(ok, strlen(ok), &ds, err, sizeof err), 0);
    CHECK_STR(ds.insts[0].action, "snapshot");
    CHECK_STR(ds.insts[0].snapshot_image, "0b9a3c1e-5f4d-4c2b-9a8e-7d6c5b4a3f21");
    desired_set_free(&ds);
    static const char *const bad[] = {
        "{\"version\":1,\"instances\":[{\"uuid\":\"" U1 "\",\"image\":{\"id\":\"i\"},"
        "\"action\":\"migrate\"}]}",
        "{\"version\":1,\"instances\":[{\"uuid\":\"" U1 "\",\"image\":{\"id\":\"i\"},"
        "\"action\":\"snapshot\"}]}",
        "{\"version\":1,\"instances\":[{\"uuid\":\"" U1 "\",\"image\":{\"id\":\"i\"},"
        "\"action\":\"snapshot\",\"snapshot\":{\"image_id\":\"../../etc\"}}]}",
        "{\"version\":1,\"instances\":[{\"uuid\":\"" U1 "\",\"image\":{\"id\":\"i\"},"
        "\"action\":5}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(sj_parse_desired(bad[i], strlen(bad[i]), &ds, err, sizeof err) < 0);
        desired_set_free(&ds);
    }
}

static void
test_resize_and_snapshot(void)
{
    struct fixture fx;
    fixture_init(&fx, "img");
    struct hypervisor *hv = fx.hv;
    struct fstore *fs = &fx.fs;
    struct inst_desired *d = &fx.d;
    unsigned vcpus = 0, ram = 0;

    CHECK_INT(hv_fake_flavor(hv, U1, &vcpus, &ram), 0);
    CHECK_INT(vcpus, 1);

    /* Resize of a running guest: stopped, disk grown, redefined, started. */
    d->generation = 2;
    d->vcpus = 2;
    d->ram_mb = 256;
    d->disk_gb = 2;
    snprintf(d->action, sizeof d->action, "resize");
    unsigned stops = hv_fake_calls(hv, "stop");
    CHECK(pass(fx.rc, &fx.ds) > 0);
    CHECK_INT(hv_fake_flavor(hv, U1, &vcpus, &ram), 0);
    CHECK_INT(vcpus, 2);
    CHECK_INT(ram, 256);
    CHECK_INT(fs->grows, 1);
    CHECK_INT(hv_fake_calls(hv, "stop"), stops + 1);
    CHECK_INT(power(hv), POWER_RUNNING);
    CHECK(strstr(events, "11111111:resized"));
    CHECK_INT(rc_find(fx.rc, U1)->generation, 2);
    /* Once per generation, after a restart too. */
    CHECK_INT(pass(fx.rc, &fx.ds), 0);
    fixture_restart(&fx);
    CHECK_INT(pass(fx.rc, &fx.ds), 0);
    CHECK_INT(fs->grows, 1);

    /* A stopped guest stays stopped after its resize. */
    d->generation = 3;
    d->power = POWER_SHUTOFF;
    d->action[0] = 0;
    CHECK(pass(fx.rc, &fx.ds) > 0);
    CHECK_INT(power(hv), POWER_SHUTOFF);
    d->generation = 4;
    d->vcpus = 1;
    snprintf(d->action, sizeof d->action, "resize");
    CHECK(pass(fx.rc, &fx.ds) > 0);
    CHECK_INT(power(hv), POWER_SHUTOFF);
    CHECK_INT(hv_fake_flavor(hv, U1, &vcpus, &ram), 0);
    CHECK_INT(vcpus, 1);

    /* Snapshot of a running guest: paused around the copy, uploaded. */
    d->generation = 5;
    d->power = POWER_RUNNING;
    d->action[0] = 0;
    CHECK(pass(fx.rc, &fx.ds) > 0);
    d->generation = 6;
    snprintf(d->action, sizeof d->action, "snapshot");
    snprintf(d->snapshot_image, sizeof d->snapshot_image, "0b9a3c1e-5f4d-4c2b-9a8e-7d6c5b4a3f21");
    unsigned pauses = hv_fake_calls(hv, "pause"), unpauses = hv_fake_calls(hv, "unpause");
    fs->fail_upload = 1;
    CHECK_INT(pass(fx.rc, &fx.ds), 1);                       /* Fails once, retried. */
    CHECK(strstr(events, "step-failed"));
    CHECK_INT(power(hv), POWER_RUNNING);               /* Unpaused even then. */
    CHECK(pass(fx.rc, &fx.ds) > 0);
    CHECK_INT(fs->snaps, 2);
    CHECK_INT(fs->uploads, 2);
    CHECK_INT(hv_fake_calls(hv, "pause"), pauses + 2);
    CHECK_INT(hv_fake_calls(hv, "unpause"), unpauses + 2);
    CHECK_INT(power(hv), POWER_RUNNING);
    CHECK(strstr(events, "snapshot-uploaded"));
    CHECK_INT(rc_find(fx.rc, U1)->generation, 6);
    CHECK_INT(pass(fx.rc, &fx.ds), 0);
    CHECK_INT(fs->uploads, 2);

    /* A crash while the guest was paused for a snapshot: the restarted
     * agent takes the snapshot and resumes the guest (not just resumes). */
    d->generation = 7;
    CHECK_INT(hv->class->pause(hv, U1), 0);
    fixture_restart(&fx);
    int uploads = fs->uploads;
    CHECK(pass(fx.rc, &fx.ds) > 0);
    CHECK_INT(fs->uploads, uploads + 1);
    CHECK_INT(power(hv), POWER_RUNNING);
    CHECK_INT(rc_find(fx.rc, U1)->generation, 7);

    /* Failing every time: ERROR after max_attempts. */
    d->generation = 8;
    fs->fail_upload = 10;
    for (int i = 0; i < 4; i++)
        (void)pass(fx.rc, &fx.ds);
    CHECK_INT(rc_find(fx.rc, U1)->state, RC_ERROR);
    CHECK(strstr(rc_find(fx.rc, U1)->fault, "refused"));

    /* Without the operations (e.g. no image service): the step fails. */
    fx.st.snapshot = fx.st.upload = NULL;
    fixture_restart(&fx);
    d->generation = 9;
    CHECK_INT(pass(fx.rc, &fx.ds), 1);
    CHECK(strstr(rc_find(fx.rc, U1)->fault, "cannot take snapshots"));
    fixture_free(&fx);
}

/* Rebuild: stop, new disk from the new image, defined again, started as
 * it was (running or stopped); once per generation, after a restart too;
 * a failure is retried, then ERROR. */
static void
test_rebuild(void)
{
    struct fixture fx;
    fixture_init(&fx, "img-a");
    struct hypervisor *hv = fx.hv;
    struct fstore *fs = &fx.fs;
    struct inst_desired *d = &fx.d;
    CHECK_STR(fs->image, "img-a");
    CHECK_INT(fs->wipes, 0);

    /* A running guest: stopped, disk dropped, defined from img-b, started. */
    d->generation = 2;
    snprintf(d->image.id, sizeof d->image.id, "img-b");
    snprintf(d->action, sizeof d->action, "rebuild");
    unsigned stops = hv_fake_calls(hv, "stop");
    CHECK(pass(fx.rc, &fx.ds) > 0);
    CHECK_INT(fs->wipes, 1);
    CHECK_STR(fs->image, "img-b");
    CHECK_INT(hv_fake_calls(hv, "stop"), stops + 1);
    CHECK_INT(power(hv), POWER_RUNNING);
    CHECK(strstr(events, "11111111:rebuilt"));
    CHECK_INT(rc_find(fx.rc, U1)->generation, 2);
    CHECK_INT(rc_find(fx.rc, U1)->state, RC_ACTIVE);
    CHECK_INT(pass(fx.rc, &fx.ds), 0);
    fixture_restart(&fx);
    CHECK_INT(pass(fx.rc, &fx.ds), 0);
    CHECK_INT(fs->wipes, 1);

    /* A stopped guest stays stopped. */
    d->generation = 3;
    d->power = POWER_SHUTOFF;
    d->action[0] = 0;
    CHECK(pass(fx.rc, &fx.ds) > 0);
    d->generation = 4;
    snprintf(d->image.id, sizeof d->image.id, "img-c");
    snprintf(d->action, sizeof d->action, "rebuild");
    CHECK(pass(fx.rc, &fx.ds) > 0);
    CHECK_INT(fs->wipes, 2);
    CHECK_STR(fs->image, "img-c");
    CHECK_INT(power(hv), POWER_SHUTOFF);
    CHECK_INT(rc_find(fx.rc, U1)->state, RC_STOPPED);

    /* Fails once: retried on the next pass. */
    d->generation = 5;
    d->power = POWER_RUNNING;
    fs->fail_wipe = 1;
    CHECK_INT(pass(fx.rc, &fx.ds), 1);
    CHECK(strstr(rc_find(fx.rc, U1)->fault, "busy"));
    CHECK(pass(fx.rc, &fx.ds) > 0);
    CHECK_INT(power(hv), POWER_RUNNING);
    CHECK_INT(rc_find(fx.rc, U1)->generation, 5);

    /* Failing every time: ERROR after max_attempts. */
    d->generation = 6;
    fs->fail_wipe = 10;
    for (int i = 0; i < 4; i++)
        (void)pass(fx.rc, &fx.ds);
    CHECK_INT(rc_find(fx.rc, U1)->state, RC_ERROR);

    /* The parser takes the action. */
    struct desired_set p;
    char e2[256];
    const char *doc = "{\"version\":1,\"instances\":[{\"uuid\":\"" U1 "\",\"name\":\"vm\","
        "\"flavor\":{\"vcpus\":1,\"ram_mb\":128,\"disk_gb\":1},\"image\":{\"id\":\"img\"},"
        "\"generation\":2,\"action\":\"rebuild\"}]}";
    CHECK_INT(sj_parse_desired(doc, strlen(doc), &p, e2, sizeof e2), 0);
    CHECK_STR(p.insts[0].action, "rebuild");
    desired_set_free(&p);

    fixture_free(&fx);
}

static void
test_console_tail(void)
{
    char dir[] = "/tmp/nimbus-console-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/console.log", dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 5000; i++)
        fprintf(f, "line %05d of the boot log\r\n", i);
    fputs("bad \xff\xfe utf8, ctl \x01\x1b[0m, nul", f);
    fputc(0, f);
    fputs(" tab\tand \xc3\xa9t\xc3\xa9\n", f);
    fclose(f);
    char *t = console_tail(path, CONSOLE_TAIL_BYTES);
    CHECK(t != NULL);
    if (t) {
        CHECK(strlen(t) <= CONSOLE_TAIL_BYTES);
        CHECK(!strncmp(t, "line ", 5));                /* Cut at a line start. */
        CHECK(strstr(t, "line 04999 of the boot log\n"));
        CHECK(!strchr(t, '\r'));
        CHECK(strstr(t, "bad ?? utf8, ctl [0m, nul tab\tand \xc3\xa9t\xc3\xa9\n"));
        json_t *j = json_string(t);                    /* Valid UTF-8. */
        CHECK(j != NULL);
        json_decref(j);
        free(t);
    }
    CHECK(console_tail("/nonexistent/console.log", 100) == NULL);
    unlink(path);
    rmdir(dir);
}

static bool
has_console(const char *doc, const char *needle)
{
    json_t *j = doc ? json_loads(doc, 0, NULL) : NULL;
    const char *c = json_string_value(json_object_get(
        json_array_get(json_object_get(j, "instances"), 0), "console"));
    bool r = c && strstr(c, needle);
    json_decref(j);
    return r;
}

static void
test_console_report(void)
{
    char dir[] = "/tmp/nimbus-creport-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct storage *st;
    CHECK_INT(storage_new(dir, NULL, false, &st), 0);
    char idir[PATH_MAX], path[PATH_MAX + 16];
    storage_inst_dir(st, U1, idir);
    CHECK_INT(mkdir(idir, 0755), 0);
    snprintf(path, sizeof path, "%s/console.log", idir);
    FILE *f = fopen(path, "w");
    fputs("boot 1\n", f);
    fclose(f);
    struct console_report *cr;
    CHECK_INT(console_report_new(st, &cr), 0);
    const char *doc = "{\"node\":\"n\",\"instances\":[{\"uuid\":\"" U1 "\","
                      "\"vm_state\":\"active\"}]}";
    char *out = console_report_add(cr, doc, 1000, 0);          /* Document 1. */
    CHECK(has_console(out, "boot 1\n"));
    free(out);
    out = console_report_add(cr, doc, 1100, 0);                /* 2: 1 not delivered yet. */
    CHECK(has_console(out, "boot 1"));
    free(out);
    out = console_report_add(cr, doc, 1200, 2);                /* 3: delivered. */
    CHECK(out == NULL);
    f = fopen(path, "a");
    fputs("boot 2\n", f);
    fclose(f);
    out = console_report_add(cr, doc, 1300, 3);                /* 4: changed. */
    CHECK(has_console(out, "boot 1\nboot 2\n"));
    free(out);
    out = console_report_add(cr, doc, 1400, 5);                /* 5: 4 delivered. */
    CHECK(out == NULL);
    out = console_report_add(cr, doc, 1400 + CONSOLE_RESEND_MS, 5);
    CHECK(has_console(out, "boot 2"));                         /* Sent again later. */
    free(out);
    const char *gone = "{\"instances\":[{\"uuid\":\"" U1 "\",\"vm_state\":\"deleting\"}]}";
    CHECK(console_report_add(cr, gone, 99999999, 0) == NULL);
    console_report_free(cr);
    unlink(path);
    rmdir(idir);
    storage_free(st);
    char root[PATH_MAX + 16];
    snprintf(root, sizeof root, "%s/instances", dir);
    rmdir(root);
    rmdir(dir);
}

/* Storage for rescue tests: fs_prepare, and in rescue mode the rescue
 * overlay of the document's rescue image (storage.c's rule). */
static int
fs_prepare_rescue(void *ctx, const struct inst_desired *d, struct rc_prepared *p, char *err,
                  size_t len)
{
    int r = fs_prepare(ctx, d, p, err, len);
    if (!r && d->rescue)
        snprintf(p->rescue_disk, sizeof p->rescue_disk, "/fake/%s/rescue-%s.qcow2", d->uuid,
                 d->rescue_image.id);
    return r;
}

/* Rescue and unrescue: the guest is stopped and defined again in the mode
 * of the document (rescue overlay first, its own disk second; or its own
 * disk alone), started when it should run; once per generation, after a
 * restart too; a step cut short (generation not recorded) is repeated and
 * ends in the same mode; a guest defined afresh in rescue mode needs no
 * rescue step; a stop of a rescued guest ("unrescue", shutoff) leaves it
 * off on its own disk. */
static void
test_rescue(void)
{
    struct hypervisor *hv;
    char err[128];
    struct hv_config hc = { .type = "fake" };
    CHECK_INT(hv_open(&hc, &hv, err, sizeof err), 0);
    struct fstore fs = { 0 };
    struct rc_storage st = { .prepare = fs_prepare_rescue, .remove = fs_remove, .ctx = &fs };
    struct rc_config cfg = { .grace_ms = 60000, .max_attempts = 3, .stop_timeout_ms = 10 };
    struct reconciler *rc;
    CHECK_INT(rc_new(hv, &st, &cfg, on_event, NULL, &rc), 0);
    struct inst_desired d = { .uuid = U1, .name = "vm", .vcpus = 1, .ram_mb = 128,
                              .disk_gb = 1, .power = POWER_RUNNING, .generation = 1 };
    snprintf(d.image.id, sizeof d.image.id, "img-a");
    struct desired_set ds = { .version = 1, .insts = &d, .n = 1 };
    events[0] = 0;
    CHECK(pass(rc, &ds) > 0);
    CHECK_STR(hv_fake_rescue_disk(hv, U1), "");

    /* Rescue of a running guest. */
    d.generation = 2;
    d.rescue = true;
    snprintf(d.rescue_image.id, sizeof d.rescue_image.id, "img-r");
    snprintf(d.action, sizeof d.action, "rescue");
    unsigned stops = hv_fake_calls(hv, "stop"), creates = hv_fake_calls(hv, "create");
    CHECK(pass(rc, &ds) > 0);
    CHECK_INT(hv_fake_calls(hv, "stop"), stops + 1);
    CHECK_INT(hv_fake_calls(hv, "create"), creates + 1);
    CHECK_STR(hv_fake_rescue_disk(hv, U1), "/fake/" U1 "/rescue-img-r.qcow2");
    CHECK_STR(hv_fake_disk(hv, U1), "/fake/" U1 "/disk.qcow2");
    CHECK_INT(power(hv), POWER_RUNNING);
    CHECK(strstr(events, "11111111:rescued"));
    CHECK_INT(rc_find(rc, U1)->generation, 2);
    CHECK_INT(rc_find(rc, U1)->state, RC_ACTIVE);
    CHECK_INT(pass(rc, &ds), 0);
    rc_free(rc);
    CHECK_INT(rc_new(hv, &st, &cfg, on_event, NULL, &rc), 0);
    CHECK_INT(pass(rc, &ds), 0);
    CHECK_INT(hv_fake_calls(hv, "create"), creates + 1);

    /* Unrescue, cut short before the generation is recorded (as by a
     * kill -9): repeated on the next pass, on the own disk alone. */
    d.generation = 3;
    d.rescue = false;
    memset(&d.rescue_image, 0, sizeof d.rescue_image);
    snprintf(d.action, sizeof d.action, "unrescue");
    hv_fake_fail(hv, "set_generation", -EIO, 1);
    CHECK_INT(pass(rc, &ds), 1);
    CHECK_STR(hv_fake_rescue_disk(hv, U1), "");
    CHECK_INT(rc_find(rc, U1)->generation, 2);
    CHECK(pass(rc, &ds) > 0);
    CHECK_STR(hv_fake_rescue_disk(hv, U1), "");
    CHECK_INT(power(hv), POWER_RUNNING);
    CHECK_INT(rc_find(rc, U1)->generation, 3);
    CHECK(strstr(events, "11111111:unrescued"));
    CHECK_INT(pass(rc, &ds), 0);

    /* A guest lost and defined again while rescued: created in rescue
     * mode, no rescue step after. */
    d.generation = 4;
    d.rescue = true;
    snprintf(d.rescue_image.id, sizeof d.rescue_image.id, "img-a");
    snprintf(d.action, sizeof d.action, "rescue");
    CHECK_INT(hv->class->destroy(hv, U1), 0);
    stops = hv_fake_calls(hv, "stop");
    CHECK(pass(rc, &ds) > 0);
    CHECK_STR(hv_fake_rescue_disk(hv, U1), "/fake/" U1 "/rescue-img-a.qcow2");
    CHECK_INT(hv_fake_calls(hv, "stop"), stops);
    CHECK_INT(rc_find(rc, U1)->generation, 4);
    CHECK_INT(power(hv), POWER_RUNNING);

    /* Stopped while rescued: off, on its own disk. */
    d.generation = 5;
    d.rescue = false;
    d.power = POWER_SHUTOFF;
    snprintf(d.action, sizeof d.action, "unrescue");
    CHECK(pass(rc, &ds) > 0);
    CHECK_STR(hv_fake_rescue_disk(hv, U1), "");
    CHECK_INT(power(hv), POWER_SHUTOFF);
    CHECK_INT(rc_find(rc, U1)->state, RC_STOPPED);

    /* Rescue of a stopped guest: it runs, rescued. */
    d.generation = 6;
    d.rescue = true;
    d.power = POWER_RUNNING;
    snprintf(d.action, sizeof d.action, "rescue");
    CHECK(pass(rc, &ds) > 0);
    CHECK_STR(hv_fake_rescue_disk(hv, U1), "/fake/" U1 "/rescue-img-a.qcow2");
    CHECK_INT(power(hv), POWER_RUNNING);
    CHECK_INT(rc_find(rc, U1)->generation, 6);

    /* The parser: the rescue object, the actions. */
    struct desired_set p;
    char e2[256];
    const char *doc = "{\"version\":1,\"instances\":[{\"uuid\":\"" U1 "\",\"name\":\"vm\","
        "\"image\":{\"id\":\"img\"},\"generation\":2,\"action\":\"rescue\","
        "\"rescue\":{\"image\":{\"id\":\"r1\",\"disk_format\":\"ami\",\"properties\":"
        "{\"kernel_id\":\"k1\",\"ramdisk_id\":\"d1\",\"os_command_line\":\"console=ttyS0\"}},"
        "\"kernel\":{\"id\":\"k1\"},\"ramdisk\":{\"id\":\"d1\"}}}]}";
    CHECK_INT(sj_parse_desired(doc, strlen(doc), &p, e2, sizeof e2), 0);
    if (p.n == 1) {
        CHECK_STR(p.insts[0].action, "rescue");
        CHECK(p.insts[0].rescue);
        CHECK_STR(p.insts[0].rescue_image.id, "r1");
        CHECK_STR(p.insts[0].rescue_image.os_command_line, "console=ttyS0");
        CHECK_STR(p.insts[0].rescue_kernel.id, "k1");
        CHECK_STR(p.insts[0].rescue_ramdisk.id, "d1");
    }
    desired_set_free(&p);
    doc = "{\"version\":1,\"instances\":[{\"uuid\":\"" U1 "\",\"image\":{\"id\":\"img\"},"
          "\"action\":\"unrescue\",\"rescue\":null}]}";
    CHECK_INT(sj_parse_desired(doc, strlen(doc), &p, e2, sizeof e2), 0);
    if (p.n == 1)
        CHECK(!p.insts[0].rescue);
    desired_set_free(&p);
    static const char *const bad[] = {
        "{\"version\":1,\"instances\":[{\"uuid\":\"" U1 "\",\"image\":{\"id\":\"i\"},"
        "\"rescue\":true}]}",
        "{\"version\":1,\"instances\":[{\"uuid\":\"" U1 "\",\"image\":{\"id\":\"i\"},"
        "\"rescue\":{}}]}",
        "{\"version\":1,\"instances\":[{\"uuid\":\"" U1 "\",\"image\":{\"id\":\"i\"},"
        "\"rescue\":{\"image\":{\"id\":\"../x\"}}}]}",
        "{\"version\":1,\"instances\":[{\"uuid\":\"" U1 "\",\"image\":{\"id\":\"i\"},"
        "\"rescue\":{\"image\":{\"id\":\"r\",\"properties\":{\"kernel_id\":\"k\"}}}}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(sj_parse_desired(bad[i], strlen(bad[i]), &p, e2, sizeof e2) < 0);
        desired_set_free(&p);
    }

    rc_free(rc);
    hv_close(hv);
}

int
main(void)
{
    test_console_report();
    test_parse();
    test_resize_and_snapshot();
    test_rebuild();
    test_rescue();
    test_console_tail();
    return check_exit();
}
