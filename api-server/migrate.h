/* Schema migrations: numbered SQL files (migrations/NNNN_name.sql) compiled
 * into the binary, applied in order, each in its own transaction, and
 * recorded in the table schema_migrations.  A database whose schema is
 * newer than the code is refused. */
#ifndef NIMBUS_MIGRATE_H
#define NIMBUS_MIGRATE_H

#include <stdio.h>

struct migration {
    int version;
    const char *name;
    const char *sql;
};

extern const struct migration migrations[];
extern const int migrations_count;

struct db_conn;

/* Applies every missing migration.  Progress goes to 'log' (may be NULL).
 * Returns 0, -ESTALE when the database is newer than the code, or another
 * negative errno; *errmsg (malloc'd, caller frees) says why. */
int migrate_sync(struct db_conn *c, FILE *log, char **errmsg)
    __attribute__((warn_unused_result));

/* Reads the applied schema version (0 for an empty database). */
int migrate_current(struct db_conn *c, int *version, char **errmsg)
    __attribute__((warn_unused_result));

/* Checks at daemon start-up that the schema is exactly the code's. */
int migrate_check(struct db_conn *c, char **errmsg)
    __attribute__((warn_unused_result));

#endif
