/* Streaming digests of image data: MD5 (Glance's "checksum") and SHA-512
 * (os_hash_value).  The only place in nimbus-image that includes OpenSSL.
 * The two digests are separate objects so that they can be updated on two
 * threads at once over the same bytes. */
#ifndef NIMBUS_IMG_HASH_H
#define NIMBUS_IMG_HASH_H

#include <stddef.h>

enum img_hash_algo { IMG_HASH_MD5, IMG_HASH_SHA512 };

struct img_hash;

/* Hex digest sizes, NUL included. */
#define IMG_MD5_HEX_SIZE 33
#define IMG_SHA512_HEX_SIZE 129

/* Starts a digest.  The caller owns '*out' (img_hash_free()).  Returns 0
 * or -ENOMEM. */
int img_hash_new(enum img_hash_algo algo, struct img_hash **out)
    __attribute__((warn_unused_result));
void img_hash_update(struct img_hash *h, const void *data, size_t len);
/* Writes the lower-case hex digest into 'out' (IMG_*_HEX_SIZE bytes); the
 * digest cannot be updated afterwards. */
void img_hash_final_hex(struct img_hash *h, char *out, size_t outlen);
/* Accepts NULL. */
void img_hash_free(struct img_hash *h);

#endif
