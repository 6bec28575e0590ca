/* The auth library: passwords, signing keys, tokens, revocation, policy and
 * failed-login rate limiting.  It does no HTTP, no database access and no
 * logging; the API server feeds it data and acts on its answers.
 *
 * It is the only part of Nimbus that uses libsodium; no auth header includes
 * sodium.h, so callers never see it. */
#ifndef NIMBUS_AUTH_H
#define NIMBUS_AUTH_H

/* Initialises the cryptographic library.  Call once at start-up, before any
 * other auth_ function and before starting threads; further calls are
 * harmless.  Returns 0, or -EIO when no usable random source exists. */
int auth_init(void) __attribute__((warn_unused_result));

#endif
