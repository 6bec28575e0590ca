/* Library initialisation. */
#include "auth.h"

#include <errno.h>

#include <sodium.h>

int
auth_init(void)
{
    /* sodium_init() returns 1 when it already ran, which is fine. */
    return sodium_init() < 0 ? -EIO : 0;
}
