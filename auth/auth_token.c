/* Signed tokens (see auth_token.h).
 *
 * Payload layout, version 1 (all integers big-endian):
 *
 *   u8      version (1)
 *   u8[8]   key id of the signing key
 *   u8      scope: 0 unscoped, 1 project, 2 domain
 *   u8      methods (AUTH_METHOD_* bits)
 *   u8      flags: bit 0 parent audit id present, bit 1 user name present
 *   i64     issued_at
 *   i64     expires_at
 *   u8[16]  audit id
 *   u8[16]  parent audit id                  (if flag bit 0)
 *   id      user id
 *   id      user domain id
 *   name    user name                        (if flag bit 1)
 *   id id   project id, project domain id    (project scope)
 *   id      domain id                        (domain scope)
 *   u8      role count (at most AUTH_TOKEN_MAX_ROLES)
 *   (id name) per role: role id, role name
 *
 * where an "id" is a tag byte then either 16 raw bytes (tag 1: 32 lowercase
 * hex digits; tag 2: a lowercase canonical UUID) or a length byte (1 to
 * AUTH_ID_MAX) and that many printable ASCII bytes (tag 3), and a "name" is
 * a length byte (1 to 255) and bytes without control characters.  The token
 * string is base64url without padding of payload || Ed25519 signature (64
 * bytes) over the payload.  Decoding refuses anything else, including
 * trailing bytes. */
#include "auth_token.h"
#include "auth_internal.h"
#include "auth_keys.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define TOKEN_VERSION 1
#define TOKEN_FLAG_PARENT 0x01u
#define TOKEN_FLAG_USER_NAME 0x02u
#define TOKEN_HEADER_LEN (1 + AUTH_KEY_ID_LEN + 3 + 8 + 8 + 16)
#define TOKEN_SIG_LEN crypto_sign_BYTES
/* The most binary bytes AUTH_TOKEN_STR_MAX base64 characters can carry. */
#define TOKEN_BIN_MAX (AUTH_TOKEN_STR_MAX / 4 * 3)
#define TOKEN_PAYLOAD_MAX (TOKEN_BIN_MAX - TOKEN_SIG_LEN)

enum id_tag { ID_TAG_HEX = 1, ID_TAG_UUID = 2, ID_TAG_TEXT = 3 };

/* ---- Writing. */

struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool overflow;
};

static void
w_bytes(struct wbuf *w, const void *d, size_t n)
{
    if (w->overflow || w->cap - w->len < n) {
        w->overflow = true;
        return;
    }
    memcpy(w->p + w->len, d, n);
    w->len += n;
}

static void
w_u8(struct wbuf *w, unsigned v)
{
    uint8_t b = (uint8_t)v;
    w_bytes(w, &b, 1);
}

static void
w_i64(struct wbuf *w, int64_t v)
{
    uint64_t u = (uint64_t)v;
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(u >> (56 - 8 * i));
    w_bytes(w, b, sizeof b);
}

static bool
is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool
id_is_hex32(const char *s, size_t n)
{
    if (n != 32)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_lower_hex(s[i]))
            return false;
    return true;
}

static bool
id_is_uuid(const char *s, size_t n)
{
    if (n != 36)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_lower_hex(s[i]))
            return false;
    }
    return true;
}

static bool
id_char_ok(unsigned char c)
{
    return c > 0x20 && c < 0x7f;
}

static bool
name_char_ok(unsigned char c)
{
    return c >= 0x20 && c != 0x7f;
}

/* Validates a NUL-terminated id held in a field of AUTH_ID_MAX + 1 bytes. */
static bool
id_valid(const char *s)
{
    size_t n = strnlen(s, AUTH_ID_MAX + 1);
    if (n == 0 || n > AUTH_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!id_char_ok((unsigned char)s[i]))
            return false;
    return true;
}

static bool
name_valid(const char *s)
{
    size_t n = strnlen(s, AUTH_NAME_MAX + 1);
    if (n == 0 || n > AUTH_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!name_char_ok((unsigned char)s[i]))
            return false;
    return true;
}

static void
w_id(struct wbuf *w, const char *s)
{
    size_t n = strlen(s);
    uint8_t raw[16];

    if (id_is_hex32(s, n)) {
        sodium_hex2bin(raw, sizeof raw, s, n, NULL, NULL, NULL);
        w_u8(w, ID_TAG_HEX);
        w_bytes(w, raw, sizeof raw);
    } else if (id_is_uuid(s, n)) {
        sodium_hex2bin(raw, sizeof raw, s, n, "-", NULL, NULL);
        w_u8(w, ID_TAG_UUID);
        w_bytes(w, raw, sizeof raw);
    } else {
        w_u8(w, ID_TAG_TEXT);
        w_u8(w, (unsigned)n);
        w_bytes(w, s, n);
    }
}

static void
w_name(struct wbuf *w, const char *s)
{
    size_t n = strlen(s);
    w_u8(w, (unsigned)n);
    w_bytes(w, s, n);
}

/* Decodes a 22-character audit id into 16 bytes. */
static int
audit_id_to_bin(const char *s, uint8_t out[16])
{
    size_t n = strnlen(s, AUTH_AUDIT_ID_LEN + 1), bin_len;
    const char *end;
    if (n != AUTH_AUDIT_ID_LEN
        || sodium_base642bin(out, 16, s, n, NULL, &bin_len, &end,
                             sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0
        || bin_len != 16 || end != s + n)
        return -EINVAL;
    return 0;
}

static void
audit_id_from_bin(const uint8_t in[16], char out[AUTH_AUDIT_ID_LEN + 1])
{
    sodium_bin2base64(out, AUTH_AUDIT_ID_LEN + 1, in, 16,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

void
auth_token_audit_id_new(char out[AUTH_AUDIT_ID_LEN + 1])
{
    uint8_t raw[16];
    randombytes_buf(raw, sizeof raw);
    audit_id_from_bin(raw, out);
}

/* Checks the fields a caller filled in, before encoding. */
static int
token_validate(const struct auth_token *t)
{
    if (!id_valid(t->user_id) || !id_valid(t->user_domain_id))
        return -EINVAL;
    if (t->user_name[0] && !name_valid(t->user_name))
        return -EINVAL;
    switch (t->scope) {
    case AUTH_SCOPE_UNSCOPED:
        if (t->project_id[0] || t->project_domain_id[0] || t->domain_id[0]
            || t->n_roles)
            return -EINVAL;
        break;
    case AUTH_SCOPE_PROJECT:
        if (!id_valid(t->project_id) || !id_valid(t->project_domain_id)
            || t->domain_id[0])
            return -EINVAL;
        break;
    case AUTH_SCOPE_DOMAIN:
        if (!id_valid(t->domain_id) || t->project_id[0]
            || t->project_domain_id[0])
            return -EINVAL;
        break;
    default:
        return -EINVAL;
    }
    if (t->n_roles > AUTH_TOKEN_MAX_ROLES)
        return -EINVAL;
    for (unsigned i = 0; i < t->n_roles; i++)
        if (!id_valid(t->roles[i].id) || !name_valid(t->roles[i].name))
            return -EINVAL;
    if (!t->methods || (t->methods & ~AUTH_METHOD_ALL))
        return -EINVAL;
    if (t->expires_at <= t->issued_at)
        return -EINVAL;
    return 0;
}

int
auth_token_payload_encode(const struct auth_token *t,
                          const uint8_t kid[AUTH_KEY_ID_LEN], uint8_t *buf,
                          size_t cap, size_t *len)
{
    struct wbuf w = { .p = buf, .cap = cap };
    uint8_t audit[16], parent[16];
    unsigned flags = 0;
    int ret = token_validate(t);

    if (ret)
        return ret;
    if (audit_id_to_bin(t->audit_id, audit))
        return -EINVAL;
    if (t->parent_audit_id[0]) {
        if (audit_id_to_bin(t->parent_audit_id, parent))
            return -EINVAL;
        flags |= TOKEN_FLAG_PARENT;
    }
    if (t->user_name[0])
        flags |= TOKEN_FLAG_USER_NAME;

    w_u8(&w, TOKEN_VERSION);
    w_bytes(&w, kid, AUTH_KEY_ID_LEN);
    w_u8(&w, (unsigned)t->scope);
    w_u8(&w, t->methods);
    w_u8(&w, flags);
    w_i64(&w, t->issued_at);
    w_i64(&w, t->expires_at);
    w_bytes(&w, audit, sizeof audit);
    if (flags & TOKEN_FLAG_PARENT)
        w_bytes(&w, parent, sizeof parent);
    w_id(&w, t->user_id);
    w_id(&w, t->user_domain_id);
    if (flags & TOKEN_FLAG_USER_NAME)
        w_name(&w, t->user_name);
    if (t->scope == AUTH_SCOPE_PROJECT) {
        w_id(&w, t->project_id);
        w_id(&w, t->project_domain_id);
    } else if (t->scope == AUTH_SCOPE_DOMAIN) {
        w_id(&w, t->domain_id);
    }
    w_u8(&w, t->n_roles);
    for (unsigned i = 0; i < t->n_roles; i++) {
        w_id(&w, t->roles[i].id);
        w_name(&w, t->roles[i].name);
    }
    if (w.overflow)
        return -E2BIG;
    *len = w.len;
    return 0;
}

int
auth_token_encode(const struct auth_keyset *ks, const struct auth_token *tok,
                  char *out, size_t out_size)
{
    uint8_t bin[TOKEN_BIN_MAX];
    const uint8_t *kid, *sk;
    size_t len;
    int ret = auth_keyset_signer(ks, &kid, &sk);

    if (ret)
        return ret;
    ret = auth_token_payload_encode(tok, kid, bin, TOKEN_PAYLOAD_MAX, &len);
    if (ret)
        return ret;
    crypto_sign_detached(bin + len, NULL, bin, len, sk);
    len += TOKEN_SIG_LEN;
    if (sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING)
        > out_size)
        return -ENOSPC;
    sodium_bin2base64(out, out_size, bin, len,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

/* ---- Reading. */

struct rbuf {
    const uint8_t *p;
    size_t len, off;
};

static int
r_bytes(struct rbuf *r, void *out, size_t n)
{
    if (r->len - r->off < n)
        return -EINVAL;
    memcpy(out, r->p + r->off, n);
    r->off += n;
    return 0;
}

static int
r_u8(struct rbuf *r, unsigned *v)
{
    uint8_t b;
    if (r_bytes(r, &b, 1))
        return -EINVAL;
    *v = b;
    return 0;
}

static int
r_i64(struct rbuf *r, int64_t *v)
{
    uint8_t b[8];
    uint64_t u = 0;
    if (r_bytes(r, b, sizeof b))
        return -EINVAL;
    for (int i = 0; i < 8; i++)
        u = u << 8 | b[i];
    *v = (int64_t)u;
    return 0;
}

/* Reads an id into 'out' (AUTH_ID_MAX + 1 bytes). */
static int
r_id(struct rbuf *r, char out[AUTH_ID_MAX + 1])
{
    unsigned tag, n;
    uint8_t raw[16];

    if (r_u8(r, &tag))
        return -EINVAL;
    switch (tag) {
    case ID_TAG_HEX:
        if (r_bytes(r, raw, sizeof raw))
            return -EINVAL;
        sodium_bin2hex(out, AUTH_ID_MAX + 1, raw, sizeof raw);
        return 0;
    case ID_TAG_UUID: {
        char hex[33];
        if (r_bytes(r, raw, sizeof raw))
            return -EINVAL;
        sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
        memcpy(out, hex, 8);
        out[8] = '-';
        memcpy(out + 9, hex + 8, 4);
        out[13] = '-';
        memcpy(out + 14, hex + 12, 4);
        out[18] = '-';
        memcpy(out + 19, hex + 16, 4);
        out[23] = '-';
        memcpy(out + 24, hex + 20, 12);
        out[36] = '\0';
        return 0;
    }
    case ID_TAG_TEXT:
        if (r_u8(r, &n) || n == 0 || n > AUTH_ID_MAX || r_bytes(r, out, n))
            return -EINVAL;
        out[n] = '\0';
        for (unsigned i = 0; i < n; i++)
            if (!id_char_ok((unsigned char)out[i]))
                return -EINVAL;
        return 0;
    default:
        return -EINVAL;
    }
}

static int
r_name(struct rbuf *r, char out[AUTH_NAME_MAX + 1])
{
    unsigned n;
    if (r_u8(r, &n) || n == 0 || r_bytes(r, out, n))
        return -EINVAL;
    out[n] = '\0';
    for (unsigned i = 0; i < n; i++)
        if (!name_char_ok((unsigned char)out[i]))
            return -EINVAL;
    return 0;
}

int
auth_token_payload_parse(const uint8_t *p, size_t len, struct auth_token *t)
{
    struct rbuf r = { .p = p, .len = len };
    uint8_t kid[AUTH_KEY_ID_LEN], audit[16];
    unsigned version, scope, flags, n_roles;

    /* Only the strings' first bytes are cleared: fields are always
     * NUL-terminated when set, and clearing all 5 KiB would cost more than
     * the parse. */
    t->user_name[0] = t->project_id[0] = t->project_domain_id[0] = '\0';
    t->domain_id[0] = t->parent_audit_id[0] = '\0';
    t->n_roles = 0;

    if (r_u8(&r, &version) || version != TOKEN_VERSION
        || r_bytes(&r, kid, sizeof kid) || r_u8(&r, &scope)
        || r_u8(&r, &t->methods) || r_u8(&r, &flags)
        || r_i64(&r, &t->issued_at) || r_i64(&r, &t->expires_at)
        || r_bytes(&r, audit, sizeof audit))
        return -EINVAL;
    if (!t->methods || (t->methods & ~AUTH_METHOD_ALL)
        || (flags & ~(TOKEN_FLAG_PARENT | TOKEN_FLAG_USER_NAME))
        || t->expires_at <= t->issued_at)
        return -EINVAL;
    audit_id_from_bin(audit, t->audit_id);
    if (flags & TOKEN_FLAG_PARENT) {
        if (r_bytes(&r, audit, sizeof audit))
            return -EINVAL;
        audit_id_from_bin(audit, t->parent_audit_id);
    }
    if (r_id(&r, t->user_id) || r_id(&r, t->user_domain_id))
        return -EINVAL;
    if ((flags & TOKEN_FLAG_USER_NAME) && r_name(&r, t->user_name))
        return -EINVAL;
    switch (scope) {
    case AUTH_SCOPE_UNSCOPED:
        t->scope = AUTH_SCOPE_UNSCOPED;
        break;
    case AUTH_SCOPE_PROJECT:
        t->scope = AUTH_SCOPE_PROJECT;
        if (r_id(&r, t->project_id) || r_id(&r, t->project_domain_id))
            return -EINVAL;
        break;
    case AUTH_SCOPE_DOMAIN:
        t->scope = AUTH_SCOPE_DOMAIN;
        if (r_id(&r, t->domain_id))
            return -EINVAL;
        break;
    default:
        return -EINVAL;
    }
    if (r_u8(&r, &n_roles) || n_roles > AUTH_TOKEN_MAX_ROLES
        || (scope == AUTH_SCOPE_UNSCOPED && n_roles))
        return -EINVAL;
    for (unsigned i = 0; i < n_roles; i++) {
        if (r_id(&r, t->roles[i].id) || r_name(&r, t->roles[i].name))
            return -EINVAL;
        t->n_roles = i + 1;
    }
    return r.off == r.len ? 0 : -EINVAL;
}

/* ---- The cache of verified tokens. */

#define CACHE_NIL UINT32_MAX
#define CACHE_KEY_LEN 32
#define CACHE_CAPACITY_MAX (1u << 20)

struct cache_entry {
    uint8_t key[CACHE_KEY_LEN];
    /* The key set the token was verified with. */
    uint64_t serial;
    uint32_t hnext;
    uint32_t prev, next;
};

struct auth_token_cache {
    size_t capacity, n;
    uint32_t bucket_mask;
    uint32_t *buckets;
    struct cache_entry *e;
    /* Most recently used first. */
    uint32_t head, tail;
    uint64_t hits, misses, evictions;
};

int
auth_token_cache_new(size_t capacity, struct auth_token_cache **out)
{
    struct auth_token_cache *c;
    size_t nb = 1;

    *out = NULL;
    if (capacity == 0 || capacity > CACHE_CAPACITY_MAX)
        return -EINVAL;
    while (nb < capacity)
        nb <<= 1;
    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->capacity = capacity;
    c->bucket_mask = (uint32_t)(nb - 1);
    c->buckets = malloc(nb * sizeof *c->buckets);
    c->e = calloc(capacity, sizeof *c->e);
    if (!c->buckets || !c->e) {
        auth_token_cache_free(c);
        return -ENOMEM;
    }
    memset(c->buckets, 0xff, nb * sizeof *c->buckets);
    c->head = c->tail = CACHE_NIL;
    *out = c;
    return 0;
}

void
auth_token_cache_free(struct auth_token_cache *c)
{
    if (!c)
        return;
    free(c->buckets);
    free(c->e);
    free(c);
}

void
auth_token_cache_stats(const struct auth_token_cache *c,
                       struct auth_token_cache_stats *out)
{
    out->hits = c->hits;
    out->misses = c->misses;
    out->evictions = c->evictions;
    out->entries = c->n;
}

static uint32_t
cache_bucket(const struct auth_token_cache *c, const uint8_t *key)
{
    uint32_t h;
    memcpy(&h, key, sizeof h);
    return h & c->bucket_mask;
}

static void
cache_unlink_lru(struct auth_token_cache *c, uint32_t i)
{
    struct cache_entry *e = &c->e[i];
    if (e->prev != CACHE_NIL)
        c->e[e->prev].next = e->next;
    else
        c->head = e->next;
    if (e->next != CACHE_NIL)
        c->e[e->next].prev = e->prev;
    else
        c->tail = e->prev;
}

static void
cache_push_front(struct auth_token_cache *c, uint32_t i)
{
    struct cache_entry *e = &c->e[i];
    e->prev = CACHE_NIL;
    e->next = c->head;
    if (c->head != CACHE_NIL)
        c->e[c->head].prev = i;
    c->head = i;
    if (c->tail == CACHE_NIL)
        c->tail = i;
}

static uint32_t
cache_find(const struct auth_token_cache *c, const uint8_t *key)
{
    for (uint32_t i = c->buckets[cache_bucket(c, key)]; i != CACHE_NIL;
         i = c->e[i].hnext)
        if (!memcmp(c->e[i].key, key, CACHE_KEY_LEN))
            return i;
    return CACHE_NIL;
}

static void
cache_insert(struct auth_token_cache *c, const uint8_t *key, uint64_t serial)
{
    uint32_t i = cache_find(c, key);

    if (i != CACHE_NIL) {
        /* Verified again after a key set change. */
        c->e[i].serial = serial;
        cache_unlink_lru(c, i);
        cache_push_front(c, i);
        return;
    }
    if (c->n < c->capacity) {
        i = (uint32_t)c->n++;
    } else {
        uint32_t *pp;
        i = c->tail;
        cache_unlink_lru(c, i);
        for (pp = &c->buckets[cache_bucket(c, c->e[i].key)]; *pp != i;
             pp = &c->e[*pp].hnext)
            ;
        *pp = c->e[i].hnext;
        c->evictions++;
    }
    memcpy(c->e[i].key, key, CACHE_KEY_LEN);
    c->e[i].serial = serial;
    uint32_t b = cache_bucket(c, key);
    c->e[i].hnext = c->buckets[b];
    c->buckets[b] = i;
    cache_push_front(c, i);
}

/* ---- Decoding. */

int
auth_token_decode(const struct auth_keyset *ks, struct auth_token_cache *cache,
                  const char *s, size_t len, int64_t now,
                  struct auth_token *out)
{
    uint8_t bin[TOKEN_BIN_MAX], key[CACHE_KEY_LEN];
    size_t bin_len, plen;
    const char *end;
    const uint8_t *pk;
    bool cached = false;
    int ret;

    if (!s || len == 0 || len > AUTH_TOKEN_STR_MAX)
        return -EINVAL;
    if (cache) {
        crypto_generichash(key, sizeof key, (const unsigned char *)s, len,
                           NULL, 0);
        uint32_t i = cache_find(cache, key);
        if (i != CACHE_NIL && cache->e[i].serial == auth_keyset_serial(ks)) {
            cached = true;
            cache->hits++;
            cache_unlink_lru(cache, i);
            cache_push_front(cache, i);
        } else {
            cache->misses++;
        }
    }
    if (sodium_base642bin(bin, sizeof bin, s, len, NULL, &bin_len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0
        || end != s + len || bin_len < TOKEN_HEADER_LEN + TOKEN_SIG_LEN)
        return -EINVAL;
    plen = bin_len - TOKEN_SIG_LEN;
    if (bin[0] != TOKEN_VERSION)
        return -EINVAL;
    if (!cached) {
        pk = auth_keyset_find_pk(ks, bin + 1);
        if (!pk || crypto_sign_verify_detached(bin + plen, bin, plen, pk) != 0)
            return -EKEYREJECTED;
    }
    ret = auth_token_payload_parse(bin, plen, out);
    if (ret)
        return ret;
    if (now >= out->expires_at)
        return -EKEYEXPIRED;
    if (cache && !cached)
        cache_insert(cache, key, auth_keyset_serial(ks));
    return 0;
}
