/* Unit tests of nimbus-image's modules that need no daemon: the disk
 * format checks, the digests and the filesystem store. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "img_api.h"
#include "img_format.h"
#include "img_hash.h"
#include "img_options.h"
#include "img_store.h"

static void
put_be32(unsigned char *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static void
put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

/* A qcow2 header as qemu-img writes it. */
static void
qcow2_header(unsigned char *h, uint32_t version, uint64_t vsize)
{
    memset(h, 0, IMG_FORMAT_HEAD);
    memcpy(h, "QFI\xfb", 4);
    put_be32(h + 4, version);
    put_be32(h + 20, 16);
    put_be64(h + 24, vsize);
    if (version == 3)
        put_be32(h + 100, 112);
}

static int
check_bytes(const unsigned char *data, size_t len, const char *fmt, uint64_t size,
            int64_t *vs, const char **why)
{
    struct img_format_probe p = { .len = 0 };
    /* Feed in uneven pieces, as the network delivers them. */
    size_t off = 0, step = 7;
    while (off < len) {
        size_t n = len - off < step ? len - off : step;
        img_format_feed(&p, data + off, n);
        off += n;
        step = step * 3 + 1;
    }
    return img_format_check(&p, fmt, size, vs, why);
}

static void
test_format(void)
{
    unsigned char h[IMG_FORMAT_HEAD];
    int64_t vs;
    const char *why;

    qcow2_header(h, 3, 64ull << 20);
    CHECK_INT(check_bytes(h, sizeof h, "qcow2", 200000, &vs, &why), 0);
    CHECK_INT(vs, 64ll << 20);
    qcow2_header(h, 2, 1ull << 30);
    CHECK_INT(check_bytes(h, sizeof h, "qcow2", 200000, &vs, &why), 0);
    CHECK_INT(vs, 1ll << 30);

    /* Backing file. */
    qcow2_header(h, 3, 1 << 20);
    put_be64(h + 8, 512);
    put_be32(h + 16, 10);
    CHECK_INT(check_bytes(h, sizeof h, "qcow2", 1000, &vs, &why), -EINVAL);
    CHECK(why && strstr(why, "backing"));
    /* External data file (incompatible feature bit 2). */
    qcow2_header(h, 3, 1 << 20);
    put_be64(h + 72, 1u << 2);
    CHECK_INT(check_bytes(h, sizeof h, "qcow2", 1000, &vs, &why), -EINVAL);
    CHECK(why && strstr(why, "data file"));
    /* Unknown version, silly cluster size. */
    qcow2_header(h, 4, 1 << 20);
    CHECK_INT(check_bytes(h, sizeof h, "qcow2", 1000, &vs, &why), -EINVAL);
    qcow2_header(h, 3, 1 << 20);
    put_be32(h + 20, 40);
    CHECK_INT(check_bytes(h, sizeof h, "qcow2", 1000, &vs, &why), -EINVAL);
    /* Raw data declared qcow2; too short to be qcow2. */
    memset(h, 0xab, sizeof h);
    CHECK_INT(check_bytes(h, sizeof h, "qcow2", 1000, &vs, &why), -EINVAL);
    qcow2_header(h, 3, 1 << 20);
    CHECK_INT(check_bytes(h, 40, "qcow2", 40, &vs, &why), -EINVAL);
    CHECK_INT(check_bytes(h, 0, "qcow2", 0, &vs, &why), -EINVAL);
    /* qcow2 declared raw is refused; raw is raw; others as declared. */
    qcow2_header(h, 3, 1 << 20);
    CHECK_INT(check_bytes(h, sizeof h, "raw", 4096, &vs, &why), -EINVAL);
    memset(h, 0, sizeof h);
    CHECK_INT(check_bytes(h, sizeof h, "raw", 4096, &vs, &why), 0);
    CHECK_INT(vs, 4096);
    CHECK_INT(check_bytes(h, sizeof h, "aki", 4096, &vs, &why), 0);
    CHECK_INT(vs, -1);
    CHECK_INT(check_bytes(h, 0, "raw", 0, &vs, &why), 0);
}

static void
test_hash(void)
{
    struct img_hash *m, *s;
    char mh[IMG_MD5_HEX_SIZE], sh[IMG_SHA512_HEX_SIZE];
    CHECK_INT(img_hash_new(IMG_HASH_MD5, &m), 0);
    CHECK_INT(img_hash_new(IMG_HASH_SHA512, &s), 0);
    img_hash_update(m, "a", 1);
    img_hash_update(m, "bc", 2);
    img_hash_update(s, "abc", 3);
    img_hash_final_hex(m, mh, sizeof mh);
    img_hash_final_hex(s, sh, sizeof sh);
    CHECK_STR(mh, "900150983cd24fb0d6963f7d28e17f72");
    CHECK_STR(sh, "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                  "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
    img_hash_free(m);
    img_hash_free(s);
    img_hash_free(NULL);
}

/* A filesystem store in a new directory under 'base'; NULL when 'base'
 * does not exist here.  store_close() removes it. */
struct test_store_dir {
    char dir[128];
    char sub[160];
    struct img_store *st;
};

static struct img_store *
store_open(struct test_store_dir *t, const char *base)
{
    snprintf(t->dir, sizeof t->dir, "%s/img-store-test-XXXXXX", base);
    if (!mkdtemp(t->dir))
        return NULL;
    snprintf(t->sub, sizeof t->sub, "%s/store", t->dir);
    t->st = NULL;
    CHECK_INT(img_store_fs_new(t->sub, &t->st), 0);
    return t->st;
}

static void
store_close(struct test_store_dir *t)
{
    t->st->ops->free(t->st);
    CHECK_INT(rmdir(t->sub), 0);
    CHECK_INT(rmdir(t->dir), 0);
}

static void
test_store(void)
{
    struct test_store_dir td;
    struct img_store *st = store_open(&td, "/tmp");
    CHECK(st != NULL);
    const struct img_store_ops *ops = st->ops;
    const char *id = "0b9f6a4e-1111-4222-8333-444455556666";
    struct img_store_writer *w;
    CHECK_INT(ops->open_write(st, "../evil", "n1", &w), -EINVAL);
    CHECK_INT(ops->open_write(st, id, "n1", &w), 0);
    CHECK_INT(ops->write(w, "hello ", 6), 0);
    CHECK_INT(ops->write(w, "world", 5), 0);
    struct img_store_reader *r;
    uint64_t size;
    CHECK_INT(ops->open_read(st, id, &r, &size), -ENOENT);   /* Not visible before commit. */
    CHECK_INT(ops->commit(w), 0);
    CHECK_INT(ops->open_read(st, id, &r, &size), 0);
    CHECK_INT(size, 11);
    char buf[16] = { 0 };
    CHECK_INT(ops->read(r, buf, sizeof buf, 6), 5);
    CHECK_STR(buf, "world");
    ops->close_read(r);
    /* An aborted upload and one left by a "crash" leave nothing after the
     * sweep. */
    CHECK_INT(ops->open_write(st, id, "n2", &w), 0);
    CHECK_INT(ops->write(w, "x", 1), 0);
    ops->abort(w);
    CHECK_INT(ops->open_write(st, id, "n3", &w), 0);
    CHECK_INT(ops->sweep(st), 1);
    ops->abort(w);
    CHECK_INT(ops->remove(st, id), 0);
    CHECK_INT(ops->remove(st, id), 0);
    CHECK_INT(ops->open_read(st, id, &r, &size), -ENOENT);
    store_close(&td);
}

/* Aligned pieces (written without the page cache where the filesystem
 * allows it), then unaligned ones (buffered from there on), in the
 * directory 'base' (a disk filesystem and tmpfs): the file holds exactly
 * the bytes given, in order. */
static void
test_store_aligned(const char *base)
{
    struct test_store_dir td;
    struct img_store *st = store_open(&td, base);
    if (!st)
        return;                /* No such filesystem here. */
    const struct img_store_ops *ops = st->ops;
    const char *id = "0b9f6a4e-1111-4222-8333-444455556667";
    size_t big = 3u << 20;
    unsigned char *b = NULL;
    CHECK_INT(posix_memalign((void **)&b, IMG_STORE_ALIGN, big), 0);
    for (size_t i = 0; i < big; i++)
        b[i] = (unsigned char)(i * 7 + i / 4096);
    /* 1 MiB aligned, 1 MiB aligned, 100 bytes, the rest of the 3 MiB. */
    size_t cuts[] = { 0, 1u << 20, 2u << 20, (2u << 20) + 100, big };
    struct img_store_writer *w;
    CHECK_INT(ops->open_write(st, id, "n1", &w), 0);
    for (size_t i = 0; i + 1 < sizeof cuts / sizeof cuts[0]; i++)
        CHECK_INT(ops->write(w, b + cuts[i], cuts[i + 1] - cuts[i]), 0);
    CHECK_INT(ops->commit(w), 0);
    struct img_store_reader *r;
    uint64_t size;
    CHECK_INT(ops->open_read(st, id, &r, &size), 0);
    CHECK_INT(size, big);
    unsigned char *rb = malloc(big);
    CHECK(rb != NULL);
    CHECK_INT(ops->read(r, rb, big, 0), (ssize_t)big);
    CHECK(memcmp(rb, b, big) == 0);
    ops->close_read(r);
    CHECK_INT(ops->remove(st, id), 0);
    free(rb);
    free(b);
    store_close(&td);
}

/* nimbus-api's option table (api-server/options.c), declared here rather
 * than through its header: nimbus-image itself never links it. */
extern const struct conf_option api_options[];
extern const size_t api_options_count;

static void
test_options(void)
{
    /* One nimbus.conf serves both daemons: every option nimbus-api knows
     * must be known to nimbus-image too, so a row added to
     * api-server/options.c must be mirrored in img_options.c. */
    for (size_t i = 0; i < api_options_count; i++) {
        const struct conf_option *o = &api_options[i];
        bool found = false;
        for (size_t j = 0; j < img_options_count; j++)
            found |= !strcmp(img_options[j].section, o->section) &&
                     !strcmp(img_options[j].name, o->name) && img_options[j].type == o->type;
        if (!found)
            fprintf(stderr, "option [%s] %s of nimbus-api is missing from img_options.c\n",
                    o->section, o->name);
        CHECK(found);
    }

    /* Every nimbus-api section must be accepted (one file serves both). */
    struct conf *c = conf_new(img_options, img_options_count);
    char err[256];
    CHECK_INT(conf_set(c, "api", "identity_port", "5001", err, sizeof err), 0);
    CHECK_INT(conf_set(c, "identity", "password_opslimit", "1", err, sizeof err), 0);
    CHECK_INT(conf_set(c, "image", "project_quota_bytes", "1099511627776", err, sizeof err), 0);
    CHECK(conf_set(c, "image", "nosuch", "1", err, sizeof err) < 0);
    CHECK_INT(conf_int(c, "image", "port"), 9292);
    conf_free(c);
}

/* webob's choice of error body (Glance), by Accept header. */
static void
test_error_form(void)
{
    static const struct { const char *accept; enum img_error_form want; } cases[] = {
        { NULL, IMG_ERROR_TEXT },
        { "", IMG_ERROR_TEXT },
        { "application/json", IMG_ERROR_JSON },
        { "*/*", IMG_ERROR_HTML },
        { "text/html", IMG_ERROR_HTML },
        { "text/plain", IMG_ERROR_TEXT },
        { "application/json;q=0.5, text/html", IMG_ERROR_HTML },
        { "text/html;q=0.2, application/*", IMG_ERROR_JSON },
        { "text/*;q=0.9, application/json", IMG_ERROR_JSON },
        { "application/json, */*;q=0.1", IMG_ERROR_JSON },
        { "text/html;q=0, application/json;q=0", IMG_ERROR_TEXT },
        { " APPLICATION/JSON ; q=1", IMG_ERROR_JSON },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(img_error_form(cases[i].accept) == cases[i].want);
}

int
main(void)
{
    test_error_form();
    test_format();
    test_hash();
    test_store();
    test_store_aligned("/var/tmp");
    test_store_aligned("/dev/shm");
    test_options();
    return check_exit();
}
