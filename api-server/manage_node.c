/* nimbus-manage node: compute node credentials for the agent channel
 * (docs/agent-channel.md).  A credential is 256 random bits, shown once (or
 * written to a file readable only by its owner); the database keeps its
 * SHA-256, computed by PostgreSQL so that no hashing code is needed here. */
#include "manage_node.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

const char *
manage_node_usage(void)
{
    return "  node add NAME [--output FILE]\n"
           "                     create the agent credential of compute node NAME and\n"
           "                     print it once (or write it to FILE, mode 0600)\n"
           "  node rotate NAME [--output FILE]\n"
           "                     replace the credential of NAME (the old one stops working)\n"
           "  node revoke NAME   disable the credential of NAME\n"
           "  node list          the nodes with a credential\n";
}

static int
exec1(db_conn *c, const char *sql, int n, const char *const *p, db_result **out)
{
    struct db_error err;
    int rc = db_sync_exec(c, sql, n, p, out, &err);
    if (rc < 0)
        fprintf(stderr, "nimbus-manage: node: %s\n", err.message ? err.message : strerror(-rc));
    return rc;
}

/* Writes the credential to 'path' (created 0600, replaced if present) or to
 * stdout when 'path' is NULL. */
static int
emit(const char *path, const char *name, const char *secret)
{
    if (!path) {
        printf("node %s credential (shown once): %s\n", name, secret);
        return 0;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "nimbus-manage: %s: %s\n", path, strerror(errno));
        return -errno;
    }
    char line[80];
    int n = snprintf(line, sizeof line, "%s\n", secret);
    bool ok = write(fd, line, (size_t)n) == n;
    ok = close(fd) == 0 && ok;
    if (!ok) {
        fprintf(stderr, "nimbus-manage: cannot write %s\n", path);
        return -EIO;
    }
    printf("node %s credential written to %s\n", name, path);
    return 0;
}

int
manage_node_command(const struct conf *conf, int argc, char **argv)
{
    const char *verb = argc >= 2 ? argv[1] : "";
    const char *name = argc >= 3 ? argv[2] : NULL;
    const char *output = NULL;
    bool needs_name = strcmp(verb, "list") != 0;
    if (argc == 5 && !strcmp(argv[3], "--output"))
        output = argv[4];
    else if (argc != (needs_name ? 3 : 2))
        goto usage;
    if (output && strcmp(verb, "add") && strcmp(verb, "rotate"))
        goto usage;
    if (strcmp(verb, "add") && strcmp(verb, "rotate") && strcmp(verb, "revoke") &&
        strcmp(verb, "list"))
        goto usage;
    if (needs_name && (!name[0] || strlen(name) > 255)) {
        fprintf(stderr, "nimbus-manage: a node name has 1 to 255 characters\n");
        return 2;
    }
    db_conn *c;
    if (manage_connect(conf, &c) < 0)
        return 1;
    int rc = 0;
    db_result *r = NULL;
    if (!strcmp(verb, "list")) {
        rc = exec1(c, "SELECT name, CASE WHEN revoked THEN 'revoked' ELSE 'active' END,"
                      " coalesce(to_char(last_seen, 'YYYY-MM-DD\"T\"HH24:MI:SS'), '-')"
                      " FROM agent_nodes ORDER BY name", 0, NULL, &r);
        for (int i = 0; rc == 0 && i < db_rows(r); i++)
            printf("%s %s %s\n", db_get(r, i, 0), db_get(r, i, 1), db_get(r, i, 2));
        goto out;
    }
    if (!strcmp(verb, "revoke")) {
        const char *p[] = { name };
        rc = exec1(c, "UPDATE agent_nodes SET revoked = true WHERE name = $1", 1, p, &r);
        if (rc == 0 && db_affected(r) < 1) {
            fprintf(stderr, "nimbus-manage: no node %s\n", name);
            rc = -ENOENT;
        } else if (rc == 0) {
            printf("node %s revoked\n", name);
        }
        goto out;
    }
    unsigned char rnd[32];
    char secret[65];
    util_random(rnd, sizeof rnd);
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(secret + 2 * i, 3, "%02x", rnd[i]);
    const char *p[] = { name, secret };
    if (!strcmp(verb, "add"))
        rc = exec1(c, "INSERT INTO agent_nodes (name, secret_hash, desired_version)"
                      " VALUES ($1, encode(sha256(convert_to($2::text, 'UTF8')), 'hex'),"
                      " nextval('agent_desired_seq')) ON CONFLICT (name) DO NOTHING",
                   2, p, &r);
    else
        rc = exec1(c, "UPDATE agent_nodes SET revoked = false,"
                      " secret_hash = encode(sha256(convert_to($2::text, 'UTF8')), 'hex')"
                      " WHERE name = $1", 2, p, &r);
    if (rc == 0 && db_affected(r) < 1) {
        fprintf(stderr, strcmp(verb, "add") ? "nimbus-manage: no node %s\n"
                        : "nimbus-manage: node %s exists (use 'node rotate')\n", name);
        rc = -EEXIST;
    }
    if (rc == 0)
        rc = emit(output, name, secret);
out:
    db_result_free(r);
    db_sync_close(c);
    return rc < 0 ? 1 : 0;
usage:
    fprintf(stderr, "usage:\n%s", manage_node_usage());
    return 2;
}
