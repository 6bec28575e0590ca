/* nimbus-manage: operator commands that work on the database and key files
 * directly (schema migrations, token keys, bootstrap of the first admin and
 * the service catalog), like keystone-manage and nova-manage. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "manage.h"
#include "migrate.h"
#include "options.h"

static void
usage(FILE *out)
{
    fprintf(out,
        "usage: nimbus-manage [--config FILE] COMMAND\n"
        "Commands:\n"
        "  db sync            apply the schema migrations (idempotent)\n"
        "  db version         print the schema version of the database\n"
        "  config-example     print the example configuration file\n"
        "%s"
        "  help               this text\n", manage_extra_usage());
}

int
manage_connect(const struct conf *conf, db_conn **c)
{
    char *msg = NULL;
    int rc = db_sync_connect(conf_str(conf, "database", "connection"), c, &msg);
    if (rc < 0) {
        fprintf(stderr, "nimbus-manage: cannot connect to the database: %s\n",
                msg ? msg : strerror(-rc));
        free(msg);
    }
    return rc;
}

static int
cmd_db(const struct conf *conf, int argc, char **argv)
{
    if (argc != 1 || (strcmp(argv[0], "sync") && strcmp(argv[0], "version"))) {
        usage(stderr);
        return 2;
    }
    db_conn *c;
    if (manage_connect(conf, &c) < 0)
        return 1;
    char *msg = NULL;
    int rc;
    if (!strcmp(argv[0], "sync")) {
        rc = migrate_sync(c, stdout, &msg);
    } else {
        int v = 0;
        rc = migrate_current(c, &v, &msg);
        if (rc == 0)
            printf("%d\n", v);
    }
    db_sync_close(c);
    if (rc < 0) {
        fprintf(stderr, "nimbus-manage: %s\n", msg ? msg : strerror(-rc));
        free(msg);
        return 1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    const char *config = NULL;
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    /* '+': stop at the first command word, so commands keep their options. */
    while ((ch = getopt_long(argc, argv, "+c:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[0], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[0], "config-example")) {
        conf_write_example(api_options, api_options_count, stdout);
        return 0;
    }
    struct conf *conf = api_config_load(config);
    if (!conf)
        return 1;
    int rc;
    if (!strcmp(argv[0], "db"))
        rc = cmd_db(conf, argc - 1, argv + 1);
    else
        rc = manage_extra_command(conf, argc, argv);
    conf_free(conf);
    return rc;
}
