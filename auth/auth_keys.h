/* Token signing keys, kept in a directory the way Keystone keeps its
 * fernet-keys: one file per key, named "<n>.key" (the Ed25519 secret seed,
 * mode 0600) with "<n>.pub" (its public key) beside it.  The highest-numbered
 * ".key" is the primary, which signs new tokens; the others only verify
 * tokens signed before the last rotations.  A service that only verifies
 * tokens (nimbus-image) gets a directory of ".pub" files alone, written by
 * auth_keys_export_public().
 *
 * Each key has an id: the first 8 bytes of the BLAKE2b hash of its public
 * key, carried in every token so that verification finds the key at once.
 *
 * The directory functions are for start-up and operator commands
 * (nimbus-manage); they do blocking file I/O. */
#ifndef NIMBUS_AUTH_KEYS_H
#define NIMBUS_AUTH_KEYS_H

#include <stdbool.h>
#include <stddef.h>

/* Most keys a directory or a key set may hold. */
#define AUTH_KEYS_MAX 64
/* A key id as text: 16 lowercase hex digits and a NUL. */
#define AUTH_KEY_ID_STR_SIZE 17

/* A loaded set of keys.  Opaque and immutable once loaded, so one key set
 * may be shared read-only by any number of threads.  Secret keys live in
 * guarded memory that is wiped when the set is freed. */
struct auth_keyset;

/* Creates 'dir' with mode 0700 if missing (forcing 0700 if it exists) and
 * writes key 0 when the directory holds no ".key" file yet.  Returns 0 or a
 * negative errno from the file system. */
int auth_keys_setup(const char *dir) __attribute__((warn_unused_result));

/* Adds a new primary key numbered one above the highest, then deletes the
 * lowest-numbered keys until at most 'max_keys' remain (at least 2 makes
 * sense: the new primary and the previous one, whose tokens are still
 * valid).  Runs auth_keys_setup() first.  Files are written to a temporary
 * name, fsynced and linked into place, so a crash never leaves a partial key
 * and two concurrent rotations cannot both claim one number (one gets
 * -EEXIST).  Returns 0, -EINVAL when 'max_keys' is 0, or a negative errno. */
int auth_keys_rotate(const char *dir, unsigned max_keys)
    __attribute__((warn_unused_result));

/* Loads every "<n>.key" and "<n>.pub" in 'dir' (a ".pub" without its
 * ".key" is a verification-only key).  Refuses ".key" files that group or
 * others may access (-EPERM).  On success the caller owns '*out' and frees
 * it with auth_keyset_free().  Returns 0, -ENOENT when the directory holds no
 * key, -EINVAL for a malformed file, -E2BIG for more than AUTH_KEYS_MAX keys,
 * -ENOMEM, or another negative errno from the file system. */
int auth_keys_load(const char *dir, struct auth_keyset **out)
    __attribute__((warn_unused_result));

/* Writes the public form of 'ks' into 'dir' (created with mode 0755 if
 * missing): one "<n>.pub" per key, and removes any other "<n>.pub" or
 * "<n>.key" there, so the directory mirrors 'ks' for a verify-only
 * service.  Returns 0 or a negative errno. */
int auth_keys_export_public(const struct auth_keyset *ks, const char *dir)
    __attribute__((warn_unused_result));

/* Frees a key set, wiping its secrets.  Accepts NULL. */
void auth_keyset_free(struct auth_keyset *ks);

/* Number of keys in the set. */
size_t auth_keyset_count(const struct auth_keyset *ks);

/* True when the set holds a secret key, that is, can sign tokens. */
bool auth_keyset_can_sign(const struct auth_keyset *ks);

/* Writes the primary key's id as hex into 'out' (caller's buffer).
 * Returns 0, or -ENOKEY for a verify-only set. */
int auth_keyset_primary_id(const struct auth_keyset *ks,
                           char out[AUTH_KEY_ID_STR_SIZE])
    __attribute__((warn_unused_result));

#endif
