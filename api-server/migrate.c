#include "migrate.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

/* An arbitrary constant: the advisory lock that serialises concurrent
 * 'db sync' runs. */
#define MIGRATE_LOCK_KEY "7263512099"

static void
set_msg(char **errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
set_msg(char **errmsg, const char *fmt, ...)
{
    if (!errmsg)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(errmsg, fmt, ap) < 0)
        *errmsg = NULL;
    va_end(ap);
}

static int
exec0(struct db_conn *c, const char *sql, char **errmsg)
{
    struct db_error err;
    int rc = db_sync_exec(c, sql, 0, NULL, NULL, &err);
    if (rc < 0)
        set_msg(errmsg, "%s: %s", sql, err.message ? err.message : "failed");
    return rc;
}

int
migrate_current(struct db_conn *c, int *version, char **errmsg)
{
    int rc = exec0(c, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                      " version integer PRIMARY KEY,"
                      " name text NOT NULL,"
                      " applied_at timestamptz NOT NULL DEFAULT now())", errmsg);
    if (rc < 0)
        return rc;
    db_result *r = NULL;
    struct db_error err;
    rc = db_sync_exec(c, "SELECT coalesce(max(version), 0) FROM schema_migrations",
                      0, NULL, &r, &err);
    if (rc < 0) {
        set_msg(errmsg, "reading schema_migrations: %s", err.message);
        return rc;
    }
    *version = atoi(db_get(r, 0, 0));
    db_result_free(r);
    return 0;
}

int
migrate_sync(struct db_conn *c, FILE *log, char **errmsg)
{
    int rc = exec0(c, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", errmsg);
    if (rc < 0)
        return rc;
    int current = 0;
    rc = migrate_current(c, &current, errmsg);
    if (rc < 0)
        goto out;
    int latest = migrations_count ? migrations[migrations_count - 1].version : 0;
    if (current > latest) {
        set_msg(errmsg, "the database schema is at version %d but this "
                "code knows only up to %d: refusing to touch a newer "
                "database (upgrade Nimbus first)", current, latest);
        rc = -ESTALE;
        goto out;
    }
    for (int i = 0; i < migrations_count; i++) {
        const struct migration *m = &migrations[i];
        if (m->version <= current)
            continue;
        struct db_error err;
        char vbuf[16];
        snprintf(vbuf, sizeof vbuf, "%d", m->version);
        const char *params[] = { vbuf, m->name };
        if ((rc = exec0(c, "BEGIN", errmsg)) < 0)
            goto out;
        rc = db_sync_exec_script(c, m->sql, &err);
        if (rc == 0)
            rc = db_sync_exec(c, "INSERT INTO schema_migrations (version, name) "
                              "VALUES ($1::integer, $2)", 2, params, NULL, &err);
        if (rc < 0) {
            set_msg(errmsg, "migration %04d_%s failed: %s", m->version,
                    m->name, err.message ? err.message : "error");
            (void)exec0(c, "ROLLBACK", NULL);
            goto out;
        }
        if ((rc = exec0(c, "COMMIT", errmsg)) < 0)
            goto out;
        if (log)
            fprintf(log, "applied migration %04d_%s\n", m->version, m->name);
    }
    if (log)
        fprintf(log, "database schema at version %d\n", latest);
    rc = 0;
out:
    (void)exec0(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", NULL);
    return rc;
}

int
migrate_check(struct db_conn *c, char **errmsg)
{
    int current = 0;
    int rc = migrate_current(c, &current, errmsg);
    if (rc < 0)
        return rc;
    int latest = migrations_count ? migrations[migrations_count - 1].version : 0;
    if (current > latest) {
        set_msg(errmsg, "database schema version %d is newer than this code "
                "(%d)", current, latest);
        return -ESTALE;
    }
    if (current < latest) {
        set_msg(errmsg, "database schema version %d is older than this code "
                "(%d): run 'nimbus-manage db sync'", current, latest);
        return -ESTALE;
    }
    return 0;
}
