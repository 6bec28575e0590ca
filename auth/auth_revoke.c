/* Revocation list (see auth_revoke.h): an open-addressing hash table keyed
 * by (kind, id) with SipHash under a per-list random key. */
#include "auth_revoke.h"
#include "auth_token.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define REVOKE_DEFAULT_MAX 1000000u
#define REVOKE_MIN_SLOTS 64u

struct revoke_slot {
    /* Owned by the list; NULL for an empty slot. */
    char *id;
    uint64_t hash;
    int64_t revoked_at;
    enum auth_revoke_kind kind;
};

struct auth_revoke {
    struct revoke_slot *slots;
    size_t n_slots;  /* A power of two. */
    size_t n;
    size_t max;
    uint8_t key[crypto_shorthash_KEYBYTES];
};

static uint64_t
revoke_hash(const struct auth_revoke *rl, enum auth_revoke_kind kind,
            const char *id, size_t len)
{
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t v;
    crypto_shorthash(h, (const unsigned char *)id, len, rl->key);
    memcpy(&v, h, sizeof v);
    return v ^ ((uint64_t)kind + 1) * UINT64_C(0x9e3779b97f4a7c15);
}

static struct revoke_slot *
revoke_find(const struct auth_revoke *rl, enum auth_revoke_kind kind,
            const char *id)
{
    size_t len = strlen(id);
    uint64_t h = revoke_hash(rl, kind, id, len);
    size_t mask = rl->n_slots - 1;

    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct revoke_slot *s = &rl->slots[i];
        if (!s->id)
            return NULL;
        if (s->hash == h && s->kind == kind && !strcmp(s->id, id))
            return s;
    }
}

/* Places an already-hashed slot into 'slots' (which has room). */
static void
revoke_place(struct revoke_slot *slots, size_t n_slots,
             const struct revoke_slot *src)
{
    size_t mask = n_slots - 1;
    size_t i = src->hash & mask;
    while (slots[i].id)
        i = (i + 1) & mask;
    slots[i] = *src;
}

static int
revoke_resize(struct auth_revoke *rl, size_t n_slots)
{
    struct revoke_slot *slots = calloc(n_slots, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < rl->n_slots; i++)
        if (rl->slots[i].id)
            revoke_place(slots, n_slots, &rl->slots[i]);
    free(rl->slots);
    rl->slots = slots;
    rl->n_slots = n_slots;
    return 0;
}

int
auth_revoke_new(size_t max_entries, struct auth_revoke **out)
{
    struct auth_revoke *rl = calloc(1, sizeof *rl);

    *out = NULL;
    if (!rl)
        return -ENOMEM;
    rl->max = max_entries ? max_entries : REVOKE_DEFAULT_MAX;
    rl->n_slots = REVOKE_MIN_SLOTS;
    rl->slots = calloc(rl->n_slots, sizeof *rl->slots);
    if (!rl->slots) {
        free(rl);
        return -ENOMEM;
    }
    crypto_shorthash_keygen(rl->key);
    *out = rl;
    return 0;
}

void
auth_revoke_clear(struct auth_revoke *rl)
{
    for (size_t i = 0; i < rl->n_slots; i++) {
        free(rl->slots[i].id);
        rl->slots[i].id = NULL;
    }
    rl->n = 0;
}

void
auth_revoke_free(struct auth_revoke *rl)
{
    if (!rl)
        return;
    auth_revoke_clear(rl);
    free(rl->slots);
    free(rl);
}

int
auth_revoke_add(struct auth_revoke *rl, enum auth_revoke_kind kind,
                const char *id, int64_t revoked_at)
{
    size_t max_len, len;
    struct revoke_slot *s, slot;

    switch (kind) {
    case AUTH_REVOKE_AUDIT_ID:
        max_len = AUTH_AUDIT_ID_LEN;
        break;
    case AUTH_REVOKE_USER:
    case AUTH_REVOKE_PROJECT:
        max_len = AUTH_ID_MAX;
        break;
    default:
        return -EINVAL;
    }
    if (!id)
        return -EINVAL;
    len = strnlen(id, max_len + 1);
    if (len == 0 || len > max_len)
        return -EINVAL;

    s = revoke_find(rl, kind, id);
    if (s) {
        if (revoked_at > s->revoked_at)
            s->revoked_at = revoked_at;
        return 0;
    }
    if (rl->n >= rl->max)
        return -ENOSPC;
    /* Keep the load factor under 1/2 so that probes stay short. */
    if ((rl->n + 1) * 2 > rl->n_slots) {
        int ret = revoke_resize(rl, rl->n_slots * 2);
        if (ret)
            return ret;
    }
    slot.id = strdup(id);
    if (!slot.id)
        return -ENOMEM;
    slot.hash = revoke_hash(rl, kind, id, len);
    slot.revoked_at = revoked_at;
    slot.kind = kind;
    revoke_place(rl->slots, rl->n_slots, &slot);
    rl->n++;
    return 0;
}

int
auth_revoke_check(const struct auth_revoke *rl, const struct auth_token *tok)
{
    const struct revoke_slot *s;

    if (!rl->n)
        return 0;
    if (revoke_find(rl, AUTH_REVOKE_AUDIT_ID, tok->audit_id))
        return -EKEYREVOKED;
    if (tok->parent_audit_id[0]
        && revoke_find(rl, AUTH_REVOKE_AUDIT_ID, tok->parent_audit_id))
        return -EKEYREVOKED;
    s = revoke_find(rl, AUTH_REVOKE_USER, tok->user_id);
    if (s && tok->issued_at <= s->revoked_at)
        return -EKEYREVOKED;
    if (tok->scope == AUTH_SCOPE_PROJECT) {
        s = revoke_find(rl, AUTH_REVOKE_PROJECT, tok->project_id);
        if (s && tok->issued_at <= s->revoked_at)
            return -EKEYREVOKED;
    }
    return 0;
}

size_t
auth_revoke_prune(struct auth_revoke *rl, int64_t before)
{
    size_t removed = 0;
    bool any = false;

    for (size_t i = 0; i < rl->n_slots; i++)
        any |= rl->slots[i].id && rl->slots[i].revoked_at < before;
    if (!any)
        return 0;
    /* Linear probing cannot simply empty a slot, so the survivors are
     * re-placed into a cleared table of the same size. */
    struct revoke_slot *old = rl->slots;
    struct revoke_slot *slots = calloc(rl->n_slots, sizeof *slots);
    if (!slots) {
        /* Without memory the entries stay: pruning is an optimisation, and
         * keeping entries never un-revokes a token. */
        return 0;
    }
    for (size_t i = 0; i < rl->n_slots; i++) {
        if (!old[i].id)
            continue;
        if (old[i].revoked_at < before) {
            free(old[i].id);
            removed++;
        } else {
            revoke_place(slots, rl->n_slots, &old[i]);
        }
    }
    free(old);
    rl->slots = slots;
    rl->n -= removed;
    return removed;
}

size_t
auth_revoke_count(const struct auth_revoke *rl)
{
    return rl->n;
}
