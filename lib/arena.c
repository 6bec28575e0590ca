#include "arena.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 16u

struct arena_block {
    struct arena_block *next;
    size_t size;
    size_t used;
    _Alignas(16) unsigned char data[];
};

struct arena {
    struct arena_block *head;   /* Current block; older ones follow. */
    struct arena_block *first;  /* Kept by arena_reset(). */
    size_t total;
};

static struct arena_block *
block_new(size_t size)
{
    struct arena_block *b = malloc(sizeof *b + size);
    if (!b) {
        fputs("nimbus: out of memory\n", stderr);
        abort();
    }
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

struct arena *
arena_new(size_t first_block)
{
    struct arena *a = malloc(sizeof *a);
    if (!a) {
        fputs("nimbus: out of memory\n", stderr);
        abort();
    }
    if (first_block < 256)
        first_block = 256;
    a->first = a->head = block_new(first_block);
    a->total = 0;
    return a;
}

void
arena_reset(struct arena *a)
{
    if (!a)
        return;
    struct arena_block *b = a->head;
    while (b && b != a->first) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = a->first;
    a->first->next = NULL;
    a->first->used = 0;
    a->total = 0;
}

void
arena_free(struct arena *a)
{
    if (!a)
        return;
    arena_reset(a);
    free(a->first);
    free(a);
}

void *
arena_alloc(struct arena *a, size_t n)
{
    size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need < n) {
        fputs("nimbus: arena allocation overflow\n", stderr);
        abort();
    }
    struct arena_block *b = a->head;
    if (b->size - b->used < need) {
        size_t size = b->size * 2;
        if (size < need)
            size = need;
        if (size > ((size_t)1 << 20) && need < ((size_t)1 << 20))
            size = (size_t)1 << 20;
        struct arena_block *nb = block_new(size < need ? need : size);
        nb->next = a->head;
        a->head = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->total += n;
    return p;
}

void *
arena_zalloc(struct arena *a, size_t n)
{
    void *p = arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

char *
arena_memdup(struct arena *a, const void *p, size_t n)
{
    char *d = arena_alloc(a, n + 1);
    if (n)
        memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

char *
arena_strndup(struct arena *a, const char *s, size_t n)
{
    return arena_memdup(a, s, strnlen(s, n));
}

char *
arena_strdup(struct arena *a, const char *s)
{
    return s ? arena_memdup(a, s, strlen(s)) : NULL;
}

char *
arena_vprintf(struct arena *a, const char *fmt, va_list ap)
{
    /* Most results are short: format once into a stack buffer and copy;
     * only longer ones are formatted a second time at their full size. */
    char small[512];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        n = 0;
    if ((size_t)n < sizeof small)
        return arena_memdup(a, small, (size_t)n);
    char *d = arena_alloc(a, (size_t)n + 1);
    vsnprintf(d, (size_t)n + 1, fmt, ap);
    return d;
}

char *
arena_printf(struct arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *d = arena_vprintf(a, fmt, ap);
    va_end(ap);
    return d;
}

size_t
arena_used(const struct arena *a)
{
    return a->total;
}
