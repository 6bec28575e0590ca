#include "img_hash.h"

#include <errno.h>
#include <stdlib.h>

#include <openssl/evp.h>

struct img_hash {
    EVP_MD_CTX *ctx;
};

int
img_hash_new(enum img_hash_algo algo, struct img_hash **out)
{
    struct img_hash *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->ctx = EVP_MD_CTX_new();
    const EVP_MD *md = algo == IMG_HASH_MD5 ? EVP_md5() : EVP_sha512();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, md, NULL) != 1) {
        img_hash_free(h);
        return -ENOMEM;
    }
    *out = h;
    return 0;
}

void
img_hash_update(struct img_hash *h, const void *data, size_t len)
{
    if (len)
        EVP_DigestUpdate(h->ctx, data, len);
}

void
img_hash_final_hex(struct img_hash *h, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_DigestFinal_ex(h->ctx, md, &n);
    size_t o = 0;
    for (unsigned i = 0; i < n && o + 2 < outlen; i++) {
        out[o++] = hex[md[i] >> 4];
        out[o++] = hex[md[i] & 15];
    }
    if (outlen)
        out[o < outlen ? o : outlen - 1] = '\0';
}

void
img_hash_free(struct img_hash *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}
