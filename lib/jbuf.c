/* The JSON output buffer and string escaper (see jbuf.h). */
#include "jbuf.h"

#include <errno.h>
#include <stdlib.h>

void
jb_grow(struct jbuf *b, size_t n)
{
    size_t cap = b->cap ? b->cap : 64 * 1024;
    while (cap - b->len < n)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        abort();
    b->p = p;
    b->cap = cap;
}

void
jb_free(struct jbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* What a byte needs, one table lookup per byte: most bytes are copied as
 * they are (COPY, and the continuation bytes of a checked sequence); the
 * terminating NUL ends the string; a lead byte of a 2-, 3- or 4-byte UTF-8
 * sequence has the sequence checked; the bytes no sequence starts with
 * are refused; the others are escaped: as the letter after the backslash
 * given here, or as \u00XX ('u'). */
enum {
    COPY = 0, END = 1, SEQ2 = 2, SEQ3 = 3, SEQ4 = 4, BAD = 5,
};

const unsigned char jb_class[256] = {
    [0x00] = END,
    [0x01 ... 0x07] = 'u', ['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', [0x0b] = 'u',
    ['\f'] = 'f', ['\r'] = 'r', [0x0e ... 0x1f] = 'u',
    ['"'] = '"', ['\\'] = '\\',
    [0x80 ... 0xc1] = BAD,
    [0xc2 ... 0xdf] = SEQ2,
    [0xe0 ... 0xef] = SEQ3,
    [0xf0 ... 0xf4] = SEQ4,
    [0xf5 ... 0xff] = BAD,
};

static inline bool
cont(unsigned char c)
{
    return (c & 0xc0) == 0x80;
}

/* True when the 'n'-byte sequence at 's' (its lead byte already classed)
 * is valid: continuation bytes, and none of the overlong forms, UTF-16
 * surrogates or code points above U+10FFFF that jansson refuses.  Stops
 * at the first bad byte, so it never reads past the terminating NUL. */
static bool
seq_valid(const unsigned char *s, unsigned n)
{
    unsigned char c = s[0], d = s[1];
    if (!cont(d))
        return false;
    if (n == 2)
        return true;
    if ((c == 0xe0 && d < 0xa0) || (c == 0xed && d > 0x9f)
        || (c == 0xf0 && d < 0x90) || (c == 0xf4 && d > 0x8f))
        return false;
    if (!cont(s[2]))
        return false;
    return n == 3 || cont(s[3]);
}

int
jb_esc_from(struct jbuf *b, const char *from_run, const char *from)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)from;
    const unsigned char *run = (const unsigned char *)from_run;
    for (;;) {
        unsigned char k = jb_class[*s];
        if (k == COPY) {
            s++;
            continue;
        }
        if (k >= SEQ2 && k <= SEQ4 && seq_valid(s, k)) {
            s += k;
            continue;
        }
        jb_raw(b, (const char *)run, (size_t)(s - run));
        if (k == END)
            return 0;
        if (k <= BAD) {     /* BAD, or a sequence that is not valid. */
            b->err = -EILSEQ;
            return -EILSEQ;
        }
        jb_reserve(b, 6);
        char *o = b->p + b->len;
        o[0] = '\\';
        if (k == 'u') {
            o[1] = 'u';
            o[2] = '0';
            o[3] = '0';
            o[4] = hex[*s >> 4];
            o[5] = hex[*s & 15];
            b->len += 6;
        } else {
            o[1] = (char)k;
            b->len += 2;
        }
        run = ++s;
    }
}
