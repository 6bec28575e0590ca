/* A growing buffer for JSON written by hand where building a jansson tree
 * first costs too much (the server lists of the compute API write a
 * hundred values per server), with the JSON string escaper (libc only).
 *
 * The escaper writes what jansson's json_dumps() writes for the same
 * string (without JSON_ENSURE_ASCII or JSON_ESCAPE_SLASH): \" \\ \b \f \n
 * \r \t, every other byte below 0x20 as \u00XX (upper-case hex), all else
 * as it is.  A string that is not valid UTF-8 (bytes no sequence starts
 * with, truncated, overlong or surrogate sequences, code points above
 * U+10FFFF) is refused, as json_string() and json_dumps() refuse it: the
 * buffer then records the error (jb_error) and the document must not be
 * sent.  tests/lib/test_jbuf.c compares the two on random strings. */
#ifndef NIMBUS_JBUF_H
#define NIMBUS_JBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct jbuf {
    char *p;                /* malloc'd, not NUL-terminated; NULL until written. */
    size_t len, cap;
    int err;                /* 0, or -EILSEQ once a string was refused. */
};

/* Makes room for 'n' more bytes; out of memory aborts, as arena_alloc
 * does. */
void jb_grow(struct jbuf *b, size_t n);

/* Called a hundred times per server: inline, with the growth out of line. */
static inline __attribute__((always_inline)) void
jb_reserve(struct jbuf *b, size_t n)
{
    if (b->cap - b->len < n)
        jb_grow(b, n);
}

static inline __attribute__((always_inline)) void
jb_raw(struct jbuf *b, const char *s, size_t n)
{
    if (!n)
        return;             /* The buffer may not exist yet (memcpy to NULL). */
    jb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* A string literal, copied as is. */
#define jb_lit(b, s) jb_raw((b), "" s, sizeof(s) - 1)
/* ,"key": for a literal key without characters to escape. */
#define jb_key(b, k) jb_lit((b), ",\"" k "\":")

/* What each byte needs in a JSON string (jbuf.c); 0: copied as it is. */
extern const unsigned char jb_class[256];

/* jb_esc() from the first byte at 'from' that is not copied as it is
 * ('run' starts what is not written yet). */
int jb_esc_from(struct jbuf *b, const char *run, const char *from);

/* The characters of the NUL-terminated 's' escaped for a JSON string,
 * without the quotes.  Returns 0, or -EILSEQ when 's' is not valid UTF-8
 * (then the valid part before the bad sequence is written and b->err is
 * set; the caller may test either).  Inline for the common string of
 * ASCII without anything to escape; the rest is out of line. */
static inline __attribute__((always_inline)) int
jb_esc(struct jbuf *b, const char *s)
{
    const char *e = s;
    while (!jb_class[(unsigned char)*e])
        e++;
    if (*e)
        return jb_esc_from(b, s, e);
    jb_raw(b, s, (size_t)(e - s));
    return 0;
}

/* 's' as a JSON string (quoted), or null for NULL; errors as jb_esc. */
static inline void
jb_str(struct jbuf *b, const char *s)
{
    if (!s) {
        jb_lit(b, "null");
        return;
    }
    jb_lit(b, "\"");
    (void)jb_esc(b, s);
    jb_lit(b, "\"");
}

/* Text that is JSON already (a jsonb or integer column), or null. */
static inline void
jb_json(struct jbuf *b, const char *s)
{
    if (s)
        jb_raw(b, s, strlen(s));
    else
        jb_lit(b, "null");
}

/* 0, or -EILSEQ when a string written into 'b' was refused. */
static inline int
jb_error(const struct jbuf *b)
{
    return b->err;
}

/* Frees the buffer's memory (NULL-safe) and empties it. */
void jb_free(struct jbuf *b);

#endif
