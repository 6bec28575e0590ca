#include "disk_move.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "proc.h"
#include "strbuf.h"

#define SECRET_HEADER "X-Nimbus-Migration-Secret"
#define SHA_HEADER "X-Nimbus-Disk-SHA256"

static bool
hex64(const char *s)
{
    return s && strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

static void
to_hex(const unsigned char *md, unsigned n, char *out)
{
    for (unsigned i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static int
sha256_hex(const void *buf, size_t n, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!EVP_Digest(buf, n, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return -EIO;
    to_hex(md, mdlen, out);
    return 0;
}

/* ---- Source. */

int
dmove_open(const char *instances_dir, const char *uuid, const char *secret, int *fd,
           unsigned long long *size, char sha256_hex_out[65])
{
    *fd = -1;
    if (strlen(uuid) != 36 || strspn(uuid, "0123456789abcdef-") != 36 || !hex64(secret))
        return -EINVAL;
    char path[PATH_MAX], want[65] = "", got[65];
    bfmt(path, sizeof path, "%s/%s/" STORAGE_EXPORT_FILE, instances_dir, uuid);
    int mfd = open(path, O_RDONLY | O_CLOEXEC);
    if (mfd < 0)
        return -EAGAIN;
    ssize_t n = read(mfd, want, 64);
    close(mfd);
    if (n != 64 || sha256_hex(secret, 64, got))
        return -EAGAIN;
    if (CRYPTO_memcmp(want, got, 64))
        return -EACCES;
    bfmt(path, sizeof path, "%s/%s/disk.qcow2", instances_dir, uuid);
    int dfd = open(path, O_RDONLY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(ctx);
        close(dfd);
        return -ENOMEM;
    }
    static __thread unsigned char buf[1 << 16];
    unsigned long long total = 0;
    ssize_t r;
    while ((r = read(dfd, buf, sizeof buf)) > 0) {
        EVP_DigestUpdate(ctx, buf, (size_t)r);
        total += (unsigned long long)r;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    if (r < 0 || lseek(dfd, 0, SEEK_SET) != 0) {
        int e = -errno;
        close(dfd);
        return e ? e : -EIO;
    }
    to_hex(md, mdlen, sha256_hex_out);
    *size = total;
    *fd = dfd;
    return 0;
}

/* ---- Destination. */

struct pull {
    int fd;
    unsigned long long written, expect;
    bool have_len;
    char sha[65];
    EVP_MD_CTX *ctx;
    int error;
};

static size_t
on_header(char *buf, size_t size, size_t n, void *ud)
{
    struct pull *p = ud;
    size_t len = size * n;
    char line[256];
    if (len >= sizeof line)
        return len;
    memcpy(line, buf, len);
    line[len] = 0;
    line[strcspn(line, "\r\n")] = 0;
    char *v = strchr(line, ':');
    if (!v)
        return len;
    *v++ = 0;
    while (*v == ' ')
        v++;
    if (!strcasecmp(line, SHA_HEADER) && hex64(v))
        bfmt(p->sha, sizeof p->sha, "%s", v);
    else if (!strcasecmp(line, "Content-Length")) {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(v, &end, 10);
        if (!errno && end != v && !*end) {
            p->expect = x;
            p->have_len = true;
        }
    }
    return len;
}

static size_t
on_body(char *buf, size_t size, size_t n, void *ud)
{
    struct pull *p = ud;
    size_t len = size * n;
    if (p->written + len > DMOVE_MAX_DISK || (p->have_len && p->written + len > p->expect)) {
        p->error = EFBIG;
        return 0;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(p->fd, buf + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            p->error = errno;
            return 0;
        }
        off += (size_t)w;
    }
    EVP_DigestUpdate(p->ctx, buf, len);
    p->written += len;
    return len;
}

/* GETs the overlay into 'dest' (created afresh) and checks it. */
static int
pull(const struct inst_desired *d, const char *dest, char *err, size_t errlen)
{
    struct pull p = { .fd = -1 };
    int r = -EIO;
    CURL *c = NULL;
    struct curl_slist *hdr = NULL;
    char auth[128];
    p.fd = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (p.fd < 0) {
        r = -errno;
        bfmt(err, errlen, "%s: %s", dest, strerror(-r));
        return r;
    }
    bfmt(auth, sizeof auth, SECRET_HEADER ": %s", d->migration_secret);
    if (!(p.ctx = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(p.ctx, EVP_sha256(), NULL) ||
        !(c = curl_easy_init()) || !(hdr = curl_slist_append(NULL, auth))) {
        r = -ENOMEM;
        bfmt(err, errlen, "out of memory");
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, d->migration_url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &p);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &p);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cr = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (cr == CURLE_COULDNT_CONNECT || status == 409 || status == 503) {
        /* The source is not ready yet (still stopping the guest) or down
         * for a moment: not a failure. */
        r = -EAGAIN;
        bfmt(err, errlen, "the source of the move is not ready (%s)",
             status ? "HTTP 409" : curl_easy_strerror(cr));
        goto out;
    }
    if (cr != CURLE_OK || status != 200) {
        r = p.error ? -p.error : -EIO;
        bfmt(err, errlen, "pulling the disk from the source: %s",
             cr != CURLE_OK ? curl_easy_strerror(cr) : status == 403 ? "secret refused (HTTP 403)"
                                                                      : "unexpected HTTP status");
        goto out;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    char got[65];
    EVP_DigestFinal_ex(p.ctx, md, &mdlen);
    to_hex(md, mdlen, got);
    if (!p.have_len || p.written != p.expect || !p.sha[0] || strcmp(got, p.sha)) {
        r = -EIO;
        bfmt(err, errlen, "the disk pulled from the source does not check out (%llu of %llu "
             "bytes, sha256 %s)", p.written, p.expect,
             p.sha[0] && !strcmp(got, p.sha) ? "matches" : "differs");
        goto out;
    }
    if (fsync(p.fd) < 0) {
        r = -errno;
        bfmt(err, errlen, "%s: %s", dest, strerror(-r));
        goto out;
    }
    r = 0;
out:
    explicit_bzero(auth, sizeof auth);
    curl_slist_free_all(hdr);
    if (c)
        curl_easy_cleanup(c);
    EVP_MD_CTX_free(p.ctx);
    close(p.fd);
    return r;
}

int
dmove_import(void *ctx, const struct inst_desired *d, char *err, size_t errlen)
{
    struct storage *s = ctx;
    char dir[PATH_MAX], disk[PATH_MAX + 16], part[PATH_MAX + 32];
    char base[PATH_MAX], fmt[8];
    int r;
    if (strlen(d->uuid) != 36 || strspn(d->uuid, "0123456789abcdef-") != 36) {
        bfmt(err, errlen, "invalid uuid '%s'", d->uuid);
        return -EINVAL;
    }
    storage_inst_dir(s, d->uuid, dir);
    bfmt(disk, sizeof disk, "%s/disk.qcow2", dir);
    bfmt(part, sizeof part, "%s/disk.qcow2.part", dir);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        r = -errno;
        bfmt(err, errlen, "%s: %s", dir, strerror(-r));
        return r;
    }
    /* This node's copy of the base, as for a create. */
    if ((r = storage_base(s, d, base, fmt, err, errlen)))
        return r;
    struct stat st;
    if (stat(disk, &st) < 0) {
        /* Not here yet (a half-pulled .part of an earlier attempt is
         * overwritten): pull, check, put on this node's base, then give it
         * its final name. */
        if ((r = pull(d, part, err, errlen))) {
            unlink(part);
            return r;
        }
        const char *rb[] = { "qemu-img", "rebase", "-u", "-f", "qcow2", "-b", base, "-F", fmt,
                             part, NULL };
        if ((r = proc_run(rb, NULL, 0, err, errlen))) {
            unlink(part);
            return r;
        }
        if (rename(part, disk) < 0) {
            r = -errno;
            bfmt(err, errlen, "%s: %s", disk, strerror(-r));
            unlink(part);
            return r;
        }
    }
    return 0;
}
