/* PostgreSQL access on a libuv loop with libpq's non-blocking interface,
 * and a small blocking API for tools.
 *
 * Design.  Every connection (the pool's query connections and the one
 * LISTEN connection) is a small state machine: DOWN (no connection, the
 * backoff timer runs), CONNECTING (PQconnectPoll driven by a uv_poll on
 * PQsocket), UP (queries are sent with PQsendQueryParams and read with
 * PQconsumeInput/PQisBusy/PQgetResult) and CLOSED (the pool is closing).
 * Each connection has one timer, used for the reconnect backoff, the connect
 * timeout or the query timeout depending on the state.
 *
 * Callbacks never run from inside the code that produced their result: a
 * finished request is appended to the pool's completion list, and a
 * zero-delay timer runs the callbacks on the next loop iteration.  This
 * keeps the connection state consistent whatever a callback does (new
 * queries, closing the pool) and makes "never called from inside the call
 * itself" hold for the error paths of the API functions too.
 *
 * Query timeout.  libpq's PQcancel() is blocking (it opens a second
 * connection and waits for it), which would stall the whole loop.  On a
 * timeout the connection is therefore treated as broken: it is closed, the
 * query fails with -ETIMEDOUT, and the connection reconnects after the
 * backoff.  The server notices the closed socket and ends the backend.
 *
 * Queries that were sent when their connection breaks fail with -ENOTCONN
 * and are never retried, as they may have been writes that committed.
 *
 * LISTEN.  The listener connection sends one batch of LISTEN statements
 * for the subscriptions it does not yet listen to, whenever it is up and
 * idle.  A subscription's on_reconnect runs when its LISTEN succeeded again
 * on a new connection after having been active before (not the first
 * time), so notifications sent after on_reconnect are never missed.  */
#include "db.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Limits on configuration and input. */
#define DB_MAX_POOL_SIZE 64
#define DB_MAX_PARAMS 65535
#define DB_MAX_CHANNEL 63        /* PostgreSQL's NAMEDATALEN - 1. */

/* Connection states; the X-macro gives the enum and the name table. */
#define DB_CONN_STATES(X)                                                 \
    X(DOWN, "down")                                                       \
    X(CONNECTING, "connecting")                                           \
    X(UP, "up")                                                           \
    X(CLOSED, "closed")

enum conn_state {
#define DB_STATE_ENUM(name, str) CONN_##name,
    DB_CONN_STATES(DB_STATE_ENUM)
#undef DB_STATE_ENUM
};

static const char *const conn_state_names[] = {
#define DB_STATE_NAME(name, str) str,
    DB_CONN_STATES(DB_STATE_NAME)
#undef DB_STATE_NAME
};

enum req_kind {
    REQ_QUERY,          /* A pool query; 'qcb'. */
    REQ_TX_BEGIN,       /* BEGIN on a connection it pins; 'tcb'. */
    REQ_TX_QUERY,       /* A statement inside a transaction; 'qcb'. */
    REQ_TX_COMMIT,      /* COMMIT (ROLLBACK when a statement failed); 'tcb'. */
    REQ_TX_ROLLBACK,    /* ROLLBACK; 'tcb' may be NULL. */
    REQ_LISTEN,         /* LISTEN statements on the listener; internal. */
    REQ_NOTIFY,         /* A notification to deliver; completion only. */
    REQ_RECONNECT,      /* An on_reconnect call; completion only. */
};

struct db_result {
    PGresult *pg;
};

/* One unit of work: a statement waiting, running, or a finished request
 * waiting for its callback.  The SQL text and parameters are copied into
 * the same allocation, behind 'argv'. */
struct db_req {
    struct db_req *next;
    enum req_kind kind;
    db_tx *tx;
    db_query_cb qcb;
    db_tx_cb tcb;
    db_notify_cb ncb;
    void (*rcb)(void *arg);
    void *arg;
    PGresult *res;              /* The result collected so far. */
    int status;                 /* For the callback: 0 or -errno. */
    char sqlstate[6];
    char *msg;                  /* Error message for the callback (malloc'd). */
    struct db_result result;
    const char *sql;
    int nparams;
    char *argv[];
};

struct req_queue {
    struct db_req *head, *tail;
    unsigned len;
};

/* A LISTEN subscription. */
struct sub {
    struct sub *next;
    char channel[DB_MAX_CHANNEL + 1];
    db_notify_cb cb;
    void (*on_reconnect)(void *arg);
    void *arg;
    bool listened;              /* LISTEN done on the current connection. */
    bool in_batch;              /* LISTEN sent, answer pending. */
    bool was_active;            /* LISTEN succeeded on some connection. */
};

struct pconn {
    db_pool *pool;
    enum conn_state state;
    bool listener;
    bool ever_up;
    bool flushing;              /* PQflush() has more to send. */
    unsigned id;
    PGconn *pg;
    uv_poll_t *poll;            /* Heap-allocated: re-created when the socket changes. */
    int poll_fd;
    int poll_events;
    uv_timer_t timer;           /* Backoff, connect timeout or query timeout. */
    unsigned backoff_ms;
    struct db_req *cur;         /* The request being run. */
    db_tx *tx;                  /* The transaction pinning this connection. */
};

struct db_tx {
    db_tx *prev, *next;         /* The pool's list of live transactions. */
    db_pool *pool;
    struct pconn *conn;         /* NULL before BEGIN ran or once broken. */
    struct req_queue q;         /* Statements waiting for the connection. */
    struct db_req *fin;         /* Preallocated COMMIT/ROLLBACK request. */
    bool broken;                /* The connection died: only rollback works. */
    bool finishing;             /* Commit or rollback was requested. */
    int err_code;               /* First statement error, reported by commit. */
    char err_sqlstate[6];
    char *err_msg;
};

struct db_pool {
    uv_loop_t *loop;
    struct db_config cfg;
    char *conninfo;
    struct pconn *conns;
    unsigned nconns;
    struct pconn *listener;     /* Created by the first db_listen(). */
    struct sub *subs, *subs_tail;
    struct req_queue queue;     /* Queries waiting for a free connection. */
    struct req_queue done;      /* Finished requests waiting for callbacks. */
    uv_timer_t defer;           /* Runs the completion list. */
    unsigned nhandles;          /* Open handles other than 'defer'. */
    bool closing, defer_closing, in_done;
    void (*close_done)(void *arg);
    void *close_arg;
    db_tx *txs;
    uint64_t queries, failures, reconnects, notifications;
};

static void conn_connect(struct pconn *c);
static void conn_next(struct pconn *c);
static void conn_broken(struct pconn *c, int code, const char *msg);
static void on_poll(uv_poll_t *h, int status, int events);

/* ---- Small helpers. */

static void
q_push(struct req_queue *q, struct db_req *r)
{
    r->next = NULL;
    if (q->tail)
        q->tail->next = r;
    else
        q->head = r;
    q->tail = r;
    q->len++;
}

static struct db_req *
q_pop(struct req_queue *q)
{
    struct db_req *r = q->head;
    if (!r)
        return NULL;
    q->head = r->next;
    if (!q->head)
        q->tail = NULL;
    q->len--;
    r->next = NULL;
    return r;
}

/* Allocates a request holding copies of 'sql' and the parameters; NULL
 * when out of memory. */
static struct db_req *
req_new(enum req_kind kind, const char *sql, int nparams,
        const char *const *params)
{
    size_t n = sizeof(struct db_req) + (size_t)nparams * sizeof(char *) +
               strlen(sql) + 1;
    for (int i = 0; i < nparams; i++)
        if (params[i])
            n += strlen(params[i]) + 1;
    struct db_req *r = calloc(1, n);
    if (!r)
        return NULL;
    r->kind = kind;
    r->nparams = nparams;
    char *s = (char *)(r->argv + nparams);
    for (int i = 0; i < nparams; i++) {
        if (!params[i])
            continue;
        size_t len = strlen(params[i]) + 1;
        memcpy(s, params[i], len);
        r->argv[i] = s;
        s += len;
    }
    memcpy(s, sql, strlen(sql) + 1);
    r->sql = s;
    return r;
}

static void
req_free(struct db_req *r)
{
    if (!r)
        return;
    PQclear(r->res);
    free(r->msg);
    free(r);
}

/* Copies a message without its trailing newline (libpq adds one). */
static char *
msg_dup(const char *m)
{
    if (!m)
        m = "";
    size_t len = strlen(m);
    while (len && (m[len - 1] == '\n' || m[len - 1] == ' '))
        len--;
    return strndup(m, len);
}

static void
sqlstate_copy(char dst[6], const char *src)
{
    dst[0] = '\0';
    if (src && strlen(src) == 5)
        memcpy(dst, src, 6);
}

static void
notice_ignore(void *arg, const char *message)
{
    log_debug("db", "server notice: %.*s", (int)strcspn(message, "\n"), message);
}

/* Evaluates a finished statement: 0 for success, else a negative errno with
 * the SQLSTATE and message of the failure.  'res' may be NULL (no result
 * at all), then the connection's message is used. */
static int
result_status(PGconn *pg, const PGresult *res, char sqlstate[6],
              const char **msg)
{
    sqlstate[0] = '\0';
    *msg = "";
    if (res) {
        switch (PQresultStatus(res)) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
        case PGRES_EMPTY_QUERY:
        case PGRES_SINGLE_TUPLE:
            return 0;
        case PGRES_COPY_OUT:
        case PGRES_COPY_IN:
        case PGRES_COPY_BOTH:
            *msg = "COPY is not supported";
            return -ENOTSUP;
        case PGRES_BAD_RESPONSE:
        case PGRES_NONFATAL_ERROR:
        case PGRES_FATAL_ERROR:
        case PGRES_PIPELINE_SYNC:
        case PGRES_PIPELINE_ABORTED:
        default:
            break;
        }
        sqlstate_copy(sqlstate, PQresultErrorField(res, PG_DIAG_SQLSTATE));
        *msg = PQresultErrorMessage(res);
    } else if (pg) {
        *msg = PQerrorMessage(pg);
    }
    if (sqlstate[0])
        return db_sqlstate_errno(sqlstate);
    return !pg || PQstatus(pg) == CONNECTION_BAD ? -ENOTCONN : -EIO;
}

/* ---- Completions. */

static void maybe_finish_close(db_pool *p);

static void
tx_free(db_tx *tx)
{
    if (!tx)
        return;
    db_pool *p = tx->pool;
    if (tx->prev)
        tx->prev->next = tx->next;
    else
        p->txs = tx->next;
    if (tx->next)
        tx->next->prev = tx->prev;
    struct db_req *r;
    while ((r = q_pop(&tx->q)))
        req_free(r);
    req_free(tx->fin);
    free(tx->err_msg);
    free(tx);
}

static void
run_completion(db_pool *p, struct db_req *r)
{
    struct db_error err = { .code = r->status, .message = r->msg ? r->msg : "" };
    memcpy(err.sqlstate, r->sqlstate, sizeof(err.sqlstate));
    const struct db_error *e = r->status < 0 ? &err : NULL;

    switch (r->kind) {
    case REQ_QUERY:
    case REQ_TX_QUERY:
        r->result.pg = r->res;
        r->qcb(r->status, r->status < 0 ? NULL : &r->result, e, r->arg);
        break;
    case REQ_TX_BEGIN:
        if (r->status == 0) {
            r->tcb(0, r->tx, NULL, r->arg);
        } else {
            r->tcb(r->status, NULL, e, r->arg);
            tx_free(r->tx);
        }
        break;
    case REQ_TX_COMMIT:
    case REQ_TX_ROLLBACK:
        if (r->tcb)
            r->tcb(r->status, NULL, e, r->arg);
        tx_free(r->tx);
        break;
    case REQ_NOTIFY:
        r->ncb(r->sql, r->argv[0], r->arg);
        break;
    case REQ_RECONNECT:
        r->rcb(r->arg);
        break;
    case REQ_LISTEN:
    default:
        break;
    }
}

static void
on_defer(uv_timer_t *t)
{
    db_pool *p = t->data;
    struct db_req *list = p->done.head;
    p->done.head = p->done.tail = NULL;
    p->done.len = 0;
    p->in_done = true;
    while (list) {
        struct db_req *r = list;
        list = r->next;
        run_completion(p, r);
        req_free(r);
    }
    p->in_done = false;
    maybe_finish_close(p);
}

/* Queues 'r' for its callback on the next loop iteration. */
static void
complete(db_pool *p, struct db_req *r)
{
    if ((r->kind == REQ_QUERY || r->kind == REQ_TX_QUERY ||
         r->kind == REQ_TX_BEGIN || r->kind == REQ_TX_COMMIT) && r->status < 0)
        p->failures++;
    q_push(&p->done, r);
    if (!uv_is_active((uv_handle_t *)&p->defer))
        uv_timer_start(&p->defer, on_defer, 0, 0);
}

/* Completes 'r' with a failure.  A rollback "fails" successfully: the
 * server rolls back a transaction whose connection is gone. */
static void
complete_error(db_pool *p, struct db_req *r, int code, const char *sqlstate,
               const char *msg)
{
    PQclear(r->res);
    r->res = NULL;
    if (r->kind == REQ_TX_ROLLBACK) {
        r->status = 0;
    } else {
        r->status = code;
        sqlstate_copy(r->sqlstate, sqlstate);
        free(r->msg);
        r->msg = msg_dup(msg);
    }
    complete(p, r);
}

/* ---- Handles. */

static void
on_handle_closed(uv_handle_t *h)
{
    struct pconn *c = h->data;
    db_pool *p = c->pool;
    if (h->type == UV_POLL)
        free(h);
    p->nhandles--;
    maybe_finish_close(p);
}

static void
on_defer_closed(uv_handle_t *h)
{
    db_pool *p = h->data;
    if (p->close_done)
        p->close_done(p->close_arg);
}

static void
maybe_finish_close(db_pool *p)
{
    if (!p->closing || p->nhandles || p->done.head || p->in_done ||
        p->defer_closing)
        return;
    p->defer_closing = true;
    uv_close((uv_handle_t *)&p->defer, on_defer_closed);
}

static void
poll_close(struct pconn *c)
{
    if (!c->poll)
        return;
    uv_poll_stop(c->poll);
    uv_close((uv_handle_t *)c->poll, on_handle_closed);
    c->poll = NULL;
    c->poll_fd = -1;
    c->poll_events = 0;
}

/* Watches the connection's socket for 'events'.  A new uv_poll is made
 * when PQsocket() changed (libpq may open a new socket while connecting,
 * for another address or after a refused SSL request); with 'reset' the
 * watch is also re-registered on an unchanged descriptor number, as the
 * socket behind it may still be a new one. */
static int
conn_watch(struct pconn *c, int events, bool reset)
{
    db_pool *p = c->pool;
    int fd = PQsocket(c->pg);
    if (fd < 0)
        return -EBADF;
    if (c->poll && c->poll_fd != fd)
        poll_close(c);
    if (!c->poll) {
        uv_poll_t *h = malloc(sizeof(*h));
        if (!h)
            return -ENOMEM;
        int rc = uv_poll_init(p->loop, h, fd);
        if (rc < 0) {
            free(h);
            return rc;
        }
        h->data = c;
        p->nhandles++;
        c->poll = h;
        c->poll_fd = fd;
        c->poll_events = 0;
    } else if (reset && c->poll_events) {
        uv_poll_stop(c->poll);
        c->poll_events = 0;
    }
    if (events != c->poll_events) {
        int rc = uv_poll_start(c->poll, events, on_poll);
        if (rc < 0)
            return rc;
        c->poll_events = events;
    }
    return 0;
}

/* ---- Connection state machine. */

static bool
pool_connected(const db_pool *p)
{
    for (unsigned i = 0; i < p->nconns; i++)
        if (p->conns[i].state == CONN_UP)
            return true;
    return false;
}

static void
set_state(struct pconn *c, enum conn_state s)
{
    if (c->state != s)
        log_debug("db", "connection %u%s: %s -> %s", c->id,
                  c->listener ? " (listener)" : "",
                  conn_state_names[c->state], conn_state_names[s]);
    c->state = s;
}

/* Fails the transaction pinning 'c' and the request being run. */
static void
conn_fail_work(struct pconn *c, int code, int rest_code, const char *msg)
{
    db_pool *p = c->pool;
    db_tx *tx = c->tx;
    if (tx) {
        struct db_req *r;
        tx->broken = true;
        tx->conn = NULL;
        c->tx = NULL;
        while ((r = q_pop(&tx->q)))
            complete_error(p, r, rest_code, NULL, msg);
    }
    struct db_req *r = c->cur;
    c->cur = NULL;
    if (!r)
        return;
    if (r->kind == REQ_LISTEN) {
        req_free(r);
        return;
    }
    /* Keep the server's SQLSTATE when it said why it ended the session
     * (57P01 admin_shutdown...), the status stays the connection's. */
    char sqlstate[6] = "";
    const char *m = msg;
    if (r->res && PQresultStatus(r->res) == PGRES_FATAL_ERROR) {
        sqlstate_copy(sqlstate, PQresultErrorField(r->res, PG_DIAG_SQLSTATE));
        m = PQresultErrorMessage(r->res);
    }
    char *copy = msg_dup(m);
    complete_error(p, r, code, sqlstate, copy);
    free(copy);
}

/* Closes the libpq connection and its socket watch. */
static void
conn_release(struct pconn *c)
{
    uv_timer_stop(&c->timer);
    poll_close(c);
    PQfinish(c->pg);
    c->pg = NULL;
    c->flushing = false;
}

static void on_timer(uv_timer_t *t);

/* The connection failed or broke: fail its work, close it, retry later.
 * When it was the last query connection up, the waiting queries fail too,
 * since nothing would run them. */
static void
conn_broken(struct pconn *c, int code, const char *msg)
{
    db_pool *p = c->pool;
    bool was_up = c->state == CONN_UP;
    if (c->state == CONN_CLOSED)
        return;
    log_debug("db", "connection %u broken: %s", c->id, msg ? msg : "");
    conn_fail_work(c, code, -ENOTCONN, msg);
    conn_release(c);
    if (c->listener) {
        for (struct sub *s = p->subs; s; s = s->next)
            s->listened = s->in_batch = false;
    }
    /* Exponential backoff: min, 2*min, 4*min... up to max; reset when a
     * connection comes up. */
    unsigned delay = c->backoff_ms ? c->backoff_ms : p->cfg.backoff_min_ms;
    if (delay > p->cfg.backoff_max_ms)
        delay = p->cfg.backoff_max_ms;
    c->backoff_ms = delay > p->cfg.backoff_max_ms / 2 ? p->cfg.backoff_max_ms
                                                      : delay * 2;
    set_state(c, CONN_DOWN);
    uv_timer_start(&c->timer, on_timer, delay, 0);
    if (was_up && !c->listener && !pool_connected(p)) {
        struct db_req *r;
        while ((r = q_pop(&p->queue)))
            complete_error(p, r, -ENOTCONN, NULL,
                           "the connection to the database was lost");
    }
}

static void
conn_up(struct pconn *c)
{
    db_pool *p = c->pool;
    uv_timer_stop(&c->timer);
    set_state(c, CONN_UP);
    c->backoff_ms = 0;
    if (c->ever_up)
        p->reconnects++;
    c->ever_up = true;
    int rc = conn_watch(c, UV_READABLE, true);
    if (rc < 0) {
        conn_broken(c, -ENOTCONN, uv_strerror(rc));
        return;
    }
    conn_next(c);
}

static void
conn_connect_step(struct pconn *c, PostgresPollingStatusType st)
{
    int events;
    switch (st) {
    case PGRES_POLLING_OK:
        conn_up(c);
        return;
    case PGRES_POLLING_READING:
        events = UV_READABLE;
        break;
    case PGRES_POLLING_WRITING:
        events = UV_WRITABLE;
        break;
    case PGRES_POLLING_FAILED:
    case PGRES_POLLING_ACTIVE:
    default:
        conn_broken(c, -ENOTCONN, PQerrorMessage(c->pg));
        return;
    }
    int rc = conn_watch(c, events, true);
    if (rc < 0)
        conn_broken(c, -ENOTCONN, uv_strerror(rc));
}

/* Starts a non-blocking connection attempt.  The host in the conninfo
 * should be an address or a socket directory: libpq resolves names
 * with a blocking getaddrinfo(). */
static void
conn_connect(struct pconn *c)
{
    db_pool *p = c->pool;
    set_state(c, CONN_CONNECTING);
    c->pg = PQconnectStart(p->conninfo);
    if (!c->pg) {
        conn_broken(c, -ENOMEM, "out of memory");
        return;
    }
    if (PQstatus(c->pg) == CONNECTION_BAD || PQsetnonblocking(c->pg, 1) != 0) {
        conn_broken(c, -ENOTCONN, PQerrorMessage(c->pg));
        return;
    }
    PQsetNoticeProcessor(c->pg, notice_ignore, c);
    uv_timer_start(&c->timer, on_timer, p->cfg.connect_timeout_ms, 0);
    /* libpq's protocol: behave as if PQconnectPoll returned WRITING. */
    conn_connect_step(c, PGRES_POLLING_WRITING);
}

static void
on_timer(uv_timer_t *t)
{
    struct pconn *c = t->data;
    switch (c->state) {
    case CONN_DOWN:
        conn_connect(c);
        break;
    case CONN_CONNECTING:
        conn_broken(c, -ENOTCONN, "timed out connecting to the database");
        break;
    case CONN_UP:
        if (c->cur)
            conn_broken(c, -ETIMEDOUT, "the query timed out");
        break;
    case CONN_CLOSED:
    default:
        break;
    }
}

/* Sends what libpq buffered and watches for the answer (and for writability
 * while output remains). */
static void
conn_flush(struct pconn *c)
{
    int rc = PQflush(c->pg);
    if (rc < 0) {
        conn_broken(c, -ENOTCONN, PQerrorMessage(c->pg));
        return;
    }
    c->flushing = rc == 1;
    rc = conn_watch(c, UV_READABLE | (c->flushing ? UV_WRITABLE : 0), false);
    if (rc < 0)
        conn_broken(c, -ENOTCONN, uv_strerror(rc));
}

static void
conn_send(struct pconn *c, struct db_req *r)
{
    db_pool *p = c->pool;
    const char *sql = r->sql;
    int ok;
    c->cur = r;
    /* The final statement of a transaction is chosen now: a failed
     * statement turns COMMIT into ROLLBACK. */
    if (r->kind == REQ_TX_COMMIT)
        sql = r->tx->err_code ? "ROLLBACK" : "COMMIT";
    else if (r->kind == REQ_TX_ROLLBACK)
        sql = "ROLLBACK";
    log_debug("db", "connection %u: sending %.60s", c->id, sql);
    if (r->kind == REQ_LISTEN)
        ok = PQsendQuery(c->pg, sql);
    else
        ok = PQsendQueryParams(c->pg, sql, r->nparams, NULL,
                               (const char *const *)r->argv, NULL, NULL, 0);
    if (!ok) {
        conn_broken(c, -ENOTCONN, PQerrorMessage(c->pg));
        return;
    }
    uv_timer_start(&c->timer, on_timer, p->cfg.query_timeout_ms, 0);
    conn_flush(c);
}

/* Sends LISTEN for the subscriptions not yet listened to on this
 * connection.  Channel names were checked to be identifiers, so quoting
 * them is enough to make them safe (and case-sensitive, as pg_notify()). */
static void
listener_send(struct pconn *c)
{
    db_pool *p = c->pool;
    size_t n = 1;
    for (struct sub *s = p->subs; s; s = s->next)
        if (!s->listened && !s->in_batch)
            n += strlen(s->channel) + sizeof("LISTEN \"\";");
    if (n == 1)
        return;
    char *sql = malloc(n);
    if (!sql) {
        conn_broken(c, -ENOMEM, "out of memory");
        return;
    }
    size_t off = 0;
    for (struct sub *s = p->subs; s; s = s->next) {
        if (s->listened || s->in_batch)
            continue;
        off += (size_t)snprintf(sql + off, n - off, "LISTEN \"%s\";", s->channel);
        s->in_batch = true;
    }
    struct db_req *r = req_new(REQ_LISTEN, sql, 0, NULL);
    free(sql);
    if (!r) {
        conn_broken(c, -ENOMEM, "out of memory");
        return;
    }
    conn_send(c, r);
}

static void
listener_done(struct pconn *c, int status, const char *msg)
{
    db_pool *p = c->pool;
    if (status < 0) {
        conn_broken(c, status, msg);
        return;
    }
    for (struct sub *s = p->subs; s; s = s->next) {
        if (!s->in_batch)
            continue;
        s->in_batch = false;
        s->listened = true;
        if (s->was_active && s->on_reconnect) {
            struct db_req *r = req_new(REQ_RECONNECT, "", 0, NULL);
            if (r) {
                r->rcb = s->on_reconnect;
                r->arg = s->arg;
                complete(p, r);
            }
        }
        s->was_active = true;
    }
}

/* The request being run got all its results. */
static void
conn_finish_cur(struct pconn *c)
{
    db_pool *p = c->pool;
    struct db_req *r = c->cur;
    db_tx *tx = r->tx;
    char sqlstate[6];
    const char *msg;
    c->cur = NULL;
    uv_timer_stop(&c->timer);
    int status = result_status(c->pg, r->res, sqlstate, &msg);

    switch (r->kind) {
    case REQ_LISTEN: {
        char *copy = status < 0 ? msg_dup(msg) : NULL;
        req_free(r);
        listener_done(c, status, copy);
        free(copy);
        break;
    }
    case REQ_TX_QUERY:
        if (status < 0 && !tx->err_code) {
            tx->err_code = status;
            memcpy(tx->err_sqlstate, sqlstate, sizeof(sqlstate));
            tx->err_msg = msg_dup(msg);
        }
        goto deliver;
    case REQ_TX_BEGIN:
        if (status < 0) {
            c->tx = NULL;
            tx->conn = NULL;
        }
        goto deliver;
    case REQ_TX_COMMIT:
        c->tx = NULL;
        tx->conn = NULL;
        if (tx->err_code) {
            /* ROLLBACK was sent: report the statement's error. */
            r->status = tx->err_code;
            memcpy(r->sqlstate, tx->err_sqlstate, sizeof(r->sqlstate));
            r->msg = msg_dup(tx->err_msg);
            PQclear(r->res);
            r->res = NULL;
            complete(p, r);
            break;
        }
        goto deliver;
    case REQ_TX_ROLLBACK:
        c->tx = NULL;
        tx->conn = NULL;
        goto deliver;
    case REQ_QUERY:
    case REQ_NOTIFY:
    case REQ_RECONNECT:
    default:
    deliver:
        r->status = status;
        if (status < 0) {
            sqlstate_copy(r->sqlstate, sqlstate);
            r->msg = msg_dup(msg);
            PQclear(r->res);
            r->res = NULL;
        }
        complete(p, r);
        break;
    }
    if (c->state != CONN_UP)
        return;
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_broken(c, -ENOTCONN, PQerrorMessage(c->pg));
        return;
    }
    conn_next(c);
}

/* Starts the next piece of work on an idle connection. */
static void
conn_next(struct pconn *c)
{
    db_pool *p = c->pool;
    struct db_req *r;
    if (c->state != CONN_UP || c->cur || p->closing)
        return;
    if (c->listener) {
        listener_send(c);
        return;
    }
    if (c->tx) {
        if ((r = q_pop(&c->tx->q)))
            conn_send(c, r);
        return;
    }
    if (!(r = q_pop(&p->queue)))
        return;
    if (r->kind == REQ_TX_BEGIN) {
        c->tx = r->tx;
        r->tx->conn = c;
    }
    conn_send(c, r);
}

static void
pool_dispatch(db_pool *p)
{
    for (unsigned i = 0; i < p->nconns && p->queue.head; i++) {
        struct pconn *c = &p->conns[i];
        if (c->state == CONN_UP && !c->cur && !c->tx)
            conn_next(c);
    }
}

static void
conn_notifies(struct pconn *c)
{
    db_pool *p = c->pool;
    PGnotify *n;
    while ((n = PQnotifies(c->pg))) {
        if (c->listener) {
            p->notifications++;
            for (struct sub *s = p->subs; s; s = s->next) {
                if (strcmp(s->channel, n->relname))
                    continue;
                const char *payload = n->extra ? n->extra : "";
                struct db_req *r = req_new(REQ_NOTIFY, n->relname, 1, &payload);
                if (!r)
                    continue;
                r->ncb = s->cb;
                r->arg = s->arg;
                complete(p, r);
            }
        }
        PQfreemem(n);
    }
}

/* Reads the results that arrived and finishes the current request when
 * libpq has them all. */
static void
conn_collect(struct pconn *c)
{
    while (c->state == CONN_UP && c->cur && !PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (!res) {
            conn_finish_cur(c);
            continue;
        }
        struct db_req *r = c->cur;
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            /* libpq would wait for COPY data forever. */
            PQclear(res);
            conn_broken(c, -ENOTSUP, "COPY is not supported");
            return;
        }
        /* Keep the first error, else the last result. */
        if (!r->res) {
            r->res = res;
        } else if (PQresultStatus(r->res) == PGRES_FATAL_ERROR) {
            PQclear(res);
        } else {
            PQclear(r->res);
            r->res = res;
        }
    }
}

static void
on_poll(uv_poll_t *h, int status, int events)
{
    struct pconn *c = h->data;
    if (status < 0) {
        conn_broken(c, -ENOTCONN, uv_strerror(status));
        return;
    }
    if (c->state == CONN_CONNECTING) {
        conn_connect_step(c, PQconnectPoll(c->pg));
        return;
    }
    if (c->state != CONN_UP)
        return;
    if ((events & UV_READABLE) && !PQconsumeInput(c->pg)) {
        conn_broken(c, -ENOTCONN, PQerrorMessage(c->pg));
        return;
    }
    if (c->flushing) {
        conn_flush(c);
        if (c->state != CONN_UP)
            return;
    }
    conn_collect(c);
    if (c->state != CONN_UP)
        return;
    conn_notifies(c);
    if (PQstatus(c->pg) == CONNECTION_BAD)
        conn_broken(c, -ENOTCONN, PQerrorMessage(c->pg));
}

static void
conn_init(db_pool *p, struct pconn *c, unsigned id, bool listener)
{
    memset(c, 0, sizeof(*c));
    c->pool = p;
    c->id = id;
    c->listener = listener;
    c->poll_fd = -1;
    c->state = CONN_DOWN;
    uv_timer_init(p->loop, &c->timer);
    c->timer.data = c;
    p->nhandles++;
}

/* Pool close: fail the work with -ECANCELED and close everything. */
static void
conn_shutdown(struct pconn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    conn_fail_work(c, -ECANCELED, -ECANCELED, "the database pool was closed");
    conn_release(c);
    set_state(c, CONN_CLOSED);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

/* ---- Pool API. */

void
db_config_defaults(struct db_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->pool_size = 4;
    cfg->max_queue = 10000;
    cfg->query_timeout_ms = 30000;
    cfg->connect_timeout_ms = 5000;
    cfg->backoff_min_ms = 100;
    cfg->backoff_max_ms = 5000;
}

int
db_pool_new(uv_loop_t *loop, const struct db_config *cfg, db_pool **out)
{
    struct db_config d;
    *out = NULL;
    if (!loop || !cfg || !cfg->conninfo || cfg->pool_size > DB_MAX_POOL_SIZE)
        return -EINVAL;
    /* A malformed conninfo would fail every attempt: refuse it now. */
    PQconninfoOption *opts = PQconninfoParse(cfg->conninfo, NULL);
    if (!opts)
        return -EINVAL;
    PQconninfoFree(opts);
    db_config_defaults(&d);
    db_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->loop = loop;
    p->cfg = *cfg;
    /* Zero means "the default" for every setting. */
    if (!p->cfg.pool_size)
        p->cfg.pool_size = d.pool_size;
    if (!p->cfg.max_queue)
        p->cfg.max_queue = d.max_queue;
    if (!p->cfg.query_timeout_ms)
        p->cfg.query_timeout_ms = d.query_timeout_ms;
    if (!p->cfg.connect_timeout_ms)
        p->cfg.connect_timeout_ms = d.connect_timeout_ms;
    if (!p->cfg.backoff_min_ms)
        p->cfg.backoff_min_ms = d.backoff_min_ms;
    if (!p->cfg.backoff_max_ms)
        p->cfg.backoff_max_ms = d.backoff_max_ms;
    if (p->cfg.backoff_max_ms < p->cfg.backoff_min_ms)
        p->cfg.backoff_max_ms = p->cfg.backoff_min_ms;
    p->conninfo = strdup(cfg->conninfo);
    p->conns = calloc(p->cfg.pool_size, sizeof(*p->conns));
    if (!p->conninfo || !p->conns) {
        free(p->conninfo);
        free(p->conns);
        free(p);
        return -ENOMEM;
    }
    p->cfg.conninfo = p->conninfo;
    p->nconns = p->cfg.pool_size;
    /* From here on nothing fails: handles are live. */
    uv_timer_init(loop, &p->defer);
    p->defer.data = p;
    for (unsigned i = 0; i < p->nconns; i++)
        conn_init(p, &p->conns[i], i, false);
    for (unsigned i = 0; i < p->nconns; i++)
        conn_connect(&p->conns[i]);
    *out = p;
    return 0;
}

void
db_pool_close(db_pool *p, void (*done)(void *arg), void *arg)
{
    if (!p || p->closing)
        return;
    p->closing = true;
    p->close_done = done;
    p->close_arg = arg;
    for (unsigned i = 0; i < p->nconns; i++)
        conn_shutdown(&p->conns[i]);
    if (p->listener)
        conn_shutdown(p->listener);
    struct db_req *r;
    while ((r = q_pop(&p->queue)))
        complete_error(p, r, -ECANCELED, NULL, "the database pool was closed");
    maybe_finish_close(p);
}

void
db_pool_free(db_pool *p)
{
    if (!p)
        return;
    while (p->txs)
        tx_free(p->txs);
    struct db_req *r;
    while ((r = q_pop(&p->queue)))
        req_free(r);
    while ((r = q_pop(&p->done)))
        req_free(r);
    while (p->subs) {
        struct sub *s = p->subs;
        p->subs = s->next;
        free(s);
    }
    free(p->listener);
    free(p->conns);
    free(p->conninfo);
    free(p);
}

bool
db_pool_available(const db_pool *p)
{
    return p && !p->closing && pool_connected(p);
}

static bool
pool_has_idle(const db_pool *p)
{
    for (unsigned i = 0; i < p->nconns; i++) {
        const struct pconn *c = &p->conns[i];
        if (c->state == CONN_UP && !c->cur && !c->tx)
            return true;
    }
    return false;
}

/* Checks what db_query() and db_tx_begin() have in common. */
static int
pool_admit(db_pool *p)
{
    if (p->closing)
        return -ECANCELED;
    if (!pool_connected(p))
        return -ENOTCONN;
    if (p->queue.len >= p->cfg.max_queue && !pool_has_idle(p))
        return -EBUSY;
    return 0;
}

static bool
params_valid(const char *sql, int nparams, const char *const *params)
{
    return sql && nparams >= 0 && nparams <= DB_MAX_PARAMS &&
           (nparams == 0 || params);
}

int
db_query(db_pool *p, const char *sql, int nparams,
         const char *const *params, db_query_cb cb, void *arg)
{
    if (!p || !cb || !params_valid(sql, nparams, params))
        return -EINVAL;
    p->queries++;
    int rc = pool_admit(p);
    if (rc < 0) {
        p->failures++;
        return rc;
    }
    struct db_req *r = req_new(REQ_QUERY, sql, nparams, params);
    if (!r) {
        p->failures++;
        return -ENOMEM;
    }
    r->qcb = cb;
    r->arg = arg;
    q_push(&p->queue, r);
    pool_dispatch(p);
    return 0;
}

/* ---- Transactions. */

int
db_tx_begin(db_pool *p, db_tx_cb cb, void *arg)
{
    if (!p || !cb)
        return -EINVAL;
    int rc = pool_admit(p);
    if (rc < 0) {
        p->failures++;
        return rc;
    }
    db_tx *tx = calloc(1, sizeof(*tx));
    struct db_req *r = req_new(REQ_TX_BEGIN, "BEGIN", 0, NULL);
    struct db_req *fin = req_new(REQ_TX_ROLLBACK, "ROLLBACK", 0, NULL);
    if (!tx || !r || !fin) {
        free(tx);
        req_free(r);
        req_free(fin);
        p->failures++;
        return -ENOMEM;
    }
    tx->pool = p;
    tx->fin = fin;
    fin->tx = tx;
    tx->next = p->txs;
    if (p->txs)
        p->txs->prev = tx;
    p->txs = tx;
    r->tx = tx;
    r->tcb = cb;
    r->arg = arg;
    q_push(&p->queue, r);
    pool_dispatch(p);
    return 0;
}

int
db_tx_query(db_tx *tx, const char *sql, int nparams,
            const char *const *params, db_query_cb cb, void *arg)
{
    if (!tx || !cb || !params_valid(sql, nparams, params) || tx->finishing)
        return -EINVAL;
    db_pool *p = tx->pool;
    p->queries++;
    if (tx->broken || !tx->conn) {
        p->failures++;
        return p->closing ? -ECANCELED : -ENOTCONN;
    }
    struct db_req *r = req_new(REQ_TX_QUERY, sql, nparams, params);
    if (!r) {
        p->failures++;
        return -ENOMEM;
    }
    r->tx = tx;
    r->qcb = cb;
    r->arg = arg;
    q_push(&tx->q, r);
    conn_next(tx->conn);
    return 0;
}

/* Queues the transaction's final statement, or completes it at once when
 * the connection is already gone. */
static void
tx_finish(db_tx *tx, enum req_kind kind, db_tx_cb cb, void *arg)
{
    db_pool *p = tx->pool;
    struct db_req *r = tx->fin;
    tx->fin = NULL;
    tx->finishing = true;
    r->kind = kind;
    r->tcb = cb;
    r->arg = arg;
    if (tx->broken || !tx->conn) {
        complete_error(p, r, p->closing ? -ECANCELED : -ENOTCONN, NULL,
                       "the connection to the database was lost");
        return;
    }
    q_push(&tx->q, r);
    conn_next(tx->conn);
}

int
db_tx_commit(db_tx *tx, db_tx_cb cb, void *arg)
{
    if (!tx || tx->finishing)
        return -EINVAL;
    tx_finish(tx, REQ_TX_COMMIT, cb, arg);
    return 0;
}

void
db_tx_rollback(db_tx *tx, db_tx_cb cb, void *arg)
{
    if (!tx || tx->finishing)
        return;
    tx_finish(tx, REQ_TX_ROLLBACK, cb, arg);
}

/* ---- LISTEN/NOTIFY. */

static bool
channel_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > DB_MAX_CHANNEL)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     ch == '_';
        bool digit = (ch >= '0' && ch <= '9') || ch == '$';
        if (!alpha && !(i > 0 && digit))
            return false;
    }
    return true;
}

int
db_listen(db_pool *p, const char *channel, db_notify_cb cb,
          void (*on_reconnect)(void *arg), void *arg)
{
    if (!p || !cb || !channel_valid(channel))
        return -EINVAL;
    if (p->closing)
        return -ECANCELED;
    struct sub *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    if (!p->listener) {
        p->listener = malloc(sizeof(*p->listener));
        if (!p->listener) {
            free(s);
            return -ENOMEM;
        }
        conn_init(p, p->listener, p->nconns, true);
        conn_connect(p->listener);
    }
    memcpy(s->channel, channel, strlen(channel) + 1);
    s->cb = cb;
    s->on_reconnect = on_reconnect;
    s->arg = arg;
    if (p->subs_tail)
        p->subs_tail->next = s;
    else
        p->subs = s;
    p->subs_tail = s;
    conn_next(p->listener);
    return 0;
}

/* ---- Results. */

int
db_rows(const db_result *r)
{
    return r && r->pg ? PQntuples(r->pg) : 0;
}

int
db_cols(const db_result *r)
{
    return r && r->pg ? PQnfields(r->pg) : 0;
}

int
db_col(const db_result *r, const char *name)
{
    return r && r->pg && name ? PQfnumber(r->pg, name) : -1;
}

const char *
db_get(const db_result *r, int row, int col)
{
    if (!r || !r->pg || row < 0 || col < 0 || row >= PQntuples(r->pg) ||
        col >= PQnfields(r->pg) || PQgetisnull(r->pg, row, col))
        return NULL;
    return PQgetvalue(r->pg, row, col);
}

const char *
db_getn(const db_result *r, int row, const char *name)
{
    return db_get(r, row, db_col(r, name));
}

long
db_affected(const db_result *r)
{
    const char *s = r && r->pg ? PQcmdTuples(r->pg) : "";
    return *s ? strtol(s, NULL, 10) : 0;
}

void
db_pool_stats(const db_pool *p, struct db_pool_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!p)
        return;
    out->queries = p->queries;
    out->failures = p->failures;
    out->reconnects = p->reconnects;
    out->notifications = p->notifications;
    for (unsigned i = 0; i < p->nconns; i++)
        if (p->conns[i].state == CONN_UP)
            out->connected++;
    out->queued = p->queue.len;
}

int
db_sqlstate_errno(const char *s)
{
    if (!s || strlen(s) != 5)
        return -EIO;
    if (!strcmp(s, "23505"))
        return -EEXIST;
    if (!strcmp(s, "23503"))
        return -ENOENT;
    if (!strcmp(s, "40001") || !strcmp(s, "40P01"))
        return -EAGAIN;
    if (!strncmp(s, "08", 2) || !strncmp(s, "57P0", 4))
        return -ENOTCONN;
    return -EIO;
}

int
db_error_http(int status, const struct db_error *err, const char **msg, const char **detail)
{
    *detail = NULL;
    if (status == -ENOTCONN || status == -EBUSY || status == -ETIMEDOUT
        || status == -ECANCELED || status == -EAGAIN) {
        *msg = "The database is unavailable; try again later.";
        return 503;
    }
    if (status == -EEXIST) {
        *msg = "A resource with these attributes already exists.";
        return 409;
    }
    if (status == -ENOENT) {
        *msg = "The request refers to a resource that does not exist.";
        return 400;
    }
    if (err && (!strncmp(err->sqlstate, "22", 2) || !strncmp(err->sqlstate, "23", 2))) {
        /* Data exceptions and constraint violations come from what the
         * client sent (a value too long, out of range, malformed). */
        *msg = "Invalid input: ";
        *detail = err->message ? err->message : "rejected";
        return 400;
    }
    *msg = NULL;
    return 500;
}

/* ---- Synchronous API. */

struct db_conn {
    PGconn *pg;
    char *msg;                  /* The last error message, for db_error. */
};

int
db_sync_connect(const char *conninfo, db_conn **out, char **errmsg)
{
    *out = NULL;
    if (errmsg)
        *errmsg = NULL;
    if (!conninfo)
        return -EINVAL;
    PGconn *pg = PQconnectdb(conninfo);
    if (!pg)
        return -ENOMEM;
    if (PQstatus(pg) != CONNECTION_OK) {
        if (errmsg)
            *errmsg = msg_dup(PQerrorMessage(pg));
        PQfinish(pg);
        return -ENOTCONN;
    }
    PQsetNoticeProcessor(pg, notice_ignore, NULL);
    db_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        PQfinish(pg);
        return -ENOMEM;
    }
    c->pg = pg;
    *out = c;
    return 0;
}

void
db_sync_close(db_conn *c)
{
    if (!c)
        return;
    PQfinish(c->pg);
    free(c->msg);
    free(c);
}

/* Turns a blocking call's result into 0 or the error in 'err'; takes
 * 'res' unless it is handed to 'out'. */
static int
sync_finish(db_conn *c, PGresult *res, db_result **out, struct db_error *err)
{
    char sqlstate[6];
    const char *msg;
    int rc = result_status(c->pg, res, sqlstate, &msg);
    if (rc == 0 && out) {
        db_result *r = malloc(sizeof(*r));
        if (!r) {
            rc = -ENOMEM;
            msg = "out of memory";
        } else {
            r->pg = res;
            *out = r;
            return 0;
        }
    }
    if (rc < 0) {
        free(c->msg);
        c->msg = msg_dup(msg);
        if (err) {
            err->code = rc;
            memcpy(err->sqlstate, sqlstate, sizeof(err->sqlstate));
            err->message = c->msg ? c->msg : "";
        }
    }
    PQclear(res);
    return rc;
}

int
db_sync_exec(db_conn *c, const char *sql, int nparams,
             const char *const *params, db_result **out,
             struct db_error *err)
{
    if (out)
        *out = NULL;
    if (!c || !params_valid(sql, nparams, params))
        return -EINVAL;
    PGresult *res = PQexecParams(c->pg, sql, nparams, NULL, params, NULL,
                                 NULL, 0);
    return sync_finish(c, res, out, err);
}

int
db_sync_exec_script(db_conn *c, const char *sql, struct db_error *err)
{
    if (!c || !sql)
        return -EINVAL;
    return sync_finish(c, PQexec(c->pg, sql), NULL, err);
}

void
db_result_free(db_result *r)
{
    if (!r)
        return;
    PQclear(r->pg);
    free(r);
}
