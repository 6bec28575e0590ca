/* Fuzz target for the token decoder: the whole path (size limit, base64url,
 * key lookup, signature, cache) on the input as a token string, and the
 * payload parser on the input as raw payload bytes (which a fuzzer could
 * never reach through a valid signature).
 *
 * Built with -DNIMBUS_LIBFUZZER and -fsanitize=fuzzer it is a libFuzzer
 * target; otherwise main() replays the files and directories named on the
 * command line (the corpus, as the 'fuzz-regression' test does), and
 * "--generate DIR" writes seed inputs signed with the fixed fuzzing key. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "auth_internal.h"
#include "auth_keys.h"
#include "auth_token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Corpus tokens are valid at this time forever. */
#define FUZZ_NOW 1767225600LL
/* A fixed Ed25519 seed (32 bytes of 0x42), so that corpus tokens verify. */
#define FUZZ_SEED "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI\n"

static struct auth_keyset *fuzz_ks;
static struct auth_token_cache *fuzz_cache;

static void
fuzz_init(void)
{
    char dir[] = "/tmp/nimbus-fuzz-token-XXXXXX", path[PATH_MAX];
    FILE *f;

    if (fuzz_ks)
        return;
    if (auth_init() || !mkdtemp(dir))
        abort();
    snprintf(path, sizeof path, "%s/0.key", dir);
    f = fopen(path, "w");
    if (!f)
        abort();
    fputs(FUZZ_SEED, f);
    fclose(f);
    chmod(path, 0600);
    if (auth_keys_load(dir, &fuzz_ks) || auth_token_cache_new(64, &fuzz_cache))
        abort();
    unlink(path);
    rmdir(dir);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct auth_token t, t2;
    char s[AUTH_TOKEN_STR_SIZE];
    int r;

    fuzz_init();
    r = auth_token_decode(fuzz_ks, fuzz_cache, (const char *)data, size,
                          FUZZ_NOW, &t);
    if (r != 0 && r != -EINVAL && r != -EKEYREJECTED && r != -EKEYEXPIRED)
        abort();
    if (auth_token_payload_parse(data, size, &t) == 0) {
        /* Whatever parses re-encodes and round-trips. */
        uint8_t buf[4096];
        size_t len;
        if (auth_token_payload_encode(&t, data + 1, buf, sizeof buf, &len))
            abort();
        if (auth_token_payload_parse(buf, len, &t2))
            abort();
        if (auth_token_encode(fuzz_ks, &t, s, sizeof s) == 0
            && auth_token_decode(fuzz_ks, NULL, s, strlen(s), t.issued_at, &t2))
            abort();
    }
    return 0;
}

#ifndef NIMBUS_LIBFUZZER
static int
replay_file(const char *path)
{
    static uint8_t buf[1 << 16];
    FILE *f = fopen(path, "rb");
    size_t n;

    if (!f) {
        perror(path);
        return -1;
    }
    n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    return 0;
}

static int
replay(const char *path, int *count)
{
    struct stat st;
    DIR *d;
    struct dirent *de;
    char p[PATH_MAX];
    int ret = 0;

    if (stat(path, &st) < 0) {
        perror(path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        (*count)++;
        return replay_file(path);
    }
    d = opendir(path);
    if (!d)
        return -1;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", path, de->d_name);
        ret |= replay(p, count);
    }
    closedir(d);
    return ret;
}

static void
write_seed(const char *dir, const char *name, const void *data, size_t len)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data, 1, len, f) != len)
        abort();
    fclose(f);
}

static void
generate(const char *dir)
{
    static const struct {
        const char *name;
        enum auth_scope scope;
        const char *project, *domain, *role;
        int parent;
    } seeds[] = {
        { "project", AUTH_SCOPE_PROJECT, "8f2a6c1e0b9d4e7f8a1b2c3d4e5f6a7b", NULL, "member", 1 },
        { "project-uuid", AUTH_SCOPE_PROJECT, "123e4567-e89b-42d3-a456-426614174000", NULL, "admin", 0 },
        { "domain", AUTH_SCOPE_DOMAIN, NULL, "default", "reader", 0 },
        { "unscoped", AUTH_SCOPE_UNSCOPED, NULL, NULL, NULL, 0 },
    };
    uint8_t kid[AUTH_KEY_ID_LEN] = { 0 };

    fuzz_init();
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        struct auth_token t;
        char s[AUTH_TOKEN_STR_SIZE], name[64];
        uint8_t buf[4096];
        size_t len;

        memset(&t, 0, sizeof t);
        strcpy(t.user_id, "5f3c1a0b9e2d4c7fa1b2c3d4e5f60718");
        strcpy(t.user_domain_id, "default");
        strcpy(t.user_name, "alice");
        t.scope = seeds[i].scope;
        if (seeds[i].project) {
            strcpy(t.project_id, seeds[i].project);
            strcpy(t.project_domain_id, "default");
        }
        if (seeds[i].domain)
            strcpy(t.domain_id, seeds[i].domain);
        if (seeds[i].role) {
            t.n_roles = 1;
            strcpy(t.roles[0].id, "0a1b2c3d4e5f60718293a4b5c6d7e8f9");
            strcpy(t.roles[0].name, seeds[i].role);
        }
        t.methods = AUTH_METHOD_PASSWORD;
        t.issued_at = FUZZ_NOW - 60;
        t.expires_at = FUZZ_NOW + 3600;
        auth_token_audit_id_new(t.audit_id);
        if (seeds[i].parent)
            auth_token_audit_id_new(t.parent_audit_id);
        if (auth_token_encode(fuzz_ks, &t, s, sizeof s)
            || auth_token_payload_encode(&t, kid, buf, sizeof buf, &len))
            abort();
        snprintf(name, sizeof name, "token-%s", seeds[i].name);
        write_seed(dir, name, s, strlen(s));
        snprintf(name, sizeof name, "payload-%s", seeds[i].name);
        write_seed(dir, name, buf, len);
    }
    write_seed(dir, "garbage-empty", "", 0);
    write_seed(dir, "garbage-fernet", "gAAAAABkAAAA", 12);
}

int
main(int argc, char **argv)
{
    int count = 0, ret = 0;

    if (argc == 3 && !strcmp(argv[1], "--generate")) {
        generate(argv[2]);
        return 0;
    }
    for (int i = 1; i < argc; i++)
        ret |= replay(argv[i], &count);
    fprintf(stderr, "replayed %d input(s)\n", count);
    auth_token_cache_free(fuzz_cache);
    auth_keyset_free(fuzz_ks);
    return ret ? 1 : 0;
}
#endif
