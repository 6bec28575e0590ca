/* Token authentication for nimbus-image: the same signed tokens nimbus-api
 * issues, verified with the public keys of [identity] key_dir, and the same
 * revocation list, loaded from the revocation_events table at start-up and
 * after every database reconnect and kept current by NOTIFY on the channel
 * 'nimbus_revocation' (payload "kind value epoch").  Until the list is
 * loaded no token is trusted (callers answer 503). */
#ifndef NIMBUS_IMG_AUTH_H
#define NIMBUS_IMG_AUTH_H

#include <stdbool.h>
#include <uv.h>

#include "db.h"

struct auth_token;
struct img_auth;

/* Loads the keys from 'key_dir' and subscribes to revocations on 'db'.
 * 'token_ttl' (seconds) bounds how long revocation entries are kept.  The
 * caller owns '*out' (img_auth_stop(), then img_auth_free()).  Returns 0 or
 * a negative errno; 'why' then says what failed (static string). */
int img_auth_new(uv_loop_t *loop, db_pool *db, const char *key_dir,
                 long token_ttl, struct img_auth **out, const char **why)
    __attribute__((warn_unused_result));

/* Verifies the X-Auth-Token text 'text' (may be NULL) and fills 'tok'.
 * Returns 0; -EAGAIN while the revocation list is not loaded yet; -ENOENT
 * without a token; -EKEYREVOKED, -EKEYEXPIRED, -EKEYREJECTED or -EINVAL for
 * a token that must be refused (401). */
int img_auth_check(struct img_auth *a, const char *text, struct auth_token *tok)
    __attribute__((warn_unused_result));

/* True once the revocation list has been loaded. */
bool img_auth_ready(const struct img_auth *a);

/* Closes the timer (before the loop ends).  Accepts NULL. */
void img_auth_stop(struct img_auth *a);
/* Frees everything.  Accepts NULL. */
void img_auth_free(struct img_auth *a);

#endif
