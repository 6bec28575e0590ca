/* Failed-login rate limiting, per user and per source address.
 *
 * Each key (a user, an address) has a window that opens at its first
 * failure and lasts 'window_seconds'; once it has 'limit' failures, further
 * attempts are refused until the window closes, after which the count
 * starts again.  The defaults: 5 failures per user and 20 per address
 * within 60 seconds.
 *
 * Memory is fixed at creation: a hash table of 'slots' entries (24 bytes
 * each).  When the few slots a key may use are all busy, the entry whose
 * window opened first is evicted, so a flood of distinct keys can make the
 * limiter forget some counts; the per-address limit bounds what one source
 * can do.  Keys are hashed with SipHash under a random key, so a client
 * cannot aim its keys at one slot.
 *
 * Time is passed in (unix or monotonic seconds, consistently); there is no
 * I/O.  Not thread-safe: one limiter per event loop. */
#ifndef NIMBUS_AUTH_RATELIMIT_H
#define NIMBUS_AUTH_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

struct auth_ratelimit_config {
    unsigned user_limit;      /* Failures per user per window (5). */
    unsigned addr_limit;      /* Failures per address per window (20). */
    unsigned window_seconds;  /* Window length (60). */
    size_t slots;             /* Table size, rounded up to a power of two
                               * (16384). */
};

/* Opaque. */
struct auth_ratelimit;

/* Creates a limiter; zero fields in 'cfg' (or a NULL 'cfg') take the
 * defaults above.  The caller owns '*out' and frees it with
 * auth_ratelimit_free().  Returns 0, -EINVAL for more than 2^24 slots, or
 * -ENOMEM. */
int auth_ratelimit_new(const struct auth_ratelimit_config *cfg,
                       struct auth_ratelimit **out)
    __attribute__((warn_unused_result));

/* Frees a limiter.  Accepts NULL. */
void auth_ratelimit_free(struct auth_ratelimit *rl);

/* Call before checking a password.  'user' is the user key (for Keystone,
 * domain id and user name, e.g. "default/alice", or the user id) and 'addr'
 * the client's address; either may be NULL.  Returns 0 when the attempt may
 * proceed, -EAGAIN when it must be refused (429, or 401 without checking the
 * password), then '*retry_after' (if not NULL) holds the seconds until the
 * window closes. */
int auth_ratelimit_check(const struct auth_ratelimit *rl, const char *user,
                         const char *addr, int64_t now, int64_t *retry_after)
    __attribute__((warn_unused_result));

/* Records a failed attempt for 'user' and 'addr' (either may be NULL). */
void auth_ratelimit_failure(struct auth_ratelimit *rl, const char *user,
                            const char *addr, int64_t now);

/* Records a successful login: forgets the user's failures (not the
 * address's, so one valid account does not reset a guessing source). */
void auth_ratelimit_success(struct auth_ratelimit *rl, const char *user);

#endif
