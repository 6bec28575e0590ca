/* nimbus-manage identity commands: token keys and the bootstrap of the
 * first admin and the service catalog (as keystone-manage bootstrap). */
#include <errno.h>
#include <stdbool.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "auth_keys.h"
#include "auth_password.h"
#include "db.h"
#include "manage.h"
#include "manage_node.h"
#include "util.h"

const char *
manage_extra_usage(void)
{
    static char text[2048];
    snprintf(text, sizeof text, "%s%s",
           "  keys setup         create the token signing key directory ([identity] key_dir)\n"
           "  keys rotate [--max-keys N]\n"
           "                     add a new primary signing key, keep at most N (default 3)\n"
           "  bootstrap --password PW [--username admin] [--project admin] [--role admin]\n"
           "            [--region RegionOne] [--public-host HOST] [--image-url URL]\n"
           "                     create the admin user, project and roles and the service\n"
           "                     catalog; safe to run again (resets the admin password)\n",
             manage_node_usage());
    return text;
}

static int
cmd_keys(const struct conf *conf, int argc, char **argv)
{
    const char *dir = conf_str(conf, "identity", "key_dir");
    int rc;
    if (argc >= 2 && !strcmp(argv[1], "setup")) {
        rc = auth_keys_setup(dir);
    } else if (argc >= 2 && !strcmp(argv[1], "rotate")) {
        unsigned max = 3;
        if (argc == 4 && !strcmp(argv[2], "--max-keys"))
            max = (unsigned)strtoul(argv[3], NULL, 10);
        if (max < 2) {
            fprintf(stderr, "nimbus-manage: --max-keys must be at least 2\n");
            return 2;
        }
        rc = auth_keys_rotate(dir, max);
    } else {
        fprintf(stderr, "usage: nimbus-manage keys setup|rotate [--max-keys N]\n");
        return 2;
    }
    if (rc < 0) {
        fprintf(stderr, "nimbus-manage: keys in %s: %s\n", dir, strerror(-rc));
        return 1;
    }
    struct auth_keyset *ks;
    if (auth_keys_load(dir, &ks) == 0) {
        char kid[AUTH_KEY_ID_STR_SIZE];
        if (auth_keyset_primary_id(ks, kid) == 0)
            printf("%zu key(s) in %s; primary key id %s\n", auth_keyset_count(ks), dir, kid);
        auth_keyset_free(ks);
    }
    return 0;
}

static int
run(db_conn *c, const char *sql, int n, const char *const *p)
{
    struct db_error err;
    int rc = db_sync_exec(c, sql, n, p, NULL, &err);
    if (rc < 0)
        fprintf(stderr, "nimbus-manage: bootstrap failed: %s\n", err.message ? err.message : "?");
    return rc;
}

/* Returns the id of the row found by 'select' ($1 = key), inserting it with
 * 'insert' ($1 = new id, $2 = key, $3 = extra) when missing. */
static int
ensure(db_conn *c, const char *select, const char *insert, const char *key,
       const char *extra, char out[65])
{
    db_result *r = NULL;
    struct db_error err;
    const char *p1[] = { key };
    int rc = db_sync_exec(c, select, 1, p1, &r, &err);
    if (rc < 0) {
        fprintf(stderr, "nimbus-manage: bootstrap failed: %s\n", err.message);
        return rc;
    }
    if (db_rows(r) > 0) {
        snprintf(out, 65, "%s", db_get(r, 0, 0));
        db_result_free(r);
        return 0;
    }
    db_result_free(r);
    char id[33];
    util_uuid4_hex(id);
    const char *p3[] = { id, key, extra };
    if ((rc = run(c, insert, 3, p3)) < 0)
        return rc;
    snprintf(out, 65, "%s", id);
    return 0;
}

struct service_def {
    const char *type, *name, *port_option, *path;
};

static int
cmd_bootstrap(const struct conf *conf, int argc, char **argv)
{
    const char *password = getenv("NIMBUS_BOOTSTRAP_PASSWORD");
    const char *username = "admin", *project = "admin", *role = "admin";
    const char *region = conf_str(conf, "identity", "region");
    const char *host = conf_str(conf, "api", "public_host");
    const char *image_url = NULL;
    static const struct option longopts[] = {
        { "password", required_argument, NULL, 'p' },
        { "username", required_argument, NULL, 'u' },
        { "project", required_argument, NULL, 'P' },
        { "role", required_argument, NULL, 'r' },
        { "region", required_argument, NULL, 'R' },
        { "public-host", required_argument, NULL, 'H' },
        { "image-url", required_argument, NULL, 'i' },
        { NULL, 0, NULL, 0 },
    };
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'p': password = optarg; break;
        case 'u': username = optarg; break;
        case 'P': project = optarg; break;
        case 'r': role = optarg; break;
        case 'R': region = optarg; break;
        case 'H': host = optarg; break;
        case 'i': image_url = optarg; break;
        default:
            fprintf(stderr, "%s", manage_extra_usage());
            return 2;
        }
    }
    if (!password || !*password) {
        fprintf(stderr, "nimbus-manage: bootstrap needs --password (or "
                "NIMBUS_BOOTSTRAP_PASSWORD)\n");
        return 2;
    }
    if (!*host) {
        host = conf_str(conf, "api", "host");
        if (!strcmp(host, "0.0.0.0") || !strcmp(host, "::"))
            host = "127.0.0.1";
    }
    if (auth_init() < 0)
        return 1;
    struct auth_password *hasher;
    struct auth_password_params pp = {
        .opslimit = (unsigned long long)conf_int(conf, "identity", "password_opslimit"),
        .memlimit = (size_t)conf_int(conf, "identity", "password_memlimit_kib") * 1024u,
    };
    if (auth_password_new(&pp, &hasher) < 0) {
        fprintf(stderr, "nimbus-manage: bad password hashing parameters\n");
        return 1;
    }
    char hash[AUTH_PASSWORD_HASH_SIZE];
    int rc = auth_password_hash(hasher, password, strlen(password), hash);
    auth_password_free(hasher);
    if (rc < 0) {
        fprintf(stderr, "nimbus-manage: the password cannot be used\n");
        return 1;
    }
    db_conn *c;
    if (manage_connect(conf, &c) < 0)
        return 1;
    char project_id[65], user_id[65], role_id[65], tmp[65];
    if ((rc = run(c, "BEGIN", 0, NULL)) < 0)
        goto out;
    /* The three standard roles, as keystone-manage bootstrap creates. */
    static const char *const std_roles[] = { "reader", "member", "admin" };
    for (size_t i = 0; i < ARRAY_SIZE(std_roles); i++)
        if ((rc = ensure(c, "SELECT id FROM roles WHERE name = $1",
                         "INSERT INTO roles (id, name) SELECT $1, $2 WHERE $3::text IS NULL",
                         std_roles[i], NULL, tmp)) < 0)
            goto rollback;
    if ((rc = ensure(c, "SELECT id FROM roles WHERE name = $1",
                     "INSERT INTO roles (id, name) SELECT $1, $2 WHERE $3::text IS NULL",
                     role, NULL, role_id)) < 0)
        goto rollback;
    if ((rc = ensure(c, "SELECT id FROM projects WHERE name = $1 AND domain_id = 'default'",
                     "INSERT INTO projects (id, name, domain_id, description) "
                     "SELECT $1, $2, 'default', coalesce($3, 'Bootstrap project')",
                     project, NULL, project_id)) < 0)
        goto rollback;
    if ((rc = ensure(c, "SELECT id FROM users WHERE name = $1 AND domain_id = 'default'",
                     "INSERT INTO users (id, name, domain_id, password_hash) "
                     "SELECT $1, $2, 'default', $3", username, hash, user_id)) < 0)
        goto rollback;
    const char *pu[] = { user_id, hash };
    if ((rc = run(c, "UPDATE users SET password_hash = $2, enabled = true WHERE id = $1",
                  2, pu)) < 0)
        goto rollback;
    const char *pa[] = { user_id, project_id, role_id };
    if ((rc = run(c, "INSERT INTO role_assignments (user_id, target_type, target_id, role_id) "
                     "VALUES ($1, 'project', $2, $3) ON CONFLICT DO NOTHING", 3, pa)) < 0)
        goto rollback;
    const char *pd[] = { user_id, role_id };
    if ((rc = run(c, "INSERT INTO role_assignments (user_id, target_type, target_id, role_id) "
                     "VALUES ($1, 'domain', 'default', $2) ON CONFLICT DO NOTHING", 2, pd)) < 0)
        goto rollback;
    const char *pr[] = { region };
    if ((rc = run(c, "INSERT INTO regions (id) VALUES ($1) ON CONFLICT DO NOTHING", 1, pr)) < 0)
        goto rollback;

    static const struct service_def services[] = {
        { "identity", "keystone", "identity_port", "/v3" },
        { "compute", "nova", "compute_port", "/v2.1" },
        { "network", "neutron", "network_port", "" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(services) + 1; i++) {
        const char *type, *name;
        char url[512];
        if (i < ARRAY_SIZE(services)) {
            type = services[i].type;
            name = services[i].name;
            bool v6 = strchr(host, ':') != NULL;
            snprintf(url, sizeof url, "http://%s%s%s:%ld%s", v6 ? "[" : "", host,
                     v6 ? "]" : "", conf_int(conf, "api", services[i].port_option),
                     services[i].path);
        } else {
            if (!image_url)
                break;
            type = "image";
            name = "glance";
            snprintf(url, sizeof url, "%s", image_url);
        }
        char service_id[65];
        if ((rc = ensure(c, "SELECT id FROM services WHERE type = $1",
                         "INSERT INTO services (id, type, name) VALUES ($1, $2, $3)",
                         type, name, service_id)) < 0)
            goto rollback;
        static const char *const ifaces[] = { "public", "internal", "admin" };
        for (size_t j = 0; j < ARRAY_SIZE(ifaces); j++) {
            char eid[33];
            util_uuid4_hex(eid);
            const char *pe[] = { eid, service_id, ifaces[j], region, url };
            if ((rc = run(c, "INSERT INTO endpoints (id, service_id, interface, region_id, url) "
                             "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (service_id, interface, region_id) "
                             "DO UPDATE SET url = EXCLUDED.url, enabled = true", 5, pe)) < 0)
                goto rollback;
        }
    }
    if ((rc = run(c, "COMMIT", 0, NULL)) < 0)
        goto out;
    printf("bootstrap done: user %s (%s), project %s (%s), role %s, region %s\n",
           username, user_id, project, project_id, role, region);
    goto out;
rollback:
    (void)run(c, "ROLLBACK", 0, NULL);
out:
    db_sync_close(c);
    return rc < 0 ? 1 : 0;
}

int
manage_extra_command(const struct conf *conf, int argc, char **argv)
{
    if (!strcmp(argv[0], "keys")) {
        if (auth_init() < 0)
            return 1;
        return cmd_keys(conf, argc, argv);
    }
    if (!strcmp(argv[0], "bootstrap"))
        return cmd_bootstrap(conf, argc, argv);
    if (!strcmp(argv[0], "node"))
        return manage_node_command(conf, argc, argv);
    fprintf(stderr, "nimbus-manage: unknown command '%s' (see 'nimbus-manage help')\n", argv[0]);
    return 2;
}
