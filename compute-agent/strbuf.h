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

#endif
