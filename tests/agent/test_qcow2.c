/* qcow2.c: overlays written without qemu-img are byte for byte what
 * `qemu-img create -f qcow2 -b BASE -F FMT` writes (raw and qcow2 bases,
 * sizes of one and many L2 tables, a size not a multiple of 512), pass
 * `qemu-img check`, read through to their base (`qemu-img compare`); the
 * header reader gives the backing file and virtual size qemu-img info
 * gives; bad input is refused and leaves no file.  Exits 77 without
 * qemu-img. */
#include "qcow2.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "strbuf.h"
#include "../check.h"

static char root[] = "/tmp/nimbus-qcow2-XXXXXX";

static int
sh(const char *cmd)
{
    int r = system(cmd);
    return r == -1 ? -1 : WEXITSTATUS(r);
}

/* Our overlay and qemu-img's of the same base and size: identical bytes. */
static void
same_as_qemu_img(const char *base, const char *fmt, uint64_t size, const char *what)
{
    char ours[PATH_MAX], theirs[PATH_MAX], cmd[4 * PATH_MAX], err[256];
    bfmt(ours, sizeof ours, "%s/ours-%s.qcow2", root, what);
    bfmt(theirs, sizeof theirs, "%s/theirs-%s.qcow2", root, what);
    CHECK_INT(qcow2_create_overlay(ours, base, fmt, size, err, sizeof err), 0);
    bfmt(cmd, sizeof cmd, "qemu-img create -q -f qcow2 -b %s -F %s %s %llu", base, fmt, theirs,
         (unsigned long long)size);
    CHECK_INT(sh(cmd), 0);
    bfmt(cmd, sizeof cmd, "cmp %s %s", ours, theirs);
    if (sh(cmd) != 0) {
        fprintf(stderr, "%s: differs from qemu-img's\n", what);
        check_failures++;
    }
    bfmt(cmd, sizeof cmd, "qemu-img check -q %s", ours);
    CHECK_INT(sh(cmd), 0);
    bfmt(cmd, sizeof cmd, "qemu-img compare -q %s %s", base, ours);
    CHECK_INT(sh(cmd), 0);
    char backing[PATH_MAX];
    uint64_t vsize = 0;
    CHECK_INT(qcow2_info(ours, backing, sizeof backing, &vsize), 0);
    CHECK_STR(backing, base);
    CHECK_INT(vsize, (size + 511) & ~(uint64_t)511);
}

int
main(void)
{
    if (sh("qemu-img --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "qemu-img not found: skipped\n");
        return 77;
    }
    if (!mkdtemp(root))
        return 1;
    char raw[PATH_MAX], q[PATH_MAX], cmd[2 * PATH_MAX], err[256];
    bfmt(raw, sizeof raw, "%s/base.raw", root);
    bfmt(q, sizeof q, "%s/base.qcow2", root);
    /* A raw base with some data, and a qcow2 base with data written. */
    bfmt(cmd, sizeof cmd, "head -c 3000000 /dev/urandom > %s && truncate -s 100M %s", raw, raw);
    CHECK_INT(sh(cmd), 0);
    bfmt(cmd, sizeof cmd, "qemu-img convert -q -f raw -O qcow2 %s %s", raw, q);
    CHECK_INT(sh(cmd), 0);

    uint64_t v = 0;
    CHECK_INT(qcow2_virtual_size(raw, "raw", &v), 0);
    CHECK_INT(v, 100 << 20);
    CHECK_INT(qcow2_virtual_size(q, "qcow2", &v), 0);
    CHECK_INT(v, 100 << 20);
    CHECK_INT(qcow2_virtual_size(raw, "qcow2", &v), -EINVAL);   /* Not a qcow2. */
    CHECK_INT(qcow2_virtual_size(raw, "vmdk", &v), -EINVAL);
    char b[PATH_MAX];
    CHECK_INT(qcow2_info(q, b, sizeof b, &v), 0);
    CHECK_STR(b, "");

    same_as_qemu_img(raw, "raw", 1ull << 30, "raw-1g");
    same_as_qemu_img(raw, "raw", 100 << 20, "raw-base-size");
    same_as_qemu_img(q, "qcow2", 20ull << 30, "qcow2-20g");
    same_as_qemu_img(q, "qcow2", 104858112, "qcow2-odd");
    same_as_qemu_img(q, "qcow2", (1ull << 30) + 1000, "qcow2-unaligned");
    same_as_qemu_img(raw, "raw", 8000ull << 30, "raw-8000g");   /* An L1 table of two clusters. */

    /* Refusals: an existing file, no backing file, a size beyond one refcount block. */
    char o[PATH_MAX];
    bfmt(o, sizeof o, "%s/ours-raw-1g.qcow2", root);
    CHECK_INT(qcow2_create_overlay(o, raw, "raw", 1 << 30, err, sizeof err), -EEXIST);
    bfmt(o, sizeof o, "%s/bad.qcow2", root);
    CHECK_INT(qcow2_create_overlay(o, "", "raw", 1 << 30, err, sizeof err), -EINVAL);
    CHECK(access(o, F_OK) != 0);
    CHECK_INT(qcow2_create_overlay(o, raw, "raw", 1ull << 62, err, sizeof err), -EFBIG);
    CHECK(access(o, F_OK) != 0);

    bfmt(cmd, sizeof cmd, "rm -rf %s", root);
    sh(cmd);
    return check_exit();
}
