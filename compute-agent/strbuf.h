/* A growable string for building XML, JSON and command lines.  Allocation
 * failure aborts, as with arenas: a half-built document is of no use. */
#ifndef NIMBUS_AGENT_STRBUF_H
#define NIMBUS_AGENT_STRBUF_H

#include <stddef.h>

struct strbuf {
    char *s;       /* NUL-terminated; NULL until something is added. */
    size_t len, cap;
};

void sb_add(struct strbuf *b, const char *s);
void sb_printf(struct strbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Adds 's' with XML's five special characters escaped. */
void sb_add_xml(struct strbuf *b, const char *s);
/* Returns the string (never NULL) and gives up ownership to the caller. */
char *sb_steal(struct strbuf *b);
void sb_free(struct strbuf *b);

/* snprintf for paths and names, telling truncation: returns 0, or
 * -ENAMETOOLONG when 'out' (cap bytes) was too small (it then holds a
 * truncated string).  Not inline, so GCC's -Wformat-truncation leaves the
 * checking to the caller's return value test. */
int bfmt(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
