/* Test helper: signs a token with the keys in a directory, with chosen
 * times, so tests can present expired tokens and tokens signed by keys the
 * server does not know.  Usage:
 *   mint_token KEYDIR USER_ID USER_DOMAIN PROJECT_ID PROJECT_DOMAIN ROLE_ID:ROLE_NAME ISSUED EXPIRES */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "auth_keys.h"
#include "auth_token.h"

int
main(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr, "usage: mint_token KEYDIR USER DOMAIN PROJECT PDOMAIN ROLEID:ROLENAME ISSUED EXPIRES\n");
        return 2;
    }
    if (auth_init() < 0)
        return 1;
    struct auth_keyset *ks;
    if (auth_keys_setup(argv[1]) < 0 || auth_keys_load(argv[1], &ks) < 0) {
        fprintf(stderr, "mint_token: cannot load keys from %s\n", argv[1]);
        return 1;
    }
    struct auth_token t;
    memset(&t, 0, sizeof t);
    snprintf(t.user_id, sizeof t.user_id, "%s", argv[2]);
    snprintf(t.user_domain_id, sizeof t.user_domain_id, "%s", argv[3]);
    t.scope = AUTH_SCOPE_PROJECT;
    snprintf(t.project_id, sizeof t.project_id, "%s", argv[4]);
    snprintf(t.project_domain_id, sizeof t.project_domain_id, "%s", argv[5]);
    char *colon = strchr(argv[6], ':');
    if (!colon)
        return 2;
    *colon = '\0';
    t.n_roles = 1;
    snprintf(t.roles[0].id, sizeof t.roles[0].id, "%s", argv[6]);
    snprintf(t.roles[0].name, sizeof t.roles[0].name, "%s", colon + 1);
    t.methods = AUTH_METHOD_PASSWORD;
    t.issued_at = strtoll(argv[7], NULL, 10);
    t.expires_at = strtoll(argv[8], NULL, 10);
    auth_token_audit_id_new(t.audit_id);
    char out[AUTH_TOKEN_STR_SIZE];
    int rc = auth_token_encode(ks, &t, out, sizeof out);
    auth_keyset_free(ks);
    if (rc < 0) {
        fprintf(stderr, "mint_token: encode failed: %d\n", rc);
        return 1;
    }
    puts(out);
    return 0;
}
