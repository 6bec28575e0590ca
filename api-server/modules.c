/* Registers the optional API modules that this build contains (each is a
 * directory under api-server/ with its own meson.build). */
#include "api.h"
#include "modules_config.h"

void
api_modules_register(struct api *a)
{
#if NIMBUS_HAVE_COMPUTE
    compute_register(a);
#endif
#if NIMBUS_HAVE_NETWORK
    network_register(a);
#endif
    (void)a;
}

void
api_modules_stop(struct api *a)
{
#if NIMBUS_HAVE_COMPUTE
    compute_stop(a);
#endif
    (void)a;
}

void
api_modules_free(struct api *a)
{
#if NIMBUS_HAVE_COMPUTE
    compute_free(a);
#endif
    (void)a;
}
