#include "auth_verifier.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "auth_keys.h"
#include "auth_revoke.h"
#include "auth_token.h"
#include "log.h"

#define TOKEN_CACHE_ENTRIES 4096
#define REVOCATIONS_MAX 1000000

struct auth_verifier {
    db_pool *db;
    struct auth_keyset *keys;
    struct auth_token_cache *cache;
    struct auth_revoke *revoked;
    long token_ttl;
    char *key_dir;
    bool loaded;
    bool timer_open;
    unsigned ticks;
    uv_timer_t timer;
};

static int64_t
now_s(void)
{
    return (int64_t)time(NULL);
}

static int
revoke_add(struct auth_verifier *a, const char *kind, const char *value, int64_t at)
{
    enum auth_revoke_kind k;
    if (!strcmp(kind, "audit"))
        k = AUTH_REVOKE_AUDIT_ID;
    else if (!strcmp(kind, "user"))
        k = AUTH_REVOKE_USER;
    else if (!strcmp(kind, "project"))
        k = AUTH_REVOKE_PROJECT;
    else
        return -EINVAL;
    return auth_revoke_add(a->revoked, k, value, at);
}

static void
revocations_loaded(int status, db_result *res, const struct db_error *err, void *arg)
{
    struct auth_verifier *a = arg;
    if (status < 0) {
        log_warn("auth-verifier", "cannot load revocation events: %s",
                 err && err->message ? err->message : strerror(-status));
        return;
    }
    for (int i = 0; i < db_rows(res); i++) {
        int64_t at = strtoll(db_get(res, i, 2), NULL, 10);
        (void)revoke_add(a, db_get(res, i, 0), db_get(res, i, 1), at);
    }
    if (!a->loaded)
        log_info("auth-verifier", "loaded %d revocation events", db_rows(res));
    a->loaded = true;
}

static void
load_revocations(struct auth_verifier *a)
{
    int rc = db_query(a->db,
                      "SELECT kind, value, floor(extract(epoch FROM revoked_at))::bigint "
                      "FROM revocation_events WHERE expires_at > now()",
                      0, NULL, revocations_loaded, a);
    if (rc < 0)
        log_debug("auth-verifier", "revocations not loaded yet: %s", strerror(-rc));
}

static void
on_revocation(const char *channel, const char *payload, void *arg)
{
    struct auth_verifier *a = arg;
    char kind[16], value[256];
    long long at;
    if (sscanf(payload, "%15s %255s %lld", kind, value, &at) != 3) {
        log_warn("auth-verifier", "malformed revocation notification");
        return;
    }
    if (revoke_add(a, kind, value, (int64_t)at) < 0)
        log_warn("auth-verifier", "cannot record a revocation event (%s)", kind);
}

static void
on_reconnect(void *arg)
{
    load_revocations(arg);
}

/* Loads the list when start-up could not, reloads it every 30 s (the safety
 * net for a notification lost around a reconnect) and prunes it. */
static void
on_tick(uv_timer_t *t)
{
    struct auth_verifier *a = t->data;
    if (!db_pool_available(a->db))
        return;
    a->ticks++;
    if (!a->loaded || a->ticks % 300 == 0)
        load_revocations(a);
    if (a->ticks % 6000 == 0)
        (void)auth_revoke_prune(a->revoked, now_s() - a->token_ttl - 60);
}

int
auth_verifier_new(uv_loop_t *loop, db_pool *db, const char *key_dir, long token_ttl,
             struct auth_verifier **out, const char **why)
{
    struct auth_verifier *a = calloc(1, sizeof *a);
    int rc;
    *why = NULL;
    if (!a)
        return -ENOMEM;
    a->db = db;
    a->token_ttl = token_ttl;
    a->key_dir = strdup(key_dir);
    if (!a->key_dir) {
        rc = -ENOMEM;
        *why = "out of memory";
        goto fail;
    }
    if ((rc = auth_init()) < 0) {
        *why = "cannot initialise the crypto library";
        goto fail;
    }
    if ((rc = auth_keys_load(key_dir, &a->keys)) < 0) {
        *why = "cannot load the token keys";
        goto fail;
    }
    if ((rc = auth_token_cache_new(TOKEN_CACHE_ENTRIES, &a->cache)) < 0 ||
        (rc = auth_revoke_new(REVOCATIONS_MAX, &a->revoked)) < 0) {
        *why = "out of memory";
        goto fail;
    }
    if ((rc = db_listen(db, "nimbus_revocation", on_revocation, on_reconnect, a)) < 0) {
        *why = "cannot listen for revocations";
        goto fail;
    }
    uv_timer_init(loop, &a->timer);
    a->timer.data = a;
    a->timer_open = true;
    uv_timer_start(&a->timer, on_tick, 0, 100);
    uv_unref((uv_handle_t *)&a->timer);
    *out = a;
    return 0;
fail:
    auth_verifier_free(a);
    return rc;
}

int
auth_verifier_check(struct auth_verifier *a, const char *text, struct auth_token *tok)
{
    if (!text || !*text)
        return -ENOENT;
    if (!a->loaded)
        return -EAGAIN;
    int rc = auth_token_decode(a->keys, a->cache, text, strlen(text), now_s(), tok);
    if (rc < 0)
        return rc;
    if (auth_revoke_check(a->revoked, tok) < 0)
        return -EKEYREVOKED;
    return 0;
}

int
auth_verifier_revoke(struct auth_verifier *a, const char *kind, const char *value,
                     int64_t revoked_at)
{
    return revoke_add(a, kind, value, revoked_at);
}

bool
auth_verifier_is_revoked(const struct auth_verifier *a, const struct auth_token *tok)
{
    return auth_revoke_check(a->revoked, tok) < 0;
}

const struct auth_keyset *
auth_verifier_keys(const struct auth_verifier *a)
{
    return a->keys;
}

int
auth_verifier_reload_keys(struct auth_verifier *a)
{
    struct auth_keyset *ks;
    struct auth_token_cache *cache;
    int rc = auth_keys_load(a->key_dir, &ks);
    if (rc < 0)
        return rc;
    if ((rc = auth_token_cache_new(TOKEN_CACHE_ENTRIES, &cache)) < 0) {
        auth_keyset_free(ks);
        return rc;
    }
    /* Verified-token entries belong to the old key set: drop them with it. */
    auth_token_cache_free(a->cache);
    auth_keyset_free(a->keys);
    a->cache = cache;
    a->keys = ks;
    return 0;
}

bool
auth_verifier_ready(const struct auth_verifier *a)
{
    return a && a->loaded;
}

void
auth_verifier_stop(struct auth_verifier *a)
{
    if (a && a->timer_open) {
        a->timer_open = false;
        uv_close((uv_handle_t *)&a->timer, NULL);
    }
}

void
auth_verifier_free(struct auth_verifier *a)
{
    if (!a)
        return;
    auth_keyset_free(a->keys);
    auth_token_cache_free(a->cache);
    auth_revoke_free(a->revoked);
    free(a->key_dir);
    free(a);
}
