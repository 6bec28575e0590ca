/* nimbus-manage node: compute node credentials (manage_node.c). */
#ifndef NIMBUS_MANAGE_NODE_H
#define NIMBUS_MANAGE_NODE_H

#include "manage.h"

/* Usage lines of the node commands. */
const char *manage_node_usage(void);

/* Runs "node VERB ..." (argv[0] is "node"); returns the exit status. */
int manage_node_command(const struct conf *conf, int argc, char **argv);

#endif
