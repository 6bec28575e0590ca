/* Compute API microversions.  Nimbus implements exactly 2.1: requests
 * asking for more get 406, malformed version headers 400, and every answer
 * on a versioned compute path carries the version headers. */
#ifndef NIMBUS_COMPUTE_VERSION_H
#define NIMBUS_COMPUTE_VERSION_H

#include "http.h"

#define COMPUTE_MIN_MICROVERSION "2.1"
#define COMPUTE_MAX_MICROVERSION "2.1"

/* Reads OpenStack-API-Version ("compute 2.x") and
 * X-OpenStack-Nova-API-Version ("2.x", "latest"), adds the answer headers,
 * and returns 0 when the version is served; otherwise answers the request
 * (400 or 406) and returns a negative errno. */
int compute_version_check(http_request *req);

#endif
