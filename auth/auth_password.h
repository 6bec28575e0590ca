/* Password hashing with Argon2id, stored in the PHC string form
 * "$argon2id$v=19$m=65536,t=2,p=1$salt$hash" that carries its own parameters,
 * so old hashes keep verifying after the parameters change and
 * auth_password_needs_rehash() says when to re-hash at the next login.
 *
 * Hashing is deliberately slow (tens of milliseconds, 64 MiB with the
 * defaults): callers on an event loop run these functions on a worker
 * thread.  Every function here is thread-safe; a struct auth_password is
 * read-only after creation and may be shared between threads. */
#ifndef NIMBUS_AUTH_PASSWORD_H
#define NIMBUS_AUTH_PASSWORD_H

#include <stddef.h>

/* Longest password accepted, in bytes.  Longer ones are refused before any
 * hashing, so a client cannot make the server hash megabytes. */
#define AUTH_PASSWORD_MAX 4096
/* Size of the buffer that receives an encoded hash, NUL included. */
#define AUTH_PASSWORD_HASH_SIZE 128

/* Argon2id cost parameters.  Zero fields mean libsodium's INTERACTIVE
 * values (opslimit 2, memlimit 64 MiB). */
struct auth_password_params {
    unsigned long long opslimit;
    size_t memlimit;
};

/* A hasher: the parameters for new hashes plus a dummy hash made with them,
 * used by auth_password_verify_dummy().  Opaque. */
struct auth_password;

/* Creates a hasher with 'params' (NULL for the defaults).  It computes one
 * hash, so it takes as long as a login.  The caller owns '*out' and frees it
 * with auth_password_free().  Returns 0, -EINVAL for parameters outside
 * libsodium's limits, or -ENOMEM. */
int auth_password_new(const struct auth_password_params *params,
                      struct auth_password **out)
    __attribute__((warn_unused_result));

/* Frees a hasher.  Accepts NULL. */
void auth_password_free(struct auth_password *pw);

/* Hashes 'password' ('len' bytes, need not be NUL-terminated) with a fresh
 * random salt into 'out' (AUTH_PASSWORD_HASH_SIZE bytes, caller's buffer).
 * Returns 0, -EINVAL for an empty password or one longer than
 * AUTH_PASSWORD_MAX, or -ENOMEM. */
int auth_password_hash(const struct auth_password *pw, const char *password,
                       size_t len, char out[AUTH_PASSWORD_HASH_SIZE])
    __attribute__((warn_unused_result));

/* Checks 'password' against the encoded hash 'stored' (NUL-terminated, as
 * read from the database).  Returns 0 when it matches, -EACCES when it does
 * not (or the hash could not be computed), -EINVAL for an empty or oversized
 * password or a 'stored' string that is not an Argon2id hash. */
int auth_password_verify(const char *stored, const char *password, size_t len)
    __attribute__((warn_unused_result));

/* Spends the same time as auth_password_verify() against a hash made with
 * this hasher's parameters, then returns -EACCES (or -EINVAL for an empty or
 * oversized password, as auth_password_verify() would).  Call it when the
 * user does not exist, so that timing does not tell whether a user name
 * exists. */
int auth_password_verify_dummy(const struct auth_password *pw,
                               const char *password, size_t len)
    __attribute__((warn_unused_result));

/* Returns 1 when 'stored' was made with parameters other than this hasher's
 * (re-hash the password, which the caller knows at login, and store the new
 * hash), 0 when it is current, -EINVAL when it is not an Argon2id hash. */
int auth_password_needs_rehash(const struct auth_password *pw,
                               const char *stored)
    __attribute__((warn_unused_result));

#endif
