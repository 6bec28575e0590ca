/* Small helpers shared by every daemon (libc only). */
#ifndef NIMBUS_UTIL_H
#define NIMBUS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Fills 'out' (37 bytes) with a random version-4 UUID in canonical form. */
void util_uuid4(char out[37]);
/* A version-4-shaped UUID from a fast per-thread generator seeded once from
 * the kernel: unique in practice but predictable to an observer, so only for
 * identifiers that grant nothing (request ids), never for secrets. */
void util_uuid4_fast(char out[37]);
/* Same without dashes (33 bytes), as Keystone ids look. */
void util_uuid4_hex(char out[33]);
/* True for a canonical 8-4-4-4-12 hex UUID (either case). */
bool util_is_uuid(const char *s);
/* Fills 'buf' with 'n' random bytes from the kernel. */
void util_random(void *buf, size_t n);

/* Monotonic clock in nanoseconds. */
uint64_t util_now_ns(void);
/* Wall clock as "2026-11-25T17:19:22.000000Z" (28 bytes with NUL). */
void util_iso8601(time_t t, long usec, char out[32]);
/* Current wall time in that form. */
void util_iso8601_now(char out[32]);

/* Percent-decodes 'in' (len bytes) into 'out' (len+1 bytes); '+' becomes a
 * space when 'plus_space'.  Returns the decoded length, or -EINVAL for a
 * malformed escape or an embedded NUL. */
long util_percent_decode(const char *in, size_t len, char *out, bool plus_space);

/* Constant-time comparison of two strings' bytes (length leaks). */
bool util_streq_ct(const char *a, const char *b);

#endif
