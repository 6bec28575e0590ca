/* The image cache: fetch once, verify sha512, detect a corrupted cached
 * copy and fetch it again, refuse a download that does not match, qcow2
 * overlays with qemu-img (backing file, size, idempotent), unpacked
 * container layers (plain rootfs tarball and OCI layout), cleaning by age,
 * instance storage (console tails, listing, idempotent removal), and two
 * instances of one image prepared at once (one fetch, the other waits).
 * Exits 77 when qemu-img is missing. */
#include "image_cache.h"
#include "storage.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "strbuf.h"
#include "../check.h"

static char root[] = "/tmp/nimbus-imgcache-XXXXXX";
static char src[PATH_MAX], cachedir[PATH_MAX];

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    fputs(text, f);
    fclose(f);
}

static int
sh2(const char *a, const char *b)
{
    char cmd[2048];
    bfmt(cmd, sizeof cmd, "%s %s", a, b);
    return system(cmd);
}

static void
test_base(struct img_cache *c)
{
    struct inst_image img = { .id = "img1", .disk_format = "raw" };
    char p[PATH_MAX], path[PATH_MAX], err[256];
    bfmt(p, sizeof p, "%s/img1", src);
    write_file(p, "hello image\n");
    CHECK_INT(img_sha512_file(p, img.sha512), 0);

    CHECK_INT(img_cache_base(c, &img, path, err, sizeof err), 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0444);
    CHECK_INT(img_cache_base(c, &img, path, err, sizeof err), 0);
    struct img_cache_stats s;
    img_cache_stats(c, &s);
    CHECK_INT(s.fetches, 1);
    CHECK_INT(s.hits, 1);

    /* Corrupt the cached copy: detected by its hash, fetched again. */
    chmod(path, 0644);
    write_file(path, "hello imagf\n");
    CHECK_INT(img_cache_base(c, &img, path, err, sizeof err), 0);
    img_cache_stats(c, &s);
    CHECK_INT(s.fetches, 2);
    CHECK_INT(s.hash_failures, 1);
    char hex[129];
    CHECK_INT(img_sha512_file(path, hex), 0);
    CHECK_STR(hex, img.sha512);

    /* The source itself is wrong: refused, nothing left in the cache. */
    struct inst_image bad = img;
    bfmt(bad.id, sizeof bad.id, "img2");
    bfmt(p, sizeof p, "%s/img2", src);
    write_file(p, "tampered\n");
    CHECK_INT(img_cache_base(c, &bad, path, err, sizeof err), -EBADMSG);
    CHECK(strstr(err, "sha512 mismatch") != NULL);
    CHECK(access(path, F_OK) != 0);

    /* Missing source and invalid ids. */
    struct inst_image none = { .id = "nope" };
    CHECK_INT(img_cache_base(c, &none, path, err, sizeof err), -ENOENT);
    struct inst_image evil = { .id = "../../etc/passwd" };
    CHECK_INT(img_cache_base(c, &evil, path, err, sizeof err), -EINVAL);
}

static void
test_overlay(struct img_cache *c)
{
    char p[PATH_MAX], base[PATH_MAX], ov[PATH_MAX], err[512], out[PATH_MAX];
    bfmt(p, sizeof p, "%s/disk1", src);
    char cmd[PATH_MAX + 64];
    bfmt(cmd, sizeof cmd, "qemu-img create -q -f qcow2 %s 64M", p);
    CHECK_INT(system(cmd), 0);
    struct inst_image img = { .id = "disk1", .disk_format = "qcow2" };
    CHECK_INT(img_cache_base(c, &img, base, err, sizeof err), 0);
    bfmt(ov, sizeof ov, "%s/ov.qcow2", root);
    CHECK_INT(img_cache_overlay(c, base, "qcow2", ov, 1, err, sizeof err), 0);
    bfmt(out, sizeof out, "qemu-img info %s | grep -q 'virtual size: 1 GiB'", ov);
    CHECK_INT(system(out), 0);
    bfmt(out, sizeof out, "qemu-img info %s | grep -q 'backing file: %s'", ov, base);
    CHECK_INT(system(out), 0);
    struct stat a, b;
    CHECK(stat(ov, &a) == 0);
    /* Again (a restart): kept as it is. */
    CHECK_INT(img_cache_overlay(c, base, "qcow2", ov, 1, err, sizeof err), 0);
    CHECK(stat(ov, &b) == 0 && a.st_ino == b.st_ino);
    struct img_cache_stats s;
    img_cache_stats(c, &s);
    CHECK_INT(s.overlays_created, 1);
    /* disk_gb 0: the base's size. */
    bfmt(ov, sizeof ov, "%s/ov0.qcow2", root);
    CHECK_INT(img_cache_overlay(c, base, "qcow2", ov, 0, err, sizeof err), 0);
    bfmt(out, sizeof out, "qemu-img info %s | grep -q 'virtual size: 64 MiB'", ov);
    CHECK_INT(system(out), 0);
}

static void
test_layers(struct img_cache *c)
{
    char cmd[4096], err[512], path[PATH_MAX], p[PATH_MAX];
    /* A plain rootfs tarball. */
    bfmt(cmd, sizeof cmd,
             "set -e; d=%s/rf; mkdir -p $d/bin; echo hi > $d/bin/hello; "
             "tar -C $d -cf %s/rootfs1 .", root, src);
    CHECK_INT(system(cmd), 0);
    struct inst_image img = { .id = "rootfs1", .container_format = "docker" };
    CHECK_INT(img_cache_layer(c, &img, path, err, sizeof err), 0);
    bfmt(p, sizeof p, "%s/bin/hello", path);
    CHECK(access(p, F_OK) == 0);
    CHECK_INT(img_cache_layer(c, &img, path, err, sizeof err), 0);

    /* An OCI image layout with two layers, the second overriding. */
    bfmt(cmd, sizeof cmd,
             "set -e; o=%s/oci; mkdir -p $o/blobs/sha256 $o/l1/etc $o/l2/etc; "
             "echo one > $o/l1/etc/msg; echo base > $o/l1/etc/keep; echo two > $o/l2/etc/msg; "
             "tar -C $o/l1 -czf $o/layer1 .; tar -C $o/l2 -czf $o/layer2 .; "
             "h1=$(sha256sum $o/layer1 | cut -d' ' -f1); h2=$(sha256sum $o/layer2 | cut -d' ' -f1); "
             "mv $o/layer1 $o/blobs/sha256/$h1; mv $o/layer2 $o/blobs/sha256/$h2; "
             "printf '{\"layers\":[{\"digest\":\"sha256:%%s\"},{\"digest\":\"sha256:%%s\"}]}' $h1 $h2 > $o/m; "
             "hm=$(sha256sum $o/m | cut -d' ' -f1); mv $o/m $o/blobs/sha256/$hm; "
             "printf '{\"manifests\":[{\"digest\":\"sha256:%%s\"}]}' $hm > $o/index.json; "
             "echo '{\"imageLayoutVersion\":\"1.0.0\"}' > $o/oci-layout; "
             "rm -rf $o/l1 $o/l2; tar -C $o -cf %s/ociimg .", root, src);
    CHECK_INT(system(cmd), 0);
    struct inst_image oci = { .id = "ociimg", .container_format = "ociarchive" };
    CHECK_INT(img_cache_layer(c, &oci, path, err, sizeof err), 0);
    if (*err)
        fprintf(stderr, "layer: %s\n", err);
    bfmt(cmd, sizeof cmd, "grep -qx two %s/etc/msg && grep -qx base %s/etc/keep", path, path);
    CHECK_INT(system(cmd), 0);
}

static void
test_clean(struct img_cache *c)
{
    const char *in_use[] = { "disk1" };
    /* Nothing is old enough yet. */
    CHECK_INT(img_cache_clean(c, in_use, 1, 3600, time(NULL)), 0);
    /* An hour later everything unused goes, the one in use stays. */
    int n = img_cache_clean(c, in_use, 1, 3600, time(NULL) + 7200);
    CHECK(n >= 2);
    char p[PATH_MAX];
    bfmt(p, sizeof p, "%s/base/disk1", cachedir);
    CHECK(access(p, F_OK) == 0);
    bfmt(p, sizeof p, "%s/base/img1", cachedir);
    CHECK(access(p, F_OK) != 0);
    bfmt(p, sizeof p, "%s/layers/rootfs1", cachedir);
    CHECK(access(p, F_OK) != 0);
}

/* Instance storage: console tails, listing and removal. */
static void
test_storage(struct img_cache *c)
{
    char state[PATH_MAX], dir[PATH_MAX], p[PATH_MAX];
    bfmt(state, sizeof state, "%s/state", root);
    struct storage *s;
    CHECK_INT(storage_new(state, c, false, &s), 0);
    const char *u = "0b9a3c1e-5f4d-4c2b-9a8e-7d6c5b4a3f21";
    storage_inst_dir(s, u, dir);
    CHECK(mkdir(dir, 0755) == 0);
    bfmt(p, sizeof p, "%s/console.log", dir);
    write_file(p, "one\ntwo\nthree\nfour\nfive\n");
    char *out;
    size_t len;
    CHECK_INT(storage_console(s, u, 2, &out, &len), 0);
    CHECK_STR(out, "four\nfive\n");
    CHECK_INT(len, 10);
    free(out);
    CHECK_INT(storage_console(s, u, 0, &out, &len), 0);
    CHECK_INT(len, 24);
    free(out);
    CHECK_INT(storage_console(s, u, 99, &out, &len), 0);
    CHECK_STR(out, "one\ntwo\nthree\nfour\nfive\n");
    free(out);
    CHECK_INT(storage_console(s, "../../etc/passwd", 0, &out, &len), -EINVAL);
    CHECK_INT(storage_console(s, "11111111-1111-4111-8111-111111111111", 0, &out, &len), -ENOENT);

    struct rc_storage si = storage_interface(s);
    char (*ids)[37];
    size_t n;
    CHECK_INT(si.list(si.ctx, &ids, &n), 0);
    CHECK_INT(n, 1);
    if (n)
        CHECK_STR(ids[0], u);
    free(ids);
    char err[256];
    CHECK_INT(si.remove(si.ctx, u, err, sizeof err), 0);
    CHECK(access(dir, F_OK) != 0);
    CHECK_INT(si.remove(si.ctx, u, err, sizeof err), 0);   /* Idempotent. */
    CHECK_INT(si.remove(si.ctx, "x/../..", err, sizeof err), -EINVAL);
    storage_free(s);
}

/* A slow image store: the file arrives in two halves 300 ms apart, as
 * over a network. */
static int slow_fetches;

static int
slow_fetch(void *ctx, const struct inst_image *img, const char *dest, char *err, size_t errlen)
{
    __atomic_add_fetch(&slow_fetches, 1, __ATOMIC_SEQ_CST);
    char tmp[PATH_MAX];
    bfmt(tmp, sizeof tmp, "%s.half", dest);
    int r = img_fetch_dir(ctx, img, tmp, err, errlen);
    if (r)
        return r;
    struct stat st;
    CHECK(stat(tmp, &st) == 0);
    char cmd[3 * PATH_MAX];
    bfmt(cmd, sizeof cmd, "head -c %lld %s > %s", (long long)st.st_size / 2, tmp, dest);
    CHECK_INT(system(cmd), 0);
    struct timespec ts = { 0, 300 * 1000000L };
    nanosleep(&ts, NULL);
    bfmt(cmd, sizeof cmd, "tail -c +%lld %s >> %s", (long long)st.st_size / 2 + 1, tmp, dest);
    CHECK_INT(system(cmd), 0);
    unlink(tmp);
    return 0;
}

struct prep {
    struct rc_storage si;
    struct inst_desired d;
    struct rc_prepared p;
    int r;
    char err[256];
};

static void *
prep_thread(void *arg)
{
    struct prep *x = arg;
    x->r = x->si.prepare(x->si.ctx, &x->d, &x->p, x->err, sizeof x->err);
    return NULL;
}

/* Two instances of one image (an ami: a raw file, its format read from
 * its header) prepared at once, as the reconciler's workers do: one
 * fetch, the other waits for it and uses the cached base; each gets its
 * own overlay on it. */
static void
test_concurrent_prepare(void)
{
    char dir[PATH_MAX], state[PATH_MAX], p[PATH_MAX];
    bfmt(dir, sizeof dir, "%s/cache2", root);
    bfmt(state, sizeof state, "%s/state2", root);
    bfmt(p, sizeof p, "%s/ami1", src);
    CHECK_INT(sh2("head -c 3000000 /dev/urandom >", p), 0);
    struct img_cache *c;
    CHECK_INT(img_cache_new(dir, (struct img_fetcher){ slow_fetch, src }, &c), 0);
    struct storage *s;
    CHECK_INT(storage_new(state, c, false, &s), 0);
    struct prep x[2];
    memset(x, 0, sizeof x);
    const char *uuids[2] = { "1a9a3c1e-5f4d-4c2b-9a8e-7d6c5b4a3f21",
                             "2b9a3c1e-5f4d-4c2b-9a8e-7d6c5b4a3f22" };
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        x[i].si = storage_interface(s);
        bfmt(x[i].d.uuid, sizeof x[i].d.uuid, "%s", uuids[i]);
        bfmt(x[i].d.image.id, sizeof x[i].d.image.id, "ami1");
        bfmt(x[i].d.image.disk_format, sizeof x[i].d.image.disk_format, "ami");
        CHECK_INT(img_sha512_file(p, x[i].d.image.sha512), 0);
        x[i].d.disk_gb = 1;
        CHECK_INT(pthread_create(&t[i], NULL, prep_thread, &x[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK_INT(slow_fetches, 1);
    struct img_cache_stats cs;
    img_cache_stats(c, &cs);
    CHECK_INT(cs.fetches, 1);
    CHECK_INT(cs.hash_failures, 0);
    CHECK_INT(cs.overlays_created, 2);
    char base[PATH_MAX];
    bfmt(base, sizeof base, "%s/base/ami1", dir);
    char cmd[3 * PATH_MAX];
    bfmt(cmd, sizeof cmd, "cmp -s %s %s", p, base);
    CHECK_INT(system(cmd), 0);   /* Whole, not torn. */
    for (int i = 0; i < 2; i++) {
        CHECK_INT(x[i].r, 0);
        if (x[i].r)
            fprintf(stderr, "prepare %d: %s\n", i, x[i].err);
        CHECK_STR(x[i].p.disk_format, "qcow2");
        /* The overlay backs onto the cached base, read as raw. */
        bfmt(cmd, sizeof cmd, "qemu-img info -U %s | grep -q 'backing file format: raw'",
             x[i].p.disk);
        CHECK_INT(system(cmd), 0);
        bfmt(cmd, sizeof cmd, "qemu-img compare -U %s %s >/dev/null", x[i].p.disk, base);
        CHECK_INT(system(cmd), 0);
    }
    CHECK(strcmp(x[0].p.disk, x[1].p.disk) != 0);
    storage_free(s);
    img_cache_free(c);
}

int
main(void)
{
    if (system("command -v qemu-img >/dev/null 2>&1") != 0) {
        fprintf(stderr, "qemu-img not installed: skipped\n");
        return 77;
    }
    if (!mkdtemp(root))
        return 1;
    bfmt(src, sizeof src, "%s/src", root);
    bfmt(cachedir, sizeof cachedir, "%s/cache", root);
    mkdir(src, 0755);
    struct img_cache *c;
    struct img_fetcher f = { img_fetch_dir, src };
    CHECK_INT(img_cache_new(cachedir, f, &c), 0);
    test_base(c);
    test_overlay(c);
    test_layers(c);
    test_clean(c);
    test_storage(c);
    img_cache_free(c);
    test_concurrent_prepare();
    sh2("rm -rf", root);
    return check_exit();
}
