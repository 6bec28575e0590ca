/* nimbus-scheduler: places build requests on compute hosts.  Several may
 * run at once against one database.  This file only parses the command
 * line and the configuration; see sched_daemon.c and sched_cycle.c. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "log.h"
#include "sched_daemon.h"
#include "sched_options.h"

#define DEFAULT_CONFIG "/etc/nimbus/nimbus.conf"

static void
usage(FILE *f)
{
    fprintf(f, "usage: nimbus-scheduler [--config FILE] [--once] [--config-example]\n"
               "  --config FILE     configuration file (default " DEFAULT_CONFIG ")\n"
               "  --once            place every waiting build request, then exit\n"
               "  --config-example  print the options with their defaults\n");
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "once", no_argument, NULL, 'o' },
        { "config-example", no_argument, NULL, 'x' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *path = DEFAULT_CONFIG;
    bool once = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 'o':
            once = true;
            break;
        case 'x':
            conf_write_example(sched_options, sched_options_count, stdout);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    struct conf *c = conf_new(sched_options, sched_options_count);
    char err[512];
    if (!c)
        return 1;
    if (sched_config_load(c, path, err, sizeof err) < 0) {
        fprintf(stderr, "configuration error: %s\n", err);
        conf_free(c);
        return 1;
    }
    enum log_level lvl;
    if (log_level_parse(conf_str(c, "log", "level"), &lvl) < 0) {
        fprintf(stderr, "configuration error: [log] level '%s'\n", conf_str(c, "log", "level"));
        conf_free(c);
        return 1;
    }
    log_init("nimbus-scheduler", lvl);
    int status = sched_daemon_run(c, once);
    conf_free(c);
    return status;
}
