/* Helpers shared by the auth unit tests: temporary directories and sample
 * tokens. */
#ifndef NIMBUS_TEST_AUTH_UTIL_H
#define NIMBUS_TEST_AUTH_UTIL_H

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth_token.h"

/* Creates a temporary directory; the name is written into 'path' (64
 * bytes).  Aborts on failure: a test cannot go on without it. */
static inline void
test_tmpdir(char path[64])
{
    snprintf(path, 64, "/tmp/nimbus-auth-test-XXXXXX");
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        abort();
    }
}

/* Removes a flat directory and its files. */
static inline void
test_rmdir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    char p[PATH_MAX];
    if (!d)
        return;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", path, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(path);
}

/* Fills 't' with a token of the given scope and 'role' (NULL for none),
 * issued at 'now' for an hour. */
static inline void
test_make_token(struct auth_token *t, enum auth_scope scope,
                const char *project_id, const char *role, long long now)
{
    memset(t, 0, sizeof *t);
    strcpy(t->user_id, "5f3c1a0b9e2d4c7fa1b2c3d4e5f60718");
    strcpy(t->user_domain_id, "default");
    strcpy(t->user_name, "alice");
    t->scope = scope;
    if (scope == AUTH_SCOPE_PROJECT) {
        strcpy(t->project_id, project_id);
        strcpy(t->project_domain_id, "default");
    } else if (scope == AUTH_SCOPE_DOMAIN) {
        strcpy(t->domain_id, "default");
    }
    if (role && scope != AUTH_SCOPE_UNSCOPED) {
        t->n_roles = 1;
        strcpy(t->roles[0].id, "0a1b2c3d4e5f60718293a4b5c6d7e8f9");
        strcpy(t->roles[0].name, role);
    }
    t->methods = AUTH_METHOD_PASSWORD;
    t->issued_at = now;
    t->expires_at = now + 3600;
    auth_token_audit_id_new(t->audit_id);
}

#endif
