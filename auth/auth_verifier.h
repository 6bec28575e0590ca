/* Token authentication for every API daemon (nimbus-api, nimbus-image):
 * the signed tokens nimbus-api issues, verified with the public keys of [identity] key_dir, and the same
 * revocation list, loaded from the revocation_events table at start-up and
 * after every database reconnect and kept current by NOTIFY on the channel
 * 'nimbus_revocation' (payload "kind value epoch").  Until the list is
 * loaded no token is trusted (callers answer 503). */
#ifndef NIMBUS_AUTH_VERIFIER_H
#define NIMBUS_AUTH_VERIFIER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "db.h"

struct auth_token;
struct auth_keyset;
struct auth_verifier;

/* Loads the keys from 'key_dir' and subscribes to revocations on 'db'.
 * 'token_ttl' (seconds) bounds how long revocation entries are kept.  The
 * caller owns '*out' (auth_verifier_stop(), then auth_verifier_free()).
 * Returns 0 or a negative errno; 'why' then says what failed (static string). */
int auth_verifier_new(uv_loop_t *loop, db_pool *db, const char *key_dir,
                      long token_ttl, struct auth_verifier **out, const char **why)
    __attribute__((warn_unused_result));

/* Verifies the X-Auth-Token text 'text' (may be NULL) and fills 'tok'.
 * Returns 0; -EAGAIN while the revocation list is not loaded yet; -ENOENT
 * without a token; -EKEYREVOKED, -EKEYEXPIRED, -EKEYREJECTED or -EINVAL for
 * a token that must be refused (401). */
int auth_verifier_check(struct auth_verifier *a, const char *text,
                        struct auth_token *tok)
    __attribute__((warn_unused_result));

/* True once the revocation list has been loaded. */
bool auth_verifier_ready(const struct auth_verifier *a);

/* Closes the timer (before the loop ends).  Accepts NULL. */
/* Records a revocation in this process at once (the database write and
 * its NOTIFY reach the others); 'kind' is "audit", "user" or "project".
 * Returns 0 or a negative errno. */
int auth_verifier_revoke(struct auth_verifier *a, const char *kind,
                         const char *value, int64_t revoked_at)
    __attribute__((warn_unused_result));

/* True when 'tok' matches a known revocation. */
bool auth_verifier_is_revoked(const struct auth_verifier *a,
                              const struct auth_token *tok);

/* The loaded key set (to sign with, in nimbus-api); owned by 'a'. */
const struct auth_keyset *auth_verifier_keys(const struct auth_verifier *a);

/* Loads the keys again (SIGHUP after a rotation); on failure the old keys
 * stay in use. */
int auth_verifier_reload_keys(struct auth_verifier *a)
    __attribute__((warn_unused_result));

void auth_verifier_stop(struct auth_verifier *a);
/* Frees everything.  Accepts NULL. */
void auth_verifier_free(struct auth_verifier *a);

#endif
