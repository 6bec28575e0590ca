#include "compute_version.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"

/* Parses "2.15" into major/minor; returns 0 or -EINVAL. */
static int
parse_version(const char *s, long *major, long *minor)
{
    while (isspace((unsigned char)*s))
        s++;
    if (!strcasecmp(s, "latest")) {
        *major = 2;
        *minor = 1;
        return 0;
    }
    char *end;
    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    *major = strtol(s, &end, 10);
    if (*end != '.' || !isdigit((unsigned char)end[1]))
        return -EINVAL;
    *minor = strtol(end + 1, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    if (*end || *major > 100000 || *minor > 100000)
        return -EINVAL;
    return 0;
}

/* Finds the "compute X" item of an OpenStack-API-Version header, which may
 * list several services separated by commas.  Returns NULL when absent. */
static const char *
find_compute_item(const char *hdr, char *buf, size_t buflen)
{
    const char *p = hdr;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > 8 && !strncasecmp(p, "compute ", 8)) {
            n -= 8;
            if (n >= buflen)
                n = buflen - 1;
            memcpy(buf, p + 8, n);
            buf[n] = '\0';
            return buf;
        }
        p += n;
    }
    return NULL;
}

int
compute_version_check(http_request *req)
{
    http_resp_header(req, "OpenStack-API-Version", "compute " COMPUTE_MAX_MICROVERSION);
    http_resp_header(req, "X-OpenStack-Nova-API-Version", COMPUTE_MAX_MICROVERSION);
    http_resp_header(req, "Vary", "OpenStack-API-Version, X-OpenStack-Nova-API-Version");

    char buf[64];
    const char *v = NULL;
    const char *h = http_req_header(req, "openstack-api-version");
    if (h)
        v = find_compute_item(h, buf, sizeof buf);
    if (!v)
        v = http_req_header(req, "x-openstack-nova-api-version");
    if (!v)
        return 0;
    long major, minor;
    if (parse_version(v, &major, &minor) < 0) {
        api_error(req, 400, "Invalid API version request string %.40s.", v);
        return -EINVAL;
    }
    if (major != 2 || minor != 1) {
        api_error(req, 406, "Version %ld.%ld is not supported by the API. "
                  "Minimum is %s and maximum is %s.", major, minor,
                  COMPUTE_MIN_MICROVERSION, COMPUTE_MAX_MICROVERSION);
        return -ENOTSUP;
    }
    return 0;
}
