/* Declarations shared between the auth/ modules and their tests, not part
 * of the library's interface: the API server includes the public headers
 * only. */
#ifndef NIMBUS_AUTH_INTERNAL_H
#define NIMBUS_AUTH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

struct auth_keyset;
struct auth_token;

#define AUTH_KEY_ID_LEN 8

/* Returns the 32-byte public key whose id is 'kid', or NULL.  The key set
 * keeps ownership. */
const uint8_t *auth_keyset_find_pk(const struct auth_keyset *ks,
                                   const uint8_t kid[AUTH_KEY_ID_LEN]);

/* Points '*kid' and '*sk' at the primary key's id and 64-byte secret key,
 * owned by the key set.  Returns 0 or -ENOKEY. */
int auth_keyset_signer(const struct auth_keyset *ks, const uint8_t **kid,
                       const uint8_t **sk)
    __attribute__((warn_unused_result));

/* A number unique to this loaded key set within the process, so that caches
 * of verified tokens can tell when the key set changed. */
uint64_t auth_keyset_serial(const struct auth_keyset *ks);

/* Parses a token payload (the signed bytes, signature excluded) into 'out',
 * without checking signature or expiry.  Strict: every length is checked and
 * trailing bytes are refused.  Returns 0 or -EINVAL.  Exposed for the fuzz
 * target and tests. */
int auth_token_payload_parse(const uint8_t *p, size_t len,
                             struct auth_token *out)
    __attribute__((warn_unused_result));

/* Encodes 'tok' as a payload into 'buf' ('cap' bytes) with key id 'kid',
 * setting '*len'.  Returns 0, -EINVAL for an invalid token, -E2BIG when it
 * does not fit. */
int auth_token_payload_encode(const struct auth_token *tok,
                              const uint8_t kid[AUTH_KEY_ID_LEN],
                              uint8_t *buf, size_t cap, size_t *len)
    __attribute__((warn_unused_result));

#endif
