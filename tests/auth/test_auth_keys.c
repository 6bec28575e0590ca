/* Unit tests for auth_keys: set-up, rotation, loading, permissions and the
 * public-only form. */
#include "auth_keys.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "auth.h"
#include "check.h"
#include "test_auth_util.h"

/* Joins 'dir' and 'name' into a static buffer (one at a time). */
static const char *
tpath(const char *dir, const char *name)
{
    static char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static bool
file_exists(const char *dir, const char *name)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static mode_t
file_mode(const char *dir, const char *name)
{
    char p[PATH_MAX];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (stat(p, &st) < 0)
        return (mode_t)-1;
    return st.st_mode & 07777;
}

static void
write_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
    chmod(p, mode);
}

int
main(void)
{
    char base[64], dir[128], pub[128], id0[AUTH_KEY_ID_STR_SIZE];
    char id1[AUTH_KEY_ID_STR_SIZE];
    struct auth_keyset *ks = NULL, *ks2 = NULL;

    CHECK_INT(auth_init(), 0);
    test_tmpdir(base);
    snprintf(dir, sizeof dir, "%s/keys", base);
    snprintf(pub, sizeof pub, "%s/pub", base);

    /* No directory yet. */
    CHECK_INT(auth_keys_load(dir, &ks), -ENOENT);
    CHECK(ks == NULL);

    /* Set-up creates key 0 with the right modes, and is idempotent. */
    CHECK_INT(auth_keys_setup(dir), 0);
    CHECK_INT(file_mode(base, "keys"), 0700);
    CHECK(file_exists(dir, "0.key"));
    CHECK(file_exists(dir, "0.pub"));
    CHECK_INT(file_mode(dir, "0.key"), 0600);
    CHECK_INT(auth_keys_load(dir, &ks), 0);
    CHECK_INT(auth_keyset_count(ks), 1);
    CHECK(auth_keyset_can_sign(ks));
    CHECK_INT(auth_keyset_primary_id(ks, id0), 0);
    CHECK_INT(strlen(id0), 16);
    auth_keyset_free(ks);
    ks = NULL;
    CHECK_INT(auth_keys_setup(dir), 0);
    CHECK(!file_exists(dir, "1.key"));
    /* Set-up repairs the directory's mode. */
    chmod(dir, 0755);
    CHECK_INT(auth_keys_setup(dir), 0);
    CHECK_INT(file_mode(base, "keys"), 0700);
    /* Loading twice gives the same primary id. */
    CHECK_INT(auth_keys_load(dir, &ks), 0);
    CHECK_INT(auth_keyset_primary_id(ks, id1), 0);
    CHECK_STR(id1, id0);
    auth_keyset_free(ks);
    ks = NULL;

    /* Rotation: a new primary, the old key kept, then pruned. */
    CHECK_INT(auth_keys_rotate(dir, 0), -EINVAL);
    CHECK_INT(auth_keys_rotate(dir, 3), 0);
    CHECK(file_exists(dir, "1.key"));
    CHECK_INT(auth_keys_load(dir, &ks), 0);
    CHECK_INT(auth_keyset_count(ks), 2);
    CHECK_INT(auth_keyset_primary_id(ks, id1), 0);
    CHECK(strcmp(id0, id1) != 0);
    auth_keyset_free(ks);
    ks = NULL;
    CHECK_INT(auth_keys_rotate(dir, 3), 0);
    CHECK_INT(auth_keys_rotate(dir, 3), 0);
    CHECK(!file_exists(dir, "0.key"));
    CHECK(!file_exists(dir, "0.pub"));
    CHECK(file_exists(dir, "1.key"));
    CHECK(file_exists(dir, "3.key"));
    CHECK_INT(auth_keys_load(dir, &ks), 0);
    CHECK_INT(auth_keyset_count(ks), 3);
    auth_keyset_free(ks);
    ks = NULL;
    /* No temporary files are left behind. */
    {
        DIR *d = opendir(dir);
        struct dirent *de;
        int n = 0;
        while (d && (de = readdir(d)))
            n += de->d_name[0] != '.';
        if (d)
            closedir(d);
        CHECK_INT(n, 6);
    }

    /* Public-only form: loads, verifies, cannot sign; stale files go. */
    CHECK_INT(auth_keys_load(dir, &ks), 0);
    CHECK_INT(auth_keys_export_public(ks, pub), 0);
    CHECK(file_exists(pub, "1.pub") && file_exists(pub, "3.pub"));
    CHECK(!file_exists(pub, "1.key"));
    CHECK_INT(auth_keys_load(pub, &ks2), 0);
    CHECK_INT(auth_keyset_count(ks2), 3);
    CHECK(!auth_keyset_can_sign(ks2));
    CHECK_INT(auth_keyset_primary_id(ks2, id1), -ENOKEY);
    auth_keyset_free(ks2);
    ks2 = NULL;
    write_file(pub, "0.pub", "stale\n", 0644);
    write_file(pub, "9.key", "stale\n", 0600);
    CHECK_INT(auth_keys_export_public(ks, pub), 0);
    CHECK(!file_exists(pub, "0.pub"));
    CHECK(!file_exists(pub, "9.key"));
    auth_keyset_free(ks);
    ks = NULL;

    /* A secret readable by others is refused; so are malformed files. */
    chmod(tpath(dir, "3.key"), 0644);
    CHECK_INT(auth_keys_load(dir, &ks), -EPERM);
    CHECK(ks == NULL);
    chmod(tpath(dir, "3.key"), 0600);
    CHECK_INT(auth_keys_load(dir, &ks), 0);
    auth_keyset_free(ks);
    ks = NULL;
    write_file(dir, "7.key", "not base64 at all!\n", 0600);
    CHECK_INT(auth_keys_load(dir, &ks), -EINVAL);
    write_file(dir, "7.key", "AAAA\n", 0600);
    CHECK_INT(auth_keys_load(dir, &ks), -EINVAL);
    /* A copy of a key under another number makes ids ambiguous. */
    {
        char p[PATH_MAX], text[128] = { 0 };
        snprintf(p, sizeof p, "%s/3.key", dir);
        FILE *f = fopen(p, "r");
        CHECK(f && fgets(text, sizeof text, f));
        if (f)
            fclose(f);
        write_file(dir, "7.key", text, 0600);
        CHECK_INT(auth_keys_load(dir, &ks), -EINVAL);
    }
    /* Names that are not "<n>.key" / "<n>.pub" are ignored. */
    unlink(tpath(dir, "7.key"));
    write_file(dir, "07.key", "junk", 0600);
    write_file(dir, "x.key", "junk", 0600);
    write_file(dir, "README", "junk", 0644);
    CHECK_INT(auth_keys_load(dir, &ks), 0);
    CHECK_INT(auth_keyset_count(ks), 3);
    auth_keyset_free(ks);
    auth_keyset_free(NULL);

    test_rmdir(dir);
    test_rmdir(pub);
    test_rmdir(base);
    return check_exit();
}
