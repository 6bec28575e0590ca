/* Signing-key directories and key sets (see auth_keys.h). */
#include "auth_keys.h"
#include "auth_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

/* A key file holds base64url (no padding) of 32 bytes and a newline. */
#define KEY_FILE_MAX 128
#define KEY_NUMBER_MAX 999999999u

struct auth_key {
    uint32_t number;
    uint8_t kid[AUTH_KEY_ID_LEN];
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    /* Points into the key set's guarded secret block, or NULL for a
     * verification-only key. */
    uint8_t *sk;
};

struct auth_keyset {
    uint64_t serial;
    size_t n;
    /* Sorted by number, highest first. */
    struct auth_key keys[AUTH_KEYS_MAX];
    /* Index of the primary signer, or -1. */
    int primary;
    /* sodium_malloc'd block of n * crypto_sign_SECRETKEYBYTES, read-only
     * once loaded, wiped and freed by auth_keyset_free(). */
    uint8_t *secrets;
};

static atomic_uint_fast64_t keyset_serial_next = 1;

enum key_kind { KEY_SECRET, KEY_PUBLIC };

/* Parses "<n>.key" or "<n>.pub" (decimal, no leading zeros).  Returns 0 and
 * fills the number and kind, or -EINVAL for any other name. */
static int
keys_parse_name(const char *name, uint32_t *number, enum key_kind *kind)
{
    const char *p = name;
    unsigned long v = 0;

    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
        return -EINVAL;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > KEY_NUMBER_MAX)
            return -EINVAL;
        p++;
    }
    if (!strcmp(p, ".key"))
        *kind = KEY_SECRET;
    else if (!strcmp(p, ".pub"))
        *kind = KEY_PUBLIC;
    else
        return -EINVAL;
    *number = (uint32_t)v;
    return 0;
}

static void
keys_compute_kid(const uint8_t pk[crypto_sign_PUBLICKEYBYTES],
                 uint8_t kid[AUTH_KEY_ID_LEN])
{
    uint8_t h[crypto_generichash_BYTES_MIN];
    crypto_generichash(h, sizeof h, pk, crypto_sign_PUBLICKEYBYTES, NULL, 0);
    memcpy(kid, h, AUTH_KEY_ID_LEN);
}

/* Writes 'len' bytes to 'name' in 'dirfd' through a temporary file that is
 * fsynced and then renamed into place ('exclusive' false) or hard-linked
 * (true: fails with -EEXIST when 'name' exists).  The directory is fsynced
 * by the caller. */
static int
keys_write_atomic(int dirfd, const char *name, const void *data, size_t len,
                  mode_t mode, bool exclusive)
{
    char tmp[64];
    uint32_t r = randombytes_random();
    int fd = -1, ret;
    size_t off = 0;

    snprintf(tmp, sizeof tmp, ".tmp.%ld.%08x", (long)getpid(), r);
    fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    if (fchmod(fd, mode) < 0) {
        ret = -errno;
        goto out;
    }
    while (off < len) {
        ssize_t w = write(fd, (const char *)data + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            ret = -errno;
            goto out;
        }
        off += (size_t)w;
    }
    if (fsync(fd) < 0) {
        ret = -errno;
        goto out;
    }
    if (exclusive)
        ret = linkat(dirfd, tmp, dirfd, name, 0) < 0 ? -errno : 0;
    else
        ret = renameat(dirfd, tmp, dirfd, name) < 0 ? -errno : 0;
out:
    if (fd >= 0)
        close(fd);
    /* After a rename the temporary name is gone already; after a link or a
     * failure it must go. */
    (void)unlinkat(dirfd, tmp, 0);
    return ret;
}

/* Numbers of the ".key" files in 'dirfd', sorted ascending, into 'nums'
 * (AUTH_KEYS_MAX entries); sets '*n'.  Returns 0, -E2BIG or a negative
 * errno. */
static int
keys_scan_secret(int dirfd, uint32_t *nums, size_t *n)
{
    int fd = dup(dirfd);
    DIR *d;
    struct dirent *de;
    int ret = 0;

    *n = 0;
    if (fd < 0)
        return -errno;
    d = fdopendir(fd);
    if (!d) {
        ret = -errno;
        close(fd);
        return ret;
    }
    rewinddir(d);
    while ((de = readdir(d))) {
        uint32_t num;
        enum key_kind kind;
        if (keys_parse_name(de->d_name, &num, &kind) || kind != KEY_SECRET)
            continue;
        if (*n == AUTH_KEYS_MAX) {
            ret = -E2BIG;
            break;
        }
        size_t i = (*n)++;
        while (i > 0 && nums[i - 1] > num) {
            nums[i] = nums[i - 1];
            i--;
        }
        nums[i] = num;
    }
    closedir(d);
    return ret;
}

/* Generates key 'number' and writes its ".key" (exclusively) and ".pub". */
static int
keys_create(int dirfd, uint32_t number)
{
    uint8_t seed[crypto_sign_SEEDBYTES], pk[crypto_sign_PUBLICKEYBYTES];
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    char text[KEY_FILE_MAX], name[32];
    int ret;

    randombytes_buf(seed, sizeof seed);
    crypto_sign_seed_keypair(pk, sk, seed);

    sodium_bin2base64(text, sizeof text, seed, sizeof seed,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    strcat(text, "\n");
    snprintf(name, sizeof name, "%u.key", number);
    ret = keys_write_atomic(dirfd, name, text, strlen(text), 0600, true);
    if (ret)
        goto out;

    sodium_bin2base64(text, sizeof text, pk, sizeof pk,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    strcat(text, "\n");
    snprintf(name, sizeof name, "%u.pub", number);
    ret = keys_write_atomic(dirfd, name, text, strlen(text), 0644, false);
out:
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(text, sizeof text);
    return ret;
}

/* Creates 'dir' with 'mode' if missing and opens it. */
static int
keys_open_dir(const char *dir, mode_t mode, bool force_mode)
{
    struct stat st;
    int fd;

    if (mkdir(dir, mode) < 0 && errno != EEXIST)
        return -errno;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || (force_mode && (st.st_mode & 07777) != mode
                               && fchmod(fd, mode) < 0)) {
        int ret = -errno;
        close(fd);
        return ret;
    }
    return fd;
}

static int
keys_setup_fd(int dirfd, uint32_t *nums, size_t *n)
{
    int ret = keys_scan_secret(dirfd, nums, n);
    if (ret || *n)
        return ret;
    ret = keys_create(dirfd, 0);
    if (ret)
        return ret;
    nums[0] = 0;
    *n = 1;
    return fsync(dirfd) < 0 ? -errno : 0;
}

int
auth_keys_setup(const char *dir)
{
    uint32_t nums[AUTH_KEYS_MAX];
    size_t n;
    int fd = keys_open_dir(dir, 0700, true);
    if (fd < 0)
        return fd;
    int ret = keys_setup_fd(fd, nums, &n);
    close(fd);
    return ret;
}

int
auth_keys_rotate(const char *dir, unsigned max_keys)
{
    uint32_t nums[AUTH_KEYS_MAX];
    size_t n;
    int fd, ret;

    if (max_keys == 0 || max_keys > AUTH_KEYS_MAX)
        return -EINVAL;
    fd = keys_open_dir(dir, 0700, true);
    if (fd < 0)
        return fd;
    ret = keys_setup_fd(fd, nums, &n);
    if (ret)
        goto out;
    if (nums[n - 1] >= KEY_NUMBER_MAX) {
        ret = -EOVERFLOW;
        goto out;
    }
    ret = keys_create(fd, nums[n - 1] + 1);
    if (ret)
        goto out;
    n++;
    for (size_t i = 0; n > max_keys; i++, n--) {
        char name[32];
        snprintf(name, sizeof name, "%u.key", nums[i]);
        if (unlinkat(fd, name, 0) < 0 && errno != ENOENT) {
            ret = -errno;
            goto out;
        }
        snprintf(name, sizeof name, "%u.pub", nums[i]);
        if (unlinkat(fd, name, 0) < 0 && errno != ENOENT) {
            ret = -errno;
            goto out;
        }
    }
    ret = fsync(fd) < 0 ? -errno : 0;
out:
    close(fd);
    return ret;
}

/* Reads a key file into 'buf' (KEY_FILE_MAX bytes) and decodes its 32
 * bytes into 'out'.  For secret files, refuses group/other access. */
static int
keys_read_file(int dirfd, const char *name, bool secret,
               uint8_t out[32])
{
    char buf[KEY_FILE_MAX + 1];
    struct stat st;
    ssize_t r;
    size_t len, bin_len;
    const char *end;
    int fd, ret;

    fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        ret = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > KEY_FILE_MAX) {
        ret = -EINVAL;
        goto out;
    }
    if (secret && (st.st_mode & 077)) {
        ret = -EPERM;
        goto out;
    }
    do
        r = read(fd, buf, KEY_FILE_MAX);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        ret = -errno;
        goto out;
    }
    len = (size_t)r;
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    if (sodium_base642bin(out, 32, buf, len, NULL, &bin_len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0
        || bin_len != 32 || end != buf + len) {
        ret = -EINVAL;
        goto out;
    }
    ret = 0;
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return ret;
}

static struct auth_key *
keyset_find_number(struct auth_keyset *ks, uint32_t number)
{
    for (size_t i = 0; i < ks->n; i++)
        if (ks->keys[i].number == number)
            return &ks->keys[i];
    return NULL;
}

/* Adds an entry for 'number' in sorted position, or returns the existing
 * one; NULL when the set is full. */
static struct auth_key *
keyset_slot(struct auth_keyset *ks, uint32_t number)
{
    struct auth_key *k = keyset_find_number(ks, number);
    size_t i;

    if (k)
        return k;
    if (ks->n == AUTH_KEYS_MAX)
        return NULL;
    i = ks->n++;
    while (i > 0 && ks->keys[i - 1].number < number) {
        ks->keys[i] = ks->keys[i - 1];
        i--;
    }
    memset(&ks->keys[i], 0, sizeof ks->keys[i]);
    ks->keys[i].number = number;
    return &ks->keys[i];
}

/* Adds a slot for every key number named in 'dirfd'; the contents are read
 * afterwards, once the secret block is allocated. */
static int
keys_load_dir(int dirfd, struct auth_keyset *ks)
{
    int fd = dup(dirfd), ret = 0;
    DIR *d;
    struct dirent *de;

    if (fd < 0)
        return -errno;
    d = fdopendir(fd);
    if (!d) {
        ret = -errno;
        close(fd);
        return ret;
    }
    while ((de = readdir(d))) {
        uint32_t num;
        enum key_kind kind;
        if (keys_parse_name(de->d_name, &num, &kind))
            continue;
        if (!keyset_slot(ks, num)) {
            ret = -E2BIG;
            break;
        }
    }
    closedir(d);
    return ret;
}

int
auth_keys_load(const char *dir, struct auth_keyset **out)
{
    struct auth_keyset *ks = NULL;
    bool has_secret[AUTH_KEYS_MAX] = { false };
    size_t n_secret = 0, si = 0;
    int fd, ret;

    *out = NULL;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ks = calloc(1, sizeof *ks);
    if (!ks) {
        ret = -ENOMEM;
        goto out;
    }
    ks->primary = -1;
    ret = keys_load_dir(fd, ks);
    if (ret)
        goto out;
    if (ks->n == 0) {
        ret = -ENOENT;
        goto out;
    }
    for (size_t i = 0; i < ks->n; i++) {
        char name[32];
        snprintf(name, sizeof name, "%u.key", ks->keys[i].number);
        has_secret[i] = faccessat(fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
        n_secret += has_secret[i];
    }
    if (n_secret) {
        ks->secrets = sodium_malloc(n_secret * crypto_sign_SECRETKEYBYTES);
        if (!ks->secrets) {
            ret = -ENOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < ks->n; i++) {
        struct auth_key *k = &ks->keys[i];
        char name[32];
        uint8_t raw[32];

        if (has_secret[i]) {
            snprintf(name, sizeof name, "%u.key", k->number);
            ret = keys_read_file(fd, name, true, raw);
            if (ret)
                goto out;
            k->sk = ks->secrets + si++ * crypto_sign_SECRETKEYBYTES;
            crypto_sign_seed_keypair(k->pk, k->sk, raw);
            sodium_memzero(raw, sizeof raw);
            if (ks->primary < 0)
                ks->primary = (int)i;
        } else {
            snprintf(name, sizeof name, "%u.pub", k->number);
            ret = keys_read_file(fd, name, false, raw);
            if (ret)
                goto out;
            memcpy(k->pk, raw, sizeof k->pk);
        }
        keys_compute_kid(k->pk, k->kid);
    }
    /* Two files holding one key would make key ids ambiguous. */
    for (size_t i = 0; i < ks->n; i++)
        for (size_t j = i + 1; j < ks->n; j++)
            if (!memcmp(ks->keys[i].kid, ks->keys[j].kid, AUTH_KEY_ID_LEN)) {
                ret = -EINVAL;
                goto out;
            }
    if (ks->secrets)
        sodium_mprotect_readonly(ks->secrets);
    ks->serial = atomic_fetch_add(&keyset_serial_next, 1);
    *out = ks;
    ks = NULL;
    ret = 0;
out:
    auth_keyset_free(ks);
    close(fd);
    return ret;
}

int
auth_keys_export_public(const struct auth_keyset *ks, const char *dir)
{
    int fd = keys_open_dir(dir, 0755, false), ret = 0;
    DIR *d = NULL;
    struct dirent *de;

    if (fd < 0)
        return fd;
    for (size_t i = 0; i < ks->n; i++) {
        char text[KEY_FILE_MAX], name[32];
        sodium_bin2base64(text, sizeof text, ks->keys[i].pk,
                          sizeof ks->keys[i].pk,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        strcat(text, "\n");
        snprintf(name, sizeof name, "%u.pub", ks->keys[i].number);
        ret = keys_write_atomic(fd, name, text, strlen(text), 0644, false);
        if (ret)
            goto out;
    }
    int fd2 = dup(fd);
    if (fd2 < 0) {
        ret = -errno;
        goto out;
    }
    d = fdopendir(fd2);
    if (!d) {
        ret = -errno;
        close(fd2);
        goto out;
    }
    while ((de = readdir(d))) {
        uint32_t num;
        enum key_kind kind;
        bool keep = false;
        if (keys_parse_name(de->d_name, &num, &kind))
            continue;
        for (size_t i = 0; i < ks->n; i++)
            keep |= kind == KEY_PUBLIC && ks->keys[i].number == num;
        if (!keep && unlinkat(fd, de->d_name, 0) < 0 && errno != ENOENT) {
            ret = -errno;
            goto out;
        }
    }
    ret = fsync(fd) < 0 ? -errno : 0;
out:
    if (d)
        closedir(d);
    close(fd);
    return ret;
}

void
auth_keyset_free(struct auth_keyset *ks)
{
    if (!ks)
        return;
    /* sodium_free() wipes the block before unmapping it. */
    sodium_free(ks->secrets);
    sodium_memzero(ks, sizeof *ks);
    free(ks);
}

size_t
auth_keyset_count(const struct auth_keyset *ks)
{
    return ks->n;
}

bool
auth_keyset_can_sign(const struct auth_keyset *ks)
{
    return ks->primary >= 0;
}

int
auth_keyset_primary_id(const struct auth_keyset *ks,
                       char out[AUTH_KEY_ID_STR_SIZE])
{
    if (ks->primary < 0)
        return -ENOKEY;
    sodium_bin2hex(out, AUTH_KEY_ID_STR_SIZE, ks->keys[ks->primary].kid,
                   AUTH_KEY_ID_LEN);
    return 0;
}

const uint8_t *
auth_keyset_find_pk(const struct auth_keyset *ks,
                    const uint8_t kid[AUTH_KEY_ID_LEN])
{
    for (size_t i = 0; i < ks->n; i++)
        if (!memcmp(ks->keys[i].kid, kid, AUTH_KEY_ID_LEN))
            return ks->keys[i].pk;
    return NULL;
}

int
auth_keyset_signer(const struct auth_keyset *ks, const uint8_t **kid,
                   const uint8_t **sk)
{
    if (ks->primary < 0)
        return -ENOKEY;
    *kid = ks->keys[ks->primary].kid;
    *sk = ks->keys[ks->primary].sk;
    return 0;
}

uint64_t
auth_keyset_serial(const struct auth_keyset *ks)
{
    return ks->serial;
}
