/* Integration tests of the PostgreSQL module against a real server.
 *
 *   test_db TEST      TEST is one of the names in tests[] below.
 *
 * The server comes from NIMBUS_TEST_PG (a libpq conninfo); without it the
 * test starts a throwaway cluster with the script named by
 * NIMBUS_PG_CLUSTER (deploy/pg-cluster) and removes it afterwards.  The
 * restart test stops and starts the cluster: it uses NIMBUS_TEST_PG_DIR
 * with NIMBUS_TEST_PG when both are set, else a cluster of its own.  Every
 * test works in a schema of its own, so tests can share a database. */
#include "db.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../check.h"
#include "log.h"
#include "log.h"

#define SKIP 77

static uv_loop_t loop;
static char base_conninfo[512];
static char conninfo[1024];
static char schema[64];
static char cluster_dir[256];
static bool own_cluster;
static const char *cluster_script;

/* ---- Cluster and schema set-up. */

static int
shell(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return rc == 0 ? 0 : -1;
}

static int
cluster_start_own(void)
{
    cluster_script = getenv("NIMBUS_PG_CLUSTER");
    if (!cluster_script || geteuid() != 0) {
        fprintf(stderr, "no NIMBUS_TEST_PG and cannot start a cluster: skipped\n");
        return SKIP;
    }
    snprintf(cluster_dir, sizeof(cluster_dir), "/tmp/nimbus-dbtest.XXXXXX");
    if (!mkdtemp(cluster_dir)) {
        perror("mkdtemp");
        return 1;
    }
    own_cluster = true;
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s' start '%s'", cluster_script, cluster_dir);
    FILE *f = popen(cmd, "r");
    if (!f)
        return 1;
    char line[512] = "";
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, "host=", 5))
            memcpy(base_conninfo, line, sizeof(line));
    int rc = pclose(f);
    base_conninfo[strcspn(base_conninfo, "\n")] = '\0';
    if (rc != 0 || !base_conninfo[0]) {
        fprintf(stderr, "could not start a PostgreSQL cluster in %s\n", cluster_dir);
        return 1;
    }
    return 0;
}

static int
cluster_ctl(const char *action)
{
    return shell("'%s' %s '%s' >/dev/null", cluster_script, action, cluster_dir);
}

static int
setup(bool needs_dir)
{
    const char *pg = getenv("NIMBUS_TEST_PG");
    const char *dir = getenv("NIMBUS_TEST_PG_DIR");
    int rc;
    if (pg && (!needs_dir || dir)) {
        snprintf(base_conninfo, sizeof(base_conninfo), "%s", pg);
        if (dir)
            snprintf(cluster_dir, sizeof(cluster_dir), "%s", dir);
        cluster_script = getenv("NIMBUS_PG_CLUSTER");
        if (needs_dir && !cluster_script)
            return SKIP;
    } else if ((rc = cluster_start_own()) != 0) {
        return rc;
    }
    snprintf(schema, sizeof(schema), "dbtest_%ld", (long)getpid());
    snprintf(conninfo, sizeof(conninfo), "%s options='-c search_path=%s'",
             base_conninfo, schema);

    db_conn *c;
    char *msg = NULL;
    struct db_error err;
    char sql[256];
    rc = db_sync_connect(base_conninfo, &c, &msg);
    if (rc < 0) {
        fprintf(stderr, "connect: %s\n", msg ? msg : "?");
        free(msg);
        return 1;
    }
    snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s",
             schema, schema);
    rc = db_sync_exec_script(c, sql, &err);
    if (rc < 0)
        fprintf(stderr, "schema: %s\n", err.message);
    db_sync_close(c);
    if (rc < 0)
        return 1;
    return uv_loop_init(&loop) == 0 ? 0 : 1;
}

static void
teardown(void)
{
    db_conn *c;
    char *msg = NULL;
    if (db_sync_connect(base_conninfo, &c, &msg) == 0) {
        char sql[256];
        struct db_error err;
        snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE", schema);
        if (db_sync_exec_script(c, sql, &err) < 0)
            fprintf(stderr, "drop schema: %s\n", err.message);
        db_sync_close(c);
    }
    free(msg);
    if (own_cluster) {
        if (cluster_ctl("stop") < 0)
            fprintf(stderr, "could not stop the cluster in %s\n", cluster_dir);
        if (shell("rm -rf '%s'", cluster_dir) < 0)
            fprintf(stderr, "could not remove %s\n", cluster_dir);
    }
}

/* ---- Loop helpers. */

struct waiter {
    bool (*pred)(const void *);
    const void *arg;
    bool deadline_hit;
};

static void
on_deadline(uv_timer_t *t)
{
    struct waiter *w = t->data;
    w->deadline_hit = true;
    uv_stop(t->loop);
}

/* Checked before the loop blocks for I/O, so that a callback run by a
 * timer in the same iteration does not leave the loop waiting. */
static void
on_prepare(uv_prepare_t *h)
{
    struct waiter *w = h->data;
    if (w->pred(w->arg))
        uv_stop(h->loop);
}

/* Runs the loop until pred(arg) holds or 'ms' pass; returns pred(arg). */
static bool
run_until(bool (*pred)(const void *), const void *arg, unsigned ms)
{
    struct waiter w = { .pred = pred, .arg = arg };
    uv_timer_t t;
    uv_prepare_t prep;
    uv_timer_init(&loop, &t);
    uv_prepare_init(&loop, &prep);
    t.data = prep.data = &w;
    uv_timer_start(&t, on_deadline, ms, 0);
    uv_prepare_start(&prep, on_prepare);
    while (!pred(arg) && !w.deadline_hit)
        uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_close((uv_handle_t *)&prep, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return pred(arg);
}

static bool
flag_set(const void *arg)
{
    return *(const bool *)arg;
}

static bool
never(const void *arg)
{
    return false;
}

static void
run_for(unsigned ms)
{
    (void)run_until(never, NULL, ms);
}

static bool
pool_up(const void *arg)
{
    return db_pool_available(arg);
}

static unsigned p_size;

static bool
pool_all_up(const void *arg)
{
    struct db_pool_stats st;
    const db_pool *p = arg;
    db_pool_stats(p, &st);
    return st.connected == p_size;
}

static db_pool *
open_pool(struct db_config *cfg)
{
    db_pool *p = NULL;
    cfg->conninfo = conninfo;
    p_size = cfg->pool_size;
    int rc = db_pool_new(&loop, cfg, &p);
    CHECK_INT(rc, 0);
    if (rc < 0)
        return NULL;
    CHECK(!db_pool_available(p));
    CHECK(run_until(pool_all_up, p, 10000));
    return p;
}

static void
on_closed(void *arg)
{
    *(bool *)arg = true;
}

static void
close_pool(db_pool *p)
{
    bool closed = false;
    if (!p)
        return;
    db_pool_close(p, on_closed, &closed);
    CHECK(run_until(flag_set, &closed, 10000));
    db_pool_free(p);
}

static void
finish_loop(void)
{
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(&loop), 0);
}

/* ---- Capturing a query's outcome. */

struct cap {
    bool done;
    int calls;
    int status;
    char sqlstate[6];
    char msg[256];
    int rows, cols;
    char v[4][128];
    bool isnull[4];
    long affected;
};

static void
on_cap(int status, db_result *res, const struct db_error *err, void *arg)
{
    struct cap *c = arg;
    c->calls++;
    c->done = true;
    c->status = status;
    if (status < 0) {
        CHECK(res == NULL);
        CHECK(err != NULL);
        if (!err)
            return;
        CHECK_INT(err->code, status);
        memcpy(c->sqlstate, err->sqlstate, sizeof(c->sqlstate));
        snprintf(c->msg, sizeof(c->msg), "%s", err->message ? err->message : "");
        return;
    }
    CHECK(err == NULL);
    CHECK(res != NULL);
    c->rows = db_rows(res);
    c->cols = db_cols(res);
    c->affected = db_affected(res);
    for (int i = 0; i < 4 && i < c->cols && c->rows > 0; i++) {
        const char *v = db_get(res, 0, i);
        c->isnull[i] = v == NULL;
        snprintf(c->v[i], sizeof(c->v[i]), "%s", v ? v : "");
    }
}

static bool
cap_done(const void *arg)
{
    return ((const struct cap *)arg)->done;
}

/* Runs one query to completion; returns the synchronous status. */
static int
query(db_pool *p, struct cap *c, const char *sql, int n, const char *const *params)
{
    memset(c, 0, sizeof(*c));
    int rc = db_query(p, sql, n, params, on_cap, c);
    if (rc < 0)
        return rc;
    CHECK(!c->done);
    CHECK(run_until(cap_done, c, 20000));
    CHECK_INT(c->calls, 1);
    return 0;
}

static int
tx_query(db_tx *tx, struct cap *c, const char *sql, int n, const char *const *params)
{
    memset(c, 0, sizeof(*c));
    int rc = db_tx_query(tx, sql, n, params, on_cap, c);
    if (rc < 0)
        return rc;
    CHECK(run_until(cap_done, c, 20000));
    CHECK_INT(c->calls, 1);
    return 0;
}

struct txcap {
    bool done;
    int calls;
    int status;
    db_tx *tx;
    char sqlstate[6];
};

static void
on_txcap(int status, db_tx *tx, const struct db_error *err, void *arg)
{
    struct txcap *c = arg;
    c->done = true;
    c->calls++;
    c->status = status;
    c->tx = tx;
    CHECK((status < 0) == (err != NULL));
    if (err)
        memcpy(c->sqlstate, err->sqlstate, sizeof(c->sqlstate));
}

static bool
txcap_done(const void *arg)
{
    return ((const struct txcap *)arg)->done;
}

static db_tx *
tx_begin(db_pool *p)
{
    struct txcap c = { 0 };
    int rc = db_tx_begin(p, on_txcap, &c);
    CHECK_INT(rc, 0);
    if (rc < 0)
        return NULL;
    CHECK(run_until(txcap_done, &c, 20000));
    CHECK_INT(c.status, 0);
    CHECK(c.tx != NULL);
    return c.tx;
}

static int
tx_commit(db_tx *tx, char sqlstate[6])
{
    struct txcap c = { 0 };
    int rc = db_tx_commit(tx, on_txcap, &c);
    CHECK_INT(rc, 0);
    if (rc < 0)
        return rc;
    CHECK(run_until(txcap_done, &c, 20000));
    CHECK(c.tx == NULL);
    if (sqlstate)
        memcpy(sqlstate, c.sqlstate, 6);
    return c.status;
}

static int
tx_rollback(db_tx *tx)
{
    struct txcap c = { 0 };
    db_tx_rollback(tx, on_txcap, &c);
    CHECK(run_until(txcap_done, &c, 20000));
    CHECK(c.tx == NULL);
    return c.status;
}

static long
count_rows(db_pool *p, const char *table)
{
    struct cap c;
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
    CHECK_INT(query(p, &c, sql, 0, NULL), 0);
    CHECK_INT(c.status, 0);
    return c.status == 0 ? strtol(c.v[0], NULL, 10) : -1;
}

/* ---- Tests. */

static void
on_basic(int status, db_result *res, const struct db_error *err, void *arg)
{
    bool *done = arg;
    *done = true;
    CHECK_INT(status, 0);
    CHECK_INT(db_rows(res), 1);
    CHECK_INT(db_cols(res), 3);
    CHECK_INT(db_col(res, "c"), 2);
    CHECK_INT(db_col(res, "nope"), -1);
    CHECK_STR(db_getn(res, 0, "a"), "hello");
    CHECK(db_getn(res, 0, "b") == NULL);
    CHECK(db_getn(res, 0, "nope") == NULL);
    CHECK_STR(db_get(res, 0, 2), "42");
    CHECK(db_get(res, 1, 0) == NULL);
    CHECK(db_get(res, 0, 3) == NULL);
    CHECK(db_get(res, -1, 0) == NULL);
}

static void
test_basic(void)
{
    struct db_config cfg;
    db_config_defaults(&cfg);
    db_pool *p = open_pool(&cfg);
    if (!p)
        return;
    struct cap c;

    const char *params[] = { "hello", NULL, "41" };
    bool done = false;
    CHECK_INT(db_query(p, "SELECT $1::text AS a, $2::text AS b, $3::int + 1 AS c",
                       3, params, on_basic, &done), 0);
    CHECK(!done);
    CHECK(run_until(flag_set, &done, 10000));

    CHECK_INT(query(p, &c, "CREATE TABLE items (id serial PRIMARY KEY, name text, note text)",
                    0, NULL), 0);
    CHECK_INT(c.status, 0);
    const char *ins[] = { "one", "first", "two", NULL };
    CHECK_INT(query(p, &c, "INSERT INTO items (name, note) VALUES ($1, $2), ($3, $4)",
                    4, ins), 0);
    CHECK_INT(c.status, 0);
    CHECK_INT(c.affected, 2);
    CHECK_INT(query(p, &c, "SELECT name FROM items WHERE note IS NULL", 0, NULL), 0);
    CHECK_INT(c.rows, 1);
    CHECK_STR(c.v[0], "two");
    CHECK_INT(query(p, &c, "SELECT name FROM items WHERE false", 0, NULL), 0);
    CHECK_INT(c.status, 0);
    CHECK_INT(c.rows, 0);
    const char *upd[] = { "changed" };
    CHECK_INT(query(p, &c, "UPDATE items SET note = $1", 1, upd), 0);
    CHECK_INT(c.affected, 2);

    /* A syntax error is -EIO with its SQLSTATE. */
    CHECK_INT(query(p, &c, "SELEC 1", 0, NULL), 0);
    CHECK_INT(c.status, -EIO);
    CHECK_STR(c.sqlstate, "42601");
    CHECK(c.msg[0] != '\0');

    /* Bad arguments fail synchronously. */
    CHECK_INT(db_query(p, "SELECT $1", 1, NULL, on_cap, &c), -EINVAL);
    CHECK_INT(db_query(p, NULL, 0, NULL, on_cap, &c), -EINVAL);

    struct db_pool_stats st;
    db_pool_stats(p, &st);
    CHECK_INT(st.connected, 4);
    CHECK(st.queries >= 7);
    CHECK(st.failures >= 1);
    close_pool(p);

    /* The synchronous API. */
    db_conn *sc;
    char *msg = NULL;
    CHECK_INT(db_sync_connect(conninfo, &sc, &msg), 0);
    db_result *r = NULL;
    struct db_error err;
    const char *sp[] = { NULL, "x" };
    CHECK_INT(db_sync_exec(sc, "SELECT $1::int AS n, $2 AS s", 2, sp, &r, &err), 0);
    CHECK_INT(db_rows(r), 1);
    CHECK(db_get(r, 0, 0) == NULL);
    CHECK_STR(db_getn(r, 0, "s"), "x");
    db_result_free(r);
    CHECK_INT(db_sync_exec(sc, "SELECT 1/0", 0, NULL, &r, &err), -EIO);
    CHECK(r == NULL);
    CHECK_STR(err.sqlstate, "22012");
    CHECK_INT(db_sync_exec_script(sc, "CREATE TABLE s1 (a int); INSERT INTO s1 VALUES (1);"
                                  "INSERT INTO s1 VALUES (2)", &err), 0);
    CHECK_INT(db_sync_exec(sc, "SELECT count(*) FROM s1", 0, NULL, &r, &err), 0);
    CHECK_STR(db_get(r, 0, 0), "2");
    db_result_free(r);
    db_sync_close(sc);
    CHECK(db_sync_connect("host=/nonexistent port=1 dbname=x", &sc, &msg) < 0);
    CHECK(msg != NULL && msg[0]);
    free(msg);

    CHECK_INT(db_sqlstate_errno("23505"), -EEXIST);
    CHECK_INT(db_sqlstate_errno("23503"), -ENOENT);
    CHECK_INT(db_sqlstate_errno("40001"), -EAGAIN);
    CHECK_INT(db_sqlstate_errno("40P01"), -EAGAIN);
    CHECK_INT(db_sqlstate_errno("08006"), -ENOTCONN);
    CHECK_INT(db_sqlstate_errno("57P01"), -ENOTCONN);
    CHECK_INT(db_sqlstate_errno("57P03"), -ENOTCONN);
    CHECK_INT(db_sqlstate_errno("57014"), -EIO);
    CHECK_INT(db_sqlstate_errno("42P01"), -EIO);
    CHECK_INT(db_sqlstate_errno(""), -EIO);
    CHECK_INT(db_sqlstate_errno(NULL), -EIO);

    /* The HTTP answer of a failed query, as nimbus-api and nimbus-image
     * give it. */
    const char *m, *d;
    struct db_error toolong = { .code = -EIO, .sqlstate = "22001", .message = "too long" };
    struct db_error syntax = { .code = -EIO, .sqlstate = "42601", .message = "syntax" };
    CHECK_INT(db_error_http(-ENOTCONN, NULL, &m, &d), 503);
    CHECK_STR(m, "The database is unavailable; try again later.");
    CHECK(d == NULL);
    CHECK_INT(db_error_http(-ETIMEDOUT, NULL, &m, &d), 503);
    CHECK_INT(db_error_http(-EAGAIN, NULL, &m, &d), 503);
    CHECK_INT(db_error_http(-EEXIST, NULL, &m, &d), 409);
    CHECK_INT(db_error_http(-ENOENT, NULL, &m, &d), 400);
    CHECK_INT(db_error_http(-EIO, &toolong, &m, &d), 400);
    CHECK_STR(m, "Invalid input: ");
    CHECK_STR(d, "too long");
    CHECK_INT(db_error_http(-EIO, &syntax, &m, &d), 500);
    CHECK(m == NULL && d == NULL);
    CHECK_INT(db_error_http(-EIO, NULL, &m, &d), 500);
}

static void
test_injection(void)
{
    struct db_config cfg;
    db_config_defaults(&cfg);
    db_pool *p = open_pool(&cfg);
    if (!p)
        return;
    struct cap c;
    CHECK_INT(query(p, &c, "CREATE TABLE t (name text)", 0, NULL), 0);
    const char *evil[] = { "x'); DROP TABLE t; --" };
    const char *evil2[] = { "'; SELECT pg_sleep(10); --\\'\"$1" };
    CHECK_INT(query(p, &c, "INSERT INTO t (name) VALUES ($1)", 1, evil), 0);
    CHECK_INT(c.status, 0);
    CHECK_INT(query(p, &c, "INSERT INTO t (name) VALUES ($1)", 1, evil2), 0);
    CHECK_INT(c.status, 0);
    CHECK_INT(count_rows(p, "t"), 2);
    CHECK_INT(query(p, &c, "SELECT name FROM t WHERE name = $1", 1, evil), 0);
    CHECK_INT(c.rows, 1);
    CHECK_STR(c.v[0], evil[0]);
    CHECK_INT(query(p, &c, "SELECT name FROM t WHERE name = $1", 1, evil2), 0);
    CHECK_INT(c.rows, 1);
    CHECK_STR(c.v[0], evil2[0]);
    /* A parameter used where a number is expected is an error, not SQL. */
    const char *num[] = { "1; DROP TABLE t" };
    CHECK_INT(query(p, &c, "SELECT $1::int", 1, num), 0);
    CHECK_INT(c.status, -EIO);
    CHECK_STR(c.sqlstate, "22P02");
    CHECK_INT(count_rows(p, "t"), 2);
    close_pool(p);
}

static void
test_unique(void)
{
    struct db_config cfg;
    db_config_defaults(&cfg);
    db_pool *p = open_pool(&cfg);
    if (!p)
        return;
    struct cap c;
    CHECK_INT(query(p, &c, "CREATE TABLE u (id int PRIMARY KEY, ref int REFERENCES u (id))",
                    0, NULL), 0);
    CHECK_INT(c.status, 0);
    const char *one[] = { "1" };
    CHECK_INT(query(p, &c, "INSERT INTO u (id) VALUES ($1)", 1, one), 0);
    CHECK_INT(c.status, 0);
    CHECK_INT(query(p, &c, "INSERT INTO u (id) VALUES ($1)", 1, one), 0);
    CHECK_INT(c.status, -EEXIST);
    CHECK_STR(c.sqlstate, "23505");
    CHECK(strstr(c.msg, "duplicate key") != NULL);
    const char *fk[] = { "2", "99" };
    CHECK_INT(query(p, &c, "INSERT INTO u (id, ref) VALUES ($1, $2)", 2, fk), 0);
    CHECK_INT(c.status, -ENOENT);
    CHECK_STR(c.sqlstate, "23503");
    CHECK_INT(count_rows(p, "u"), 1);
    close_pool(p);

    db_conn *sc;
    struct db_error err;
    CHECK_INT(db_sync_connect(conninfo, &sc, NULL), 0);
    CHECK_INT(db_sync_exec(sc, "INSERT INTO u (id) VALUES ($1)", 1, one, NULL, &err),
              -EEXIST);
    CHECK_INT(err.code, -EEXIST);
    CHECK_STR(err.sqlstate, "23505");
    db_sync_close(sc);
}

static void
test_tx(void)
{
    struct db_config cfg;
    db_config_defaults(&cfg);
    cfg.pool_size = 2;
    db_pool *p = open_pool(&cfg);
    if (!p)
        return;
    struct cap c;
    char sqlstate[6];
    CHECK_INT(query(p, &c, "CREATE TABLE acc (id int PRIMARY KEY)", 0, NULL), 0);

    /* Commit: invisible to others until committed, visible afterwards. */
    db_tx *tx = tx_begin(p);
    if (!tx)
        goto out;
    const char *one[] = { "1" };
    CHECK_INT(tx_query(tx, &c, "INSERT INTO acc VALUES ($1)", 1, one), 0);
    CHECK_INT(c.status, 0);
    CHECK_INT(tx_query(tx, &c, "SELECT count(*) FROM acc", 0, NULL), 0);
    CHECK_STR(c.v[0], "1");
    CHECK_INT(count_rows(p, "acc"), 0);
    CHECK_INT(tx_commit(tx, NULL), 0);
    CHECK_INT(count_rows(p, "acc"), 1);

    /* Rollback: never visible. */
    tx = tx_begin(p);
    if (!tx)
        goto out;
    const char *two[] = { "2" };
    CHECK_INT(tx_query(tx, &c, "INSERT INTO acc VALUES ($1)", 1, two), 0);
    CHECK_INT(c.status, 0);
    CHECK_INT(tx_rollback(tx), 0);
    CHECK_INT(count_rows(p, "acc"), 1);

    /* An error leaves the transaction good only for rollback; commit reports
     * the error and nothing of the transaction remains. */
    tx = tx_begin(p);
    if (!tx)
        goto out;
    const char *three[] = { "3" };
    CHECK_INT(tx_query(tx, &c, "INSERT INTO acc VALUES ($1)", 1, three), 0);
    CHECK_INT(c.status, 0);
    CHECK_INT(tx_query(tx, &c, "INSERT INTO acc VALUES ($1)", 1, one), 0);
    CHECK_INT(c.status, -EEXIST);
    CHECK_INT(tx_query(tx, &c, "SELECT 1", 0, NULL), 0);
    CHECK_INT(c.status, -EIO);
    CHECK_STR(c.sqlstate, "25P02");
    CHECK_INT(tx_commit(tx, sqlstate), -EEXIST);
    CHECK_STR(sqlstate, "23505");
    CHECK_INT(count_rows(p, "acc"), 1);

    /* Statements queued back to back run in order, then the commit. */
    tx = tx_begin(p);
    if (!tx)
        goto out;
    struct cap qc[3];
    const char *ids[] = { "10", "11", "12" };
    memset(qc, 0, sizeof(qc));
    for (int i = 0; i < 3; i++)
        CHECK_INT(db_tx_query(tx, "INSERT INTO acc VALUES ($1)", 1, &ids[i],
                              on_cap, &qc[i]), 0);
    CHECK_INT(tx_commit(tx, NULL), 0);
    for (int i = 0; i < 3; i++)
        CHECK(qc[i].done && qc[i].status == 0);
    CHECK_INT(count_rows(p, "acc"), 4);

    /* Both connections pinned by transactions: pool queries wait. */
    db_tx *t1 = tx_begin(p), *t2 = tx_begin(p);
    if (!t1 || !t2)
        goto out;
    struct cap w;
    memset(&w, 0, sizeof(w));
    CHECK_INT(db_query(p, "SELECT 1", 0, NULL, on_cap, &w), 0);
    run_for(100);
    CHECK(!w.done);
    CHECK_INT(tx_commit(t1, NULL), 0);
    CHECK(run_until(cap_done, &w, 10000));
    CHECK_INT(tx_rollback(t2), 0);

    /* A transaction left open when the pool closes is freed by the pool. */
    tx = tx_begin(p);
    CHECK(tx != NULL);
out:
    close_pool(p);
}

struct conc {
    int done;
    int seen[1000];
    int pids[8];
    int last[8];
    int npids;
    bool order_ok;
};

struct conc_arg {
    struct conc *st;
    int i;
};

static void
on_conc(int status, db_result *res, const struct db_error *err, void *arg)
{
    struct conc_arg *a = arg;
    struct conc *st = a->st;
    st->done++;
    CHECK_INT(status, 0);
    if (status < 0)
        return;
    int i = atoi(db_get(res, 0, 0));
    int pid = atoi(db_get(res, 0, 1));
    CHECK_INT(i, a->i);
    if (i >= 0 && i < 1000)
        st->seen[i]++;
    int k;
    for (k = 0; k < st->npids; k++)
        if (st->pids[k] == pid)
            break;
    if (k == st->npids) {
        CHECK(st->npids < 8);
        if (st->npids >= 8)
            return;
        st->pids[st->npids] = pid;
        st->last[st->npids++] = -1;
    }
    if (i <= st->last[k])
        st->order_ok = false;
    st->last[k] = i;
}

static bool
conc_done(const void *arg)
{
    return ((const struct conc *)arg)->done == 1000;
}

static void
test_concurrency(void)
{
    struct db_config cfg;
    db_config_defaults(&cfg);
    cfg.pool_size = 4;
    db_pool *p = open_pool(&cfg);
    if (!p)
        return;
    static struct conc st;
    static struct conc_arg args[1000];
    st.order_ok = true;
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < 1000; i++) {
        char num[16];
        snprintf(num, sizeof(num), "%d", i);
        const char *params[] = { num };
        args[i].st = &st;
        args[i].i = i;
        CHECK_INT(db_query(p, "SELECT $1::int, pg_backend_pid()", 1, params,
                           on_conc, &args[i]), 0);
    }
    struct db_pool_stats ps;
    db_pool_stats(p, &ps);
    CHECK_INT(ps.queued, 1000 - 4);
    CHECK(run_until(conc_done, &st, 60000));
    fprintf(stderr, "1000 queries on 4 connections: %.1f ms\n",
            (double)(uv_hrtime() - t0) / 1e6);
    CHECK_INT(st.done, 1000);
    CHECK(st.order_ok);
    CHECK(st.npids >= 2 && st.npids <= 4);
    for (int i = 0; i < 1000; i++)
        CHECK_INT(st.seen[i], 1);
    db_pool_stats(p, &ps);
    CHECK_INT(ps.queued, 0);
    CHECK_INT(ps.connected, 4);
    close_pool(p);
}

struct qf {
    int done, ok;
};

static void
on_qf(int status, db_result *res, const struct db_error *err, void *arg)
{
    struct qf *q = arg;
    q->done++;
    if (status == 0)
        q->ok++;
}

static bool
qf_done(const void *arg)
{
    return ((const struct qf *)arg)->done == 6;
}

static void
test_queue_full(void)
{
    struct db_config cfg;
    db_config_defaults(&cfg);
    cfg.pool_size = 1;
    cfg.max_queue = 5;
    db_pool *p = open_pool(&cfg);
    if (!p)
        return;
    struct qf q = { 0 };
    int accepted = 0, busy = 0;
    CHECK_INT(db_query(p, "SELECT pg_sleep(0.2)", 0, NULL, on_qf, &q), 0);
    accepted++;
    for (int i = 0; i < 20; i++) {
        int rc = db_query(p, "SELECT 1", 0, NULL, on_qf, &q);
        if (rc == 0)
            accepted++;
        else if (rc == -EBUSY)
            busy++;
        else
            CHECK_INT(rc, -EBUSY);
    }
    /* One query runs, five wait, the rest are refused. */
    CHECK_INT(accepted, 6);
    CHECK_INT(busy, 15);
    struct txcap tc = { 0 };
    CHECK_INT(db_tx_begin(p, on_txcap, &tc), -EBUSY);
    CHECK(run_until(qf_done, &q, 10000));
    CHECK_INT(q.ok, 6);
    struct cap c;
    CHECK_INT(query(p, &c, "SELECT 1", 0, NULL), 0);
    CHECK_INT(c.status, 0);

    /* Closing the pool cancels the running and the waiting queries; each
     * callback still runs once, before the pool reports closed. */
    struct cap cc[3];
    memset(cc, 0, sizeof(cc));
    CHECK_INT(db_query(p, "SELECT pg_sleep(5)", 0, NULL, on_cap, &cc[0]), 0);
    CHECK_INT(db_query(p, "SELECT 1", 0, NULL, on_cap, &cc[1]), 0);
    CHECK_INT(db_query(p, "SELECT 2", 0, NULL, on_cap, &cc[2]), 0);
    close_pool(p);
    for (int i = 0; i < 3; i++) {
        CHECK_INT(cc[i].calls, 1);
        CHECK_INT(cc[i].status, -ECANCELED);
    }
}

/* ---- LISTEN/NOTIFY. */

struct lis {
    int notes;
    int reconnects;
    char channel[64];
    char payload[128];
};

static void
on_note(const char *channel, const char *payload, void *arg)
{
    struct lis *l = arg;
    l->notes++;
    snprintf(l->channel, sizeof(l->channel), "%s", channel);
    snprintf(l->payload, sizeof(l->payload), "%s", payload);
}

static void
on_relisten(void *arg)
{
    ((struct lis *)arg)->reconnects++;
}

static bool
lis_got(const void *arg)
{
    return ((const struct lis *)arg)->notes > 0;
}

static int
notify(const char *channel, const char *payload)
{
    db_conn *sc;
    char *msg = NULL;
    int rc = db_sync_connect(base_conninfo, &sc, &msg);
    free(msg);
    if (rc < 0)
        return rc;
    const char *params[] = { channel, payload };
    struct db_error err;
    rc = db_sync_exec(sc, "SELECT pg_notify($1, $2)", 2, params, NULL, &err);
    db_sync_close(sc);
    return rc;
}

struct notifier {
    uv_timer_t timer;
    const char *channel, *payload;
};

static void
on_notify_timer(uv_timer_t *t)
{
    struct notifier *n = t->data;
    CHECK_INT(notify(n->channel, n->payload), 0);
}

/* Sends NOTIFY every 50 ms until 'l' got one: LISTEN is asynchronous, and
 * a NOTIFY sent before it took effect is lost, as PostgreSQL defines. */
static bool
notify_until_heard(const char *channel, const char *payload, struct lis *l)
{
    struct notifier n = { .channel = channel, .payload = payload };
    uv_timer_init(&loop, &n.timer);
    n.timer.data = &n;
    uv_timer_start(&n.timer, on_notify_timer, 0, 50);
    bool ok = run_until(lis_got, l, 10000);
    uv_close((uv_handle_t *)&n.timer, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return ok;
}

static void
test_listen(void)
{
    struct db_config cfg;
    db_config_defaults(&cfg);
    cfg.pool_size = 1;
    db_pool *p = open_pool(&cfg);
    if (!p)
        return;
    char chan[64], chan2[64];
    snprintf(chan, sizeof(chan), "nimbus_test_%ld", (long)getpid());
    snprintf(chan2, sizeof(chan2), "Mixed_Case$%ld", (long)getpid());
    struct lis a = { 0 }, b = { 0 }, m = { 0 };
    const char *bad[] = { "", "a-b", "1abc", "x\"; DROP TABLE t; --", "a b",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_INT(db_listen(p, bad[i], on_note, NULL, &a), -EINVAL);
    CHECK_INT(db_listen(p, NULL, on_note, NULL, &a), -EINVAL);

    CHECK_INT(db_listen(p, chan, on_note, on_relisten, &a), 0);
    CHECK(notify_until_heard(chan, "hello 'world' \"; --", &a));
    CHECK_STR(a.channel, chan);
    CHECK_STR(a.payload, "hello 'world' \"; --");

    /* A second subscriber on the same channel, and a case-sensitive one
     * added while the listener is already up. */
    CHECK_INT(db_listen(p, chan, on_note, NULL, &b), 0);
    CHECK_INT(db_listen(p, chan2, on_note, NULL, &m), 0);
    CHECK(notify_until_heard(chan2, "", &m));
    CHECK_STR(m.channel, chan2);
    CHECK_STR(m.payload, "");
    int before = a.notes;
    CHECK(notify_until_heard(chan, "second", &b));
    CHECK(run_until(lis_got, &b, 1000));
    run_for(100);
    CHECK(a.notes > before);
    CHECK_STR(b.payload, "second");
    CHECK_INT(a.reconnects, 0);

    struct db_pool_stats st;
    db_pool_stats(p, &st);
    CHECK(st.notifications >= 3);
    /* The listener is not a query connection. */
    CHECK_INT(st.connected, 1);
    close_pool(p);
}

static void
test_timeout(void)
{
    struct db_config cfg;
    db_config_defaults(&cfg);
    cfg.pool_size = 1;
    cfg.query_timeout_ms = 300;
    cfg.backoff_min_ms = 50;
    db_pool *p = open_pool(&cfg);
    if (!p)
        return;
    struct cap c;
    uint64_t t0 = uv_hrtime();
    CHECK_INT(query(p, &c, "SELECT pg_sleep(10)", 0, NULL), 0);
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    fprintf(stderr, "timeout after %.1f ms: %s\n", ms, c.msg);
    CHECK_INT(c.status, -ETIMEDOUT);
    CHECK(ms >= 250 && ms < 2000);

    /* A transaction whose statement times out is broken: rollback only. */
    CHECK(run_until(pool_up, p, 5000));
    db_tx *tx = tx_begin(p);
    if (tx) {
        CHECK_INT(tx_query(tx, &c, "SELECT pg_sleep(10)", 0, NULL), 0);
        CHECK_INT(c.status, -ETIMEDOUT);
        CHECK_INT(db_tx_query(tx, "SELECT 1", 0, NULL, on_cap, &c), -ENOTCONN);
        CHECK_INT(tx_rollback(tx), 0);
    }

    /* The pool reconnects by itself. */
    CHECK(run_until(pool_up, p, 5000));
    CHECK_INT(query(p, &c, "SELECT 1", 0, NULL), 0);
    CHECK_INT(c.status, 0);
    struct db_pool_stats st;
    db_pool_stats(p, &st);
    CHECK(st.reconnects >= 2);
    close_pool(p);
}

/* ---- PostgreSQL stopped and restarted under a stream of queries. */

struct stream {
    uv_timer_t timer;
    db_pool *p;
    int phase;                  /* 0 up, 1 stopping, 2 down, 3 starting, 4 restarted. */
    int submitted, sync_fail, inflight;
    int ok[5], fail_cb[5];
    int ok_after_restart;
    int bad_status;
    double max_sync_ms, max_fail_ms;
};

struct sq {
    struct stream *s;
    int phase;
    uint64_t t0;
};

static void
on_stream_query(int status, db_result *res, const struct db_error *err, void *arg)
{
    struct sq *q = arg;
    struct stream *s = q->s;
    double ms = (double)(uv_hrtime() - q->t0) / 1e6;
    s->inflight--;
    if (status == 0) {
        s->ok[q->phase]++;
        if (q->phase == 4)
            s->ok_after_restart++;
    } else {
        s->fail_cb[q->phase]++;
        if (status != -ENOTCONN) {
            fprintf(stderr, "stream query failed with %d: %s\n", status,
                    err ? err->message : "");
            s->bad_status++;
        }
        if (ms > s->max_fail_ms)
            s->max_fail_ms = ms;
    }
    free(q);
}

static void
on_stream_tick(uv_timer_t *t)
{
    struct stream *s = t->data;
    struct sq *q = malloc(sizeof(*q));
    if (!q)
        return;
    q->s = s;
    q->phase = s->phase;
    q->t0 = uv_hrtime();
    char num[16];
    snprintf(num, sizeof(num), "%d", s->submitted++);
    const char *params[] = { num };
    int rc = db_query(s->p, "SELECT $1::int", 1, params, on_stream_query, q);
    double ms = (double)(uv_hrtime() - q->t0) / 1e6;
    if (ms > s->max_sync_ms)
        s->max_sync_ms = ms;
    if (rc == 0) {
        s->inflight++;
        return;
    }
    free(q);
    s->sync_fail++;
    if (rc != -ENOTCONN) {
        fprintf(stderr, "db_query returned %d\n", rc);
        s->bad_status++;
    }
}

struct spawn {
    uv_process_t proc;
    bool exited;
    int64_t status;
};

static void
on_exit_cb(uv_process_t *proc, int64_t status, int sig)
{
    struct spawn *sp = proc->data;
    sp->exited = true;
    sp->status = status;
    uv_close((uv_handle_t *)proc, NULL);
}

/* Runs "pg-cluster ACTION DIR" without blocking the loop. */
static int
cluster_async(struct spawn *sp, const char *action)
{
    char *args[] = { (char *)cluster_script, (char *)action, cluster_dir, NULL };
    uv_stdio_container_t stdio[3] = {
        { .flags = UV_IGNORE }, { .flags = UV_IGNORE },
        { .flags = UV_INHERIT_FD, .data.fd = 2 },
    };
    uv_process_options_t opt = {
        .exit_cb = on_exit_cb, .file = cluster_script, .args = args,
        .stdio_count = 3, .stdio = stdio,
    };
    memset(sp, 0, sizeof(*sp));
    sp->proc.data = sp;
    return uv_spawn(&loop, &sp->proc, &opt);
}

static bool
spawn_done(const void *arg)
{
    return ((const struct spawn *)arg)->exited;
}

static bool
restarted(const void *arg)
{
    const struct stream *s = arg;
    return s->ok_after_restart > 0;
}

static bool
relistened(const void *arg)
{
    return ((const struct lis *)arg)->reconnects > 0;
}

static bool
stream_idle(const void *arg)
{
    return ((const struct stream *)arg)->inflight == 0;
}

static void
test_restart(void)
{
    struct db_config cfg;
    db_config_defaults(&cfg);
    cfg.pool_size = 2;
    cfg.query_timeout_ms = 5000;
    cfg.backoff_min_ms = 50;
    cfg.backoff_max_ms = 400;
    db_pool *p = open_pool(&cfg);
    if (!p)
        return;
    char chan[64];
    snprintf(chan, sizeof(chan), "restart_%ld", (long)getpid());
    struct lis l = { 0 };
    CHECK_INT(db_listen(p, chan, on_note, on_relisten, &l), 0);
    CHECK(notify_until_heard(chan, "before", &l));

    static struct stream s;
    struct spawn sp;
    s.p = p;
    uv_timer_init(&loop, &s.timer);
    s.timer.data = &s;
    uv_timer_start(&s.timer, on_stream_tick, 10, 10);
    run_for(300);
    CHECK(s.ok[0] > 10);
    CHECK_INT(s.sync_fail, 0);

    /* A query running when the server goes away fails, and is not retried. */
    struct cap longq = { 0 };
    CHECK_INT(db_query(p, "SELECT pg_sleep(30)", 0, NULL, on_cap, &longq), 0);
    run_for(50);

    uint64_t t0 = uv_hrtime();
    s.phase = 1;
    CHECK_INT(cluster_async(&sp, "stop"), 0);
    CHECK(run_until(spawn_done, &sp, 60000));
    CHECK_INT(sp.status, 0);
    CHECK(longq.done);
    CHECK_INT(longq.status, -ENOTCONN);
    CHECK_INT(longq.calls, 1);
    fprintf(stderr, "running query failed with sqlstate %s: %s\n", longq.sqlstate,
            longq.msg);
    fprintf(stderr, "stop took %.1f ms\n", (double)(uv_hrtime() - t0) / 1e6);
    s.phase = 2;
    run_for(1000);
    CHECK(!db_pool_available(p));
    CHECK(s.sync_fail > 50);

    t0 = uv_hrtime();
    s.phase = 3;
    CHECK_INT(cluster_async(&sp, "start"), 0);
    CHECK(run_until(spawn_done, &sp, 60000));
    CHECK_INT(sp.status, 0);
    fprintf(stderr, "start took %.1f ms\n", (double)(uv_hrtime() - t0) / 1e6);
    s.phase = 4;
    t0 = uv_hrtime();
    CHECK(run_until(restarted, &s, 15000));
    fprintf(stderr, "first success %.1f ms after the restart\n",
            (double)(uv_hrtime() - t0) / 1e6);
    CHECK(run_until(relistened, &l, 15000));
    CHECK_INT(l.reconnects, 1);

    /* LISTEN was re-issued before on_reconnect: one NOTIFY is enough. */
    l.notes = 0;
    CHECK_INT(notify(chan, "after"), 0);
    CHECK(run_until(lis_got, &l, 5000));
    CHECK_STR(l.payload, "after");

    run_for(200);
    uv_timer_stop(&s.timer);
    CHECK(run_until(stream_idle, &s, 10000));
    fprintf(stderr, "submitted %d: ok %d/%d/%d/%d/%d, failed sync %d, "
            "failed via callback %d/%d/%d/%d/%d; slowest failure: call %.2f ms, "
            "callback %.2f ms\n", s.submitted, s.ok[0], s.ok[1], s.ok[2],
            s.ok[3], s.ok[4], s.sync_fail, s.fail_cb[0], s.fail_cb[1],
            s.fail_cb[2], s.fail_cb[3], s.fail_cb[4], s.max_sync_ms,
            s.max_fail_ms);
    CHECK_INT(s.bad_status, 0);
    CHECK_INT(s.fail_cb[0], 0);
    /* Nothing submitted while the server was down ran later. */
    CHECK_INT(s.ok[2], 0);
    CHECK(s.max_sync_ms < 100);
    CHECK(s.max_fail_ms < 100);
    CHECK(s.ok[4] > 10);
    struct db_pool_stats st;
    db_pool_stats(p, &st);
    CHECK(st.reconnects >= 3);
    CHECK_INT(st.connected, 2);
    uv_close((uv_handle_t *)&s.timer, NULL);
    close_pool(p);
}

static const struct {
    const char *name;
    void (*fn)(void);
    bool needs_dir;
} tests[] = {
    { "basic", test_basic, false },
    { "injection", test_injection, false },
    { "unique", test_unique, false },
    { "tx", test_tx, false },
    { "concurrency", test_concurrency, false },
    { "queue-full", test_queue_full, false },
    { "listen", test_listen, false },
    { "timeout", test_timeout, false },
    { "restart", test_restart, true },
};

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s TEST\n", argv[0]);
        return 2;
    }
    /* NIMBUS_TEST_DEBUG=1 shows the pool's connection state changes. */
    log_init("test_db", getenv("NIMBUS_TEST_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_WARN);
    /* NIMBUS_TEST_DEBUG=1 shows the pool's connection state changes. */
    log_init("test_db", getenv("NIMBUS_TEST_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_WARN);
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        if (strcmp(argv[1], tests[i].name))
            continue;
        int rc = setup(tests[i].needs_dir);
        if (rc != 0) {
            if (own_cluster)
                teardown();
            return rc;
        }
        tests[i].fn();
        finish_loop();
        if (tests[i].needs_dir && cluster_ctl("status") != 0 &&
            cluster_ctl("start") != 0)
            fprintf(stderr, "could not restart the cluster in %s\n", cluster_dir);
        teardown();
        return check_exit();
    }
    fprintf(stderr, "%s: no test named %s\n", argv[0], argv[1]);
    return 2;
}
