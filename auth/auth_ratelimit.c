/* Failed-login rate limiting (see auth_ratelimit.h). */
#include "auth_ratelimit.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define RL_DEFAULT_USER_LIMIT 5u
#define RL_DEFAULT_ADDR_LIMIT 20u
#define RL_DEFAULT_WINDOW 60u
#define RL_DEFAULT_SLOTS 16384u
#define RL_MAX_SLOTS (1u << 24)
/* How many consecutive slots a key may live in. */
#define RL_PROBE 8u

enum rl_kind { RL_USER = 1, RL_ADDR = 2 };

struct rl_entry {
    uint64_t hash;  /* 0 for an empty slot. */
    int64_t window_start;
    uint32_t count;
};

struct auth_ratelimit {
    unsigned user_limit, addr_limit, window;
    size_t mask;
    struct rl_entry *slots;
    uint8_t key[crypto_shorthash_KEYBYTES];
};

int
auth_ratelimit_new(const struct auth_ratelimit_config *cfg,
                   struct auth_ratelimit **out)
{
    struct auth_ratelimit *rl;
    size_t want = cfg && cfg->slots ? cfg->slots : RL_DEFAULT_SLOTS, n = RL_PROBE;

    *out = NULL;
    if (want > RL_MAX_SLOTS)
        return -EINVAL;
    while (n < want)
        n <<= 1;
    rl = calloc(1, sizeof *rl);
    if (!rl)
        return -ENOMEM;
    rl->slots = calloc(n, sizeof *rl->slots);
    if (!rl->slots) {
        free(rl);
        return -ENOMEM;
    }
    rl->mask = n - 1;
    rl->user_limit = cfg && cfg->user_limit ? cfg->user_limit
                                            : RL_DEFAULT_USER_LIMIT;
    rl->addr_limit = cfg && cfg->addr_limit ? cfg->addr_limit
                                            : RL_DEFAULT_ADDR_LIMIT;
    rl->window = cfg && cfg->window_seconds ? cfg->window_seconds
                                            : RL_DEFAULT_WINDOW;
    crypto_shorthash_keygen(rl->key);
    *out = rl;
    return 0;
}

void
auth_ratelimit_free(struct auth_ratelimit *rl)
{
    if (!rl)
        return;
    free(rl->slots);
    free(rl);
}

static uint64_t
rl_hash(const struct auth_ratelimit *rl, enum rl_kind kind, const char *s)
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t v;
    crypto_shorthash(h, (const unsigned char *)s, strlen(s), rl->key);
    memcpy(&v, h, sizeof v);
    /* The low bits pick the slot; the kind goes in the top bits so a user
     * and an address with the same text are different keys. */
    v = (v & ~(UINT64_C(3) << 62)) | ((uint64_t)kind << 62);
    return v;
}

static struct rl_entry *
rl_find(const struct auth_ratelimit *rl, uint64_t h)
{
    for (size_t i = 0; i < RL_PROBE; i++) {
        struct rl_entry *e = &rl->slots[(h + i) & rl->mask];
        if (e->hash == h)
            return e;
    }
    return NULL;
}

static bool
rl_open(const struct auth_ratelimit *rl, const struct rl_entry *e,
        int64_t now)
{
    return now - e->window_start < (int64_t)rl->window;
}

/* Finds the key's entry or takes a slot for it: an empty or closed one if
 * any, else the one whose window opened first. */
static struct rl_entry *
rl_get(struct auth_ratelimit *rl, uint64_t h, int64_t now)
{
    struct rl_entry *e = rl_find(rl, h), *victim = NULL;

    if (e)
        return e;
    for (size_t i = 0; i < RL_PROBE; i++) {
        e = &rl->slots[(h + i) & rl->mask];
        if (!e->hash || !rl_open(rl, e, now)) {
            victim = e;
            break;
        }
        if (!victim || e->window_start < victim->window_start)
            victim = e;
    }
    victim->hash = h;
    victim->window_start = now;
    victim->count = 0;
    return victim;
}

static int
rl_check_one(const struct auth_ratelimit *rl, enum rl_kind kind,
             const char *key, unsigned limit, int64_t now, int64_t *wait)
{
    const struct rl_entry *e;

    if (!key)
        return 0;
    e = rl_find(rl, rl_hash(rl, kind, key));
    if (!e || !rl_open(rl, e, now) || e->count < limit)
        return 0;
    int64_t w = e->window_start + (int64_t)rl->window - now;
    if (w > *wait)
        *wait = w;
    return -EAGAIN;
}

int
auth_ratelimit_check(const struct auth_ratelimit *rl, const char *user,
                     const char *addr, int64_t now, int64_t *retry_after)
{
    int64_t wait = 0;
    int r1 = rl_check_one(rl, RL_USER, user, rl->user_limit, now, &wait);
    int r2 = rl_check_one(rl, RL_ADDR, addr, rl->addr_limit, now, &wait);

    if (retry_after)
        *retry_after = wait;
    return r1 ? r1 : r2;
}

static void
rl_fail_one(struct auth_ratelimit *rl, enum rl_kind kind, const char *key,
            int64_t now)
{
    struct rl_entry *e;

    if (!key)
        return;
    e = rl_get(rl, rl_hash(rl, kind, key), now);
    if (!rl_open(rl, e, now)) {
        e->window_start = now;
        e->count = 0;
    }
    if (e->count < UINT32_MAX)
        e->count++;
}

void
auth_ratelimit_failure(struct auth_ratelimit *rl, const char *user,
                       const char *addr, int64_t now)
{
    rl_fail_one(rl, RL_USER, user, now);
    rl_fail_one(rl, RL_ADDR, addr, now);
}

void
auth_ratelimit_success(struct auth_ratelimit *rl, const char *user)
{
    struct rl_entry *e;

    if (!user)
        return;
    e = rl_find(rl, rl_hash(rl, RL_USER, user));
    if (e)
        memset(e, 0, sizeof *e);
}
