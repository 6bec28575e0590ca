/* nimbus-manage commands implemented in other files. */
#ifndef NIMBUS_MANAGE_H
#define NIMBUS_MANAGE_H

#include "conf.h"
#include "db.h"

/* Connects to the configured database, printing why on failure. */
int manage_connect(const struct conf *conf, db_conn **c)
    __attribute__((warn_unused_result));

/* Usage lines of the identity commands (keys, bootstrap). */
const char *manage_extra_usage(void);

/* Runs an identity command (argv[0] is the command word); returns the exit
 * status, 2 for an unknown command. */
int manage_extra_command(const struct conf *conf, int argc, char **argv);

#endif
