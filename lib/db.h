/* PostgreSQL access: asynchronous on a libuv loop, and a small synchronous
 * API for command-line tools.  This module is the only place that includes
 * libpq-fe.h.
 *
 * Queries are always parameterised (text parameters, NULL for SQL NULL).
 * A pool keeps a few connections; queries wait in a bounded queue for a free
 * connection.  When the database cannot be reached, queries fail at once
 * with -ENOTCONN (callers answer 503) and the pool reconnects in the
 * background with exponential backoff.  Nothing waits forever: each query
 * has a timeout.
 *
 * Callback rule: if a function fails synchronously (returns < 0), its
 * callback is never called.  Otherwise the callback is called exactly once,
 * on the loop, never from inside the call itself.
 */
#ifndef NIMBUS_DB_H
#define NIMBUS_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct db_pool db_pool;
typedef struct db_result db_result;
typedef struct db_tx db_tx;
typedef struct db_conn db_conn;

struct db_config {
    const char *conninfo;          /* libpq connection string (copied). */
    unsigned pool_size;            /* Query connections. Default 4. */
    unsigned max_queue;            /* Waiting queries beyond are refused with -EBUSY. Default 10000. */
    unsigned query_timeout_ms;     /* Default 30000: the query is cancelled, callback gets -ETIMEDOUT. */
    unsigned connect_timeout_ms;   /* Default 5000. */
    unsigned backoff_min_ms;       /* Reconnect backoff start. Default 100. */
    unsigned backoff_max_ms;       /* Reconnect backoff cap. Default 5000. */
};

void db_config_defaults(struct db_config *cfg);

/* What went wrong in a failed query.  'code' is the negative errno passed to
 * the callback too; 'sqlstate' is the five-character SQLSTATE when the server
 * reported one ("23505" unique violation...), else ""; 'message' is the
 * server's or libpq's text. Valid only during the callback. */
struct db_error {
    int code;
    char sqlstate[6];
    const char *message;
};

/* 'res' is NULL when status < 0; it is owned by the pool and freed after
 * the callback returns.  'err' is NULL when status == 0. */
typedef void (*db_query_cb)(int status, db_result *res,
                            const struct db_error *err, void *arg);

/* Creates a pool and starts connecting.  The caller owns the pool. */
int db_pool_new(uv_loop_t *loop, const struct db_config *cfg, db_pool **out)
    __attribute__((warn_unused_result));

/* Closes every connection (queued queries fail with -ECANCELED) and calls
 * 'done' when all handles are closed; then db_pool_free().  */
void db_pool_close(db_pool *p, void (*done)(void *arg), void *arg);
void db_pool_free(db_pool *p);

/* True when at least one query connection is up. */
bool db_pool_available(const db_pool *p);

/* Runs one statement.  'params' holds 'nparams' strings (NULL = SQL NULL).
 * Returns 0 (callback follows) or a negative errno: -ENOTCONN when the
 * database is unavailable, -EBUSY when the queue is full. */
int db_query(db_pool *p, const char *sql, int nparams,
             const char *const *params, db_query_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* ---- Transactions: a connection pinned for several statements. */

typedef void (*db_tx_cb)(int status, db_tx *tx, const struct db_error *err,
                         void *arg);

/* Takes a connection and runs BEGIN; 'cb' gets the transaction handle.  The
 * handle must be finished with db_tx_commit() or db_tx_rollback(). */
int db_tx_begin(db_pool *p, db_tx_cb cb, void *arg)
    __attribute__((warn_unused_result));
int db_tx_query(db_tx *tx, const char *sql, int nparams,
                const char *const *params, db_query_cb cb, void *arg)
    __attribute__((warn_unused_result));
/* COMMIT (status 0) or the error; the handle is invalid afterwards.  'tx' is
 * passed to cb as NULL. */
int db_tx_commit(db_tx *tx, db_tx_cb cb, void *arg)
    __attribute__((warn_unused_result));
/* ROLLBACK; 'cb' may be NULL.  Never fails synchronously. */
void db_tx_rollback(db_tx *tx, db_tx_cb cb, void *arg);

/* ---- LISTEN/NOTIFY.  One dedicated connection listens on every
 * subscribed channel and re-subscribes after each reconnect; 'on_reconnect'
 * (may be NULL) is then called so the subscriber can reload what it may have
 * missed.  The channel name must be a plain identifier. */
typedef void (*db_notify_cb)(const char *channel, const char *payload, void *arg);
int db_listen(db_pool *p, const char *channel, db_notify_cb cb,
              void (*on_reconnect)(void *arg), void *arg)
    __attribute__((warn_unused_result));

/* ---- Results. */
int db_rows(const db_result *r);
int db_cols(const db_result *r);
/* Column index by name, or -1. */
int db_col(const db_result *r, const char *name);
/* Value as text, NULL for SQL NULL.  Owned by the result. */
const char *db_get(const db_result *r, int row, int col);
/* Same by column name; NULL when NULL or no such column. */
const char *db_getn(const db_result *r, int row, const char *name);
/* Rows affected by INSERT/UPDATE/DELETE. */
long db_affected(const db_result *r);

struct db_pool_stats {
    uint64_t queries, failures, reconnects, notifications;
    unsigned connected, queued;
};
void db_pool_stats(const db_pool *p, struct db_pool_stats *out);

/* ---- Synchronous API for tools (nimbus-manage) and tests. */

/* Connects; on failure returns a negative errno and sets *errmsg to a
 * malloc'd message (caller frees). */
int db_sync_connect(const char *conninfo, db_conn **out, char **errmsg)
    __attribute__((warn_unused_result));
void db_sync_close(db_conn *c);
/* Runs one parameterised statement; *out (may be NULL if unwanted) is freed
 * with db_result_free().  On failure returns a negative errno and fills
 * 'err' (message valid until the next call on 'c'). */
int db_sync_exec(db_conn *c, const char *sql, int nparams,
                 const char *const *params, db_result **out,
                 struct db_error *err)
    __attribute__((warn_unused_result));
/* Runs a script of several statements without parameters (migrations). */
int db_sync_exec_script(db_conn *c, const char *sql, struct db_error *err)
    __attribute__((warn_unused_result));
void db_result_free(db_result *r);

/* Maps a SQLSTATE to a negative errno: 23505 → -EEXIST, 23503 → -ENOENT
 * (foreign key), 40001/40P01 → -EAGAIN, connection classes → -ENOTCONN,
 * others → -EIO. */
int db_sqlstate_errno(const char *sqlstate);

/* How an HTTP service answers a query that failed with 'status' ('err' may
 * be NULL), the same in every daemon.  Returns 503 (the database is
 * unavailable, or a serialization failure or deadlock: answer with
 * Retry-After), 409 (a unique violation), 400 (a foreign key, data
 * exception or constraint violation: what the client sent) or 500 (a bug,
 * for the caller to log and word).  '*msg' gets the client's message
 * (static) for all but 500 (NULL); for a data exception or constraint
 * violation '*detail' gets PostgreSQL's message to append (owned by
 * 'err'), else NULL. */
int db_error_http(int status, const struct db_error *err, const char **msg,
                  const char **detail);

#endif
