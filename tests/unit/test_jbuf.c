/* lib/jbuf.c: the JSON string escaper writes what jansson's json_dumps()
 * writes for the same string, and refuses what jansson refuses (strings
 * that are not UTF-8).  Every string of one and two bytes, three- and
 * four-byte strings built around the UTF-8 boundaries, and random strings
 * (seed printed; NIMBUS_TEST_SEED replays one) are compared. */
#include "jbuf.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../check.h"

static unsigned long compared, refused;

/* Compares the escaper with jansson on s[0..len) (no NUL inside). */
static void
compare(const char *s, size_t len)
{
    char *z = malloc(len + 1);
    if (!z)
        abort();
    memcpy(z, s, len);
    z[len] = '\0';
    struct jbuf b = { 0 };
    jb_str(&b, z);
    json_t *j = json_stringn(z, len);
    if (j) {
        char *want = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
        if (jb_error(&b) || !want || strlen(want) != b.len || memcmp(want, b.p, b.len)) {
            fprintf(stderr, "differs for");
            for (size_t i = 0; i < len; i++)
                fprintf(stderr, " %02x", (unsigned char)z[i]);
            fprintf(stderr, ": jansson %s, jbuf %.*s (error %d)\n", want ? want : "(null)",
                    (int)b.len, b.p ? b.p : "", jb_error(&b));
            check_failures++;
        }
        free(want);
        json_decref(j);
        compared++;
    } else {
        /* jansson refuses the string, and would refuse to write it. */
        json_t *n = json_stringn_nocheck(z, len);
        char *dump = n ? json_dumps(n, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        CHECK(dump == NULL);
        free(dump);
        json_decref(n);
        struct jbuf e = { 0 };
        if (jb_esc(&e, z) != -EILSEQ || jb_error(&b) != -EILSEQ) {
            fprintf(stderr, "accepted, jansson refuses:");
            for (size_t i = 0; i < len; i++)
                fprintf(stderr, " %02x", (unsigned char)z[i]);
            fprintf(stderr, "\n");
            check_failures++;
        }
        jb_free(&e);
        refused++;
    }
    jb_free(&b);
    free(z);
}

static uint64_t rng;

static uint32_t
next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* Appends the UTF-8 form of 'cp' (surrogates and values above U+10FFFF
 * too, which make invalid strings) to 'o'; returns the bytes written. */
static size_t
put_cp(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18 & 0x07));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A random string of up to 48 pieces: mostly ASCII, with control
 * characters, quotes and backslashes, valid UTF-8 of every length, and
 * now and then a surrogate, a code point above U+10FFFF, an overlong form,
 * a lone byte at or above 0x80 or a truncated sequence. */
static size_t
random_string(char *o)
{
    size_t n = 0, pieces = next() % 48;
    for (size_t i = 0; i < pieces; i++) {
        uint32_t r = next() % 100;
        if (r < 50)
            o[n++] = (char)(0x20 + next() % 0x5f);
        else if (r < 62)
            o[n++] = (char)(1 + next() % 0x1f);
        else if (r < 66)
            o[n++] = next() % 2 ? '"' : '\\';
        else if (r < 74)
            n += put_cp(o + n, 0x80 + next() % (0x800 - 0x80));
        else if (r < 82) {
            uint32_t cp = 0x800 + next() % (0x10000 - 0x800);
            if (cp >= 0xd800 && cp < 0xe000 && next() % 4)
                cp -= 0x800;
            n += put_cp(o + n, cp);
        } else if (r < 88)
            n += put_cp(o + n, 0x10000 + next() % (0x110000 - 0x10000));
        else if (r < 90 && next() % 8 == 0)
            n += put_cp(o + n, 0xd800 + next() % 0x800);
        else if (r < 92 && next() % 8 == 0)
            n += put_cp(o + n, 0x110000 + next() % 0x10000);
        else if (r < 94 && next() % 8 == 0) {
            o[n++] = (char)(0xc0 | (next() % 2));             /* Overlong. */
            o[n++] = (char)(0x80 | (next() % 0x40));
        } else if (r < 96 && next() % 8 == 0)
            o[n++] = (char)(0x80 + next() % 0x80);            /* A lone high byte. */
        else if (r < 98 && next() % 8 == 0) {
            char seq[4];
            size_t k = put_cp(seq, 0x800 + next() % 0x10f800);
            size_t cut = 1 + next() % (k - 1);                /* Truncated. */
            memcpy(o + n, seq, cut);
            n += cut;
        } else
            o[n++] = (char)(0x20 + next() % 0x5f);
    }
    return n;
}

int
main(void)
{
    char s[4 * 48 + 4];

    /* Every one- and two-byte string. */
    for (int a = 1; a < 256; a++) {
        s[0] = (char)a;
        compare(s, 1);
        for (int c = 1; c < 256; c++) {
            s[1] = (char)c;
            compare(s, 2);
        }
    }
    /* Three- and four-byte strings: every lead byte at or above 0xc0 with
     * the bytes around the continuation range's edges. */
    static const unsigned char edge[] = {
        0x01, 0x22, 0x5c, 0x7f, 0x80, 0x81, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc2, 0xf4, 0xff,
    };
    size_t ne = sizeof edge;
    for (int a = 0xc0; a < 256; a++)
        for (size_t i = 0; i < ne; i++)
            for (size_t k = 0; k < ne; k++) {
                s[0] = (char)a;
                s[1] = (char)edge[i];
                s[2] = (char)edge[k];
                compare(s, 3);
                for (size_t m = 0; m < ne; m++) {
                    s[3] = (char)edge[m];
                    compare(s, 4);
                }
            }
    /* Boundary code points. */
    static const uint32_t cps[] = {
        0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0xe000, 0xfffd,
        0xfffe, 0xffff, 0x10000, 0x10ffff, 0x110000, 0x1fffff,
    };
    for (size_t i = 0; i < sizeof cps / sizeof cps[0]; i++) {
        size_t n = put_cp(s, cps[i]);
        s[n] = 'x';
        compare(s, n + 1);
    }

    const char *seed = getenv("NIMBUS_TEST_SEED");
    rng = seed ? strtoull(seed, NULL, 0) : (uint64_t)time(NULL) * 2654435761u;
    if (!rng)
        rng = 1;
    printf("seed %llu (NIMBUS_TEST_SEED replays it)\n", (unsigned long long)rng);
    for (int i = 0; i < 200000; i++)
        compare(s, random_string(s));

    /* A long string: the buffer grows past its first 64 KiB. */
    size_t big = 300000;
    char *l = malloc(big + 1);
    if (!l)
        abort();
    for (size_t i = 0; i < big; i++)
        l[i] = (char)(i % 7 ? 'a' + i % 26 : '\n');
    compare(l, big);
    free(l);

    /* The error stays on the buffer; what came before the bad byte is
     * written. */
    struct jbuf b = { 0 };
    jb_lit(&b, "[");
    CHECK_INT(jb_esc(&b, "ok\xff" "rest"), -EILSEQ);
    CHECK_INT(jb_error(&b), -EILSEQ);
    CHECK_INT(b.len, 3);
    CHECK(!memcmp(b.p, "[ok", 3));
    jb_str(&b, "x");
    CHECK_INT(jb_error(&b), -EILSEQ);
    jb_free(&b);
    jb_free(&b);            /* Twice: NULL-safe. */

    printf("%lu strings compared with jansson, %lu refused by both\n", compared, refused);
    CHECK(compared > 100000 && refused > 1000);
    return check_exit();
}
