/* Per-request memory arenas (nginx pools): many small allocations freed in
 * one call.  Allocation never fails in a recoverable way: out of memory
 * aborts, as every caller would otherwise have to unwind a half-built
 * response. */
#ifndef NIMBUS_ARENA_H
#define NIMBUS_ARENA_H

#include <stdarg.h>
#include <stddef.h>

struct arena;

/* Creates an arena whose first block holds 'first_block' bytes.  The caller
 * owns the arena and releases it with arena_free(). */
struct arena *arena_new(size_t first_block);

/* Frees the arena and everything allocated from it.  Accepts NULL. */
void arena_free(struct arena *a);

/* Drops every allocation but keeps the first block for reuse. */
void arena_reset(struct arena *a);

/* Returns 'n' bytes aligned for any type, owned by the arena. */
void *arena_alloc(struct arena *a, size_t n);
void *arena_zalloc(struct arena *a, size_t n);
char *arena_strdup(struct arena *a, const char *s);
char *arena_strndup(struct arena *a, const char *s, size_t n);
char *arena_memdup(struct arena *a, const void *p, size_t n);
char *arena_printf(struct arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
char *arena_vprintf(struct arena *a, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Bytes handed out so far (for tests and metrics). */
size_t arena_used(const struct arena *a);

#endif
