/* Where nimbus-network gets the desired state of its node, until the agent
 * channel exists: the Network API, polled with an administrator's
 * credentials.
 *
 *   GET /v2.0/ports?binding:host_id=<host>         the ports to wire here
 *   GET /v2.0/networks?id=...                        their VNI and MTU
 *   GET /v2.0/ports?network_id=...                   other hosts on them;
 *       a host's VTEP address is the "vtep_ip" key its agent writes into
 *       the binding:profile of the ports it wires
 *   PUT /v2.0/ports/{id} {"port": {"status": "ACTIVE", "binding:profile"}}
 *       once a port is wired
 *
 * Calls block (libcurl easy interface); the daemon is a simple loop. */
#ifndef NIMBUS_NETAGENT_API_H
#define NIMBUS_NETAGENT_API_H

#include <jansson.h>

struct na_api_config {
    const char *network_url;       /* "http://ctl:9696" */
    const char *auth_url;          /* "http://ctl:5000/v3" */
    const char *username, *password, *project;
    const char *user_domain, *project_domain;
    const char *host;              /* This node's binding:host_id. */
    const char *local_ip;          /* This node's VTEP address. */
    long timeout_ms;
};

struct na_api;

int na_api_new(const struct na_api_config *cfg, struct na_api **out)
    __attribute__((warn_unused_result));
void na_api_free(struct na_api *api);

/* Builds the desired-state document of this node (the format of
 * na_desired_parse()): the ports bound here, and the ports moving here
 * live (binding:profile.migrating_to is this node), marked "arriving":
 * true.  *out is a new reference.  Returns 0 or a negative
 * errno with a message in 'err'. */
int na_api_desired(struct na_api *api, json_t **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Reports the ports of 'doc' as wired: status ACTIVE and this node's VTEP in
 * binding:profile, for those not already so; arriving ports are not
 * reported (they are still bound to the source).  Returns the number of
 * failures (0 when all went through). */
int na_api_report(struct na_api *api, const json_t *doc, char *err, size_t errlen);

#endif
