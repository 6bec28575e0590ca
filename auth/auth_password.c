/* Argon2id password hashing (see auth_password.h). */
#include "auth_password.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

struct auth_password {
    unsigned long long opslimit;
    size_t memlimit;
    /* A hash of a random password, made with the parameters above, verified
     * against when the user does not exist. */
    char dummy[crypto_pwhash_STRBYTES];
};

/* The password is passed with its length because crypto_pwhash takes bytes;
 * the checks here are the same for hashing and verifying. */
static int
password_check_len(const char *password, size_t len)
{
    if (!password || len == 0 || len > AUTH_PASSWORD_MAX)
        return -EINVAL;
    return 0;
}

/* True when 's' looks like an Argon2id PHC string of sane length. */
static int
password_check_stored(const char *stored)
{
    static const char prefix[] = crypto_pwhash_argon2id_STRPREFIX;
    if (!stored)
        return -EINVAL;
    size_t n = strnlen(stored, crypto_pwhash_STRBYTES);
    if (n == crypto_pwhash_STRBYTES || strncmp(stored, prefix, sizeof prefix - 1))
        return -EINVAL;
    return 0;
}

int
auth_password_new(const struct auth_password_params *params,
                  struct auth_password **out)
{
    unsigned long long ops = crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE;
    size_t mem = crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE;
    struct auth_password *pw = NULL;
    unsigned char random_pw[32];
    int ret;

    *out = NULL;
    if (params && params->opslimit)
        ops = params->opslimit;
    if (params && params->memlimit)
        mem = params->memlimit;
    if (ops < crypto_pwhash_argon2id_OPSLIMIT_MIN
        || ops > crypto_pwhash_argon2id_OPSLIMIT_MAX
        || mem < crypto_pwhash_argon2id_MEMLIMIT_MIN
        || mem > crypto_pwhash_argon2id_MEMLIMIT_MAX)
        return -EINVAL;

    pw = calloc(1, sizeof *pw);
    if (!pw)
        return -ENOMEM;
    pw->opslimit = ops;
    pw->memlimit = mem;

    randombytes_buf(random_pw, sizeof random_pw);
    if (crypto_pwhash_str_alg(pw->dummy, (const char *)random_pw,
                              sizeof random_pw, ops, mem,
                              crypto_pwhash_ALG_ARGON2ID13) != 0) {
        ret = -ENOMEM;
        goto out;
    }
    *out = pw;
    pw = NULL;
    ret = 0;
out:
    sodium_memzero(random_pw, sizeof random_pw);
    free(pw);
    return ret;
}

void
auth_password_free(struct auth_password *pw)
{
    free(pw);
}

int
auth_password_hash(const struct auth_password *pw, const char *password,
                   size_t len, char out[AUTH_PASSWORD_HASH_SIZE])
{
    char tmp[crypto_pwhash_STRBYTES];
    _Static_assert(crypto_pwhash_STRBYTES <= AUTH_PASSWORD_HASH_SIZE,
                   "AUTH_PASSWORD_HASH_SIZE too small");
    int ret = password_check_len(password, len);
    if (ret)
        return ret;
    if (crypto_pwhash_str_alg(tmp, password, len, pw->opslimit, pw->memlimit,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return -ENOMEM;
    memcpy(out, tmp, sizeof tmp);
    return 0;
}

int
auth_password_verify(const char *stored, const char *password, size_t len)
{
    int ret = password_check_len(password, len);
    if (ret)
        return ret;
    ret = password_check_stored(stored);
    if (ret)
        return ret;
    return crypto_pwhash_str_verify(stored, password, len) == 0 ? 0 : -EACCES;
}

int
auth_password_verify_dummy(const struct auth_password *pw,
                           const char *password, size_t len)
{
    int ret = password_check_len(password, len);
    if (ret)
        return ret;
    /* The dummy hash is of a random password nobody knows, so this fails;
     * the answer is -EACCES whatever it says. */
    if (crypto_pwhash_str_verify(pw->dummy, password, len) == 0)
        return -EACCES;
    return -EACCES;
}

int
auth_password_needs_rehash(const struct auth_password *pw, const char *stored)
{
    int ret = password_check_stored(stored);
    if (ret)
        return ret;
    ret = crypto_pwhash_str_needs_rehash(stored, pw->opslimit, pw->memlimit);
    if (ret < 0)
        return -EINVAL;
    return ret ? 1 : 0;
}
