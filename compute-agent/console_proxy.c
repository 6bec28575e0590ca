#include "console_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "disk_move.h"
#include "log.h"
#include "strbuf.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define TOKEN_LEN 64

struct cproxy {
    char *api_url, *node, *node_token, *url, *instances_dir;
    unsigned max_conns;
    cproxy_target_fn target;
    void *ctx;
    int lfd;
    pthread_t accept_thread;
    atomic_bool stopping;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned active;
    time_t last_refusal_log;
};

struct conn {
    struct cproxy *p;
    int fd;
};

/* ---- Small I/O helpers. */

static int
write_all(int fd, const void *buf, size_t n)
{
    const char *b = buf;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pf = { .fd = fd, .events = POLLOUT };
            if (poll(&pf, 1, 10000) <= 0)
                return -ETIMEDOUT;
            continue;
        }
        if (w <= 0)
            return -EIO;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
write_fd(int fd, const void *buf, size_t n, bool sock)
{
    if (sock)
        return write_all(fd, buf, n);
    const char *b = buf;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -EIO;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static void
http_answer(int fd, int status, const char *reason, const char *text)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     status, reason, strlen(text), text);
    if (n > 0)
        (void)write_all(fd, buf, (size_t)n);
}

/* The value of header 'name' in 'head' (a NUL-terminated request head)
 * into 'out'; false when absent or too long. */
static bool
header(const char *head, const char *name, char *out, size_t len)
{
    size_t nl = strlen(name);
    for (const char *l = strstr(head, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
        const char *h = l + 2;
        if (!strncasecmp(h, name, nl) && h[nl] == ':') {
            const char *v = h + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t vl = strcspn(v, "\r\n");
            while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            if (vl >= len)
                return false;
            memcpy(out, v, vl);
            out[vl] = 0;
            return true;
        }
    }
    return false;
}

/* The token of the request target ("/?token=..." or "...&token=..."). */
static bool
find_token(const char *target, char out[TOKEN_LEN + 1])
{
    const char *q = strchr(target, '?');
    for (const char *t = q; t; t = strchr(t + 1, '&')) {
        const char *k = t + 1;
        if (!strncmp(k, "token=", 6)) {
            k += 6;
            size_t n = strcspn(k, "& ");
            if (n != TOKEN_LEN || strspn(k, "0123456789abcdef") < TOKEN_LEN)
                return false;
            memcpy(out, k, TOKEN_LEN);
            out[TOKEN_LEN] = 0;
            return true;
        }
    }
    return false;
}

/* ---- Token check with nimbus-api. */

struct body {
    char buf[4096];
    size_t n;
};

static size_t
on_body(char *data, size_t size, size_t n, void *ud)
{
    struct body *b = ud;
    size_t len = size * n;
    if (b->n + len >= sizeof b->buf)
        return 0;
    memcpy(b->buf + b->n, data, len);
    b->n += len;
    b->buf[b->n] = 0;
    return len;
}

/* 0 with the instance and protocol; -EACCES for a refused token; -EIO
 * when nimbus-api could not answer. */
static int
check_token(struct cproxy *p, const char *token, char uuid[37], char proto[8])
{
    char url[1024], auth[512], req[128];
    bfmt(url, sizeof url, "%s/nodes/%s/console-token", p->api_url, p->node);
    bfmt(auth, sizeof auth, "Authorization: Bearer %s", p->node_token ? p->node_token : "");
    bfmt(req, sizeof req, "{\"token\":\"%s\"}", token);
    CURL *c = curl_easy_init();
    if (!c)
        return -ENOMEM;
    struct body b = { .n = 0 };
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, auth);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, req);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    memset(req, 0, sizeof req);
    if (rc != CURLE_OK || (status != 200 && status != 404))
        return -EIO;
    if (status == 404)
        return -EACCES;
    json_t *j = json_loads(b.buf, 0, NULL);
    const char *u = json_string_value(json_object_get(j, "instance_uuid"));
    const char *pr = json_string_value(json_object_get(j, "protocol"));
    int r = u && pr && strlen(u) == 36 && strlen(pr) < 8 ? 0 : -EIO;
    if (!r) {
        memcpy(uuid, u, 37);
        bfmt(proto, 8, "%s", pr);
    }
    json_decref(j);
    return r;
}

/* ---- The console side. */

static int
open_target(const char *proto, const char *addr)
{
    if (!strcmp(proto, "serial")) {
        if (strncmp(addr, "/dev/pts/", 9))
            return -EINVAL;
        int fd = open(addr, O_RDWR | O_NOCTTY | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
    }
    char host[256];
    bfmt(host, sizeof host, "%s", addr);
    char *colon = strrchr(host, ':');
    if (!colon)
        return -EINVAL;
    *colon = 0;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai)
        return -EINVAL;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        int e = -errno;
        close(fd);
        fd = e;
    } else if (fd < 0) {
        fd = -errno;
    }
    freeaddrinfo(ai);
    return fd;
}

/* ---- WebSocket relay. */

static int
send_frame(int fd, unsigned opcode, const unsigned char *data, size_t n)
{
    unsigned char h[10];
    size_t hl = 2;
    h[0] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        h[1] = (unsigned char)n;
    } else if (n <= 0xffff) {
        h[1] = 126;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    int r = write_all(fd, h, hl);
    return r ? r : n ? write_all(fd, data, n) : 0;
}

/* Consumes complete frames from in[0..*len): payloads of data frames go
 * to 'tfd'; pings are answered.  Returns 0 to go on, 1 at a close frame,
 * -errno on a protocol error or a failed write. */
static int
consume_frames(int cfd, int tfd, bool tsock, unsigned char *in, size_t *len)
{
    size_t off = 0;
    for (;;) {
        size_t avail = *len - off;
        unsigned char *f = in + off;
        if (avail < 2)
            break;
        unsigned opcode = f[0] & 0x0f;
        bool masked = f[1] & 0x80;
        uint64_t plen = f[1] & 0x7f;
        size_t hl = 2;
        if (plen == 126) {
            if (avail < 4)
                break;
            plen = ((uint64_t)f[2] << 8) | f[3];
            hl = 4;
        } else if (plen == 127) {
            if (avail < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = (plen << 8) | f[2 + i];
            hl = 10;
        }
        if (!masked || plen > CPROXY_MAX_FRAME)
            return -EPROTO;   /* Clients must mask (RFC 6455, 5.1). */
        if (avail < hl + 4 + plen)
            break;
        unsigned char *mask = f + hl, *data = f + hl + 4;
        for (uint64_t i = 0; i < plen; i++)
            data[i] ^= mask[i & 3];
        int r = 0;
        switch (opcode) {
        case 0x0: case 0x1: case 0x2:
            r = write_fd(tfd, data, (size_t)plen, tsock);
            break;
        case 0x8:
            (void)send_frame(cfd, 0x8, NULL, 0);
            return 1;
        case 0x9:
            r = send_frame(cfd, 0xa, data, (size_t)plen);
            break;
        default:
            break;   /* Pongs and unknown control frames: ignored. */
        }
        if (r)
            return r;
        off += hl + 4 + (size_t)plen;
    }
    memmove(in, in + off, *len - off);
    *len -= off;
    return 0;
}

static void
relay(struct cproxy *p, int cfd, int tfd, bool tsock, unsigned char *in, size_t in_len)
{
    size_t cap = CPROXY_MAX_FRAME + 16;
    unsigned char *buf = malloc(cap);
    unsigned char *out = malloc(65536);
    if (!buf || !out)
        goto done;
    memcpy(buf, in, in_len);
    size_t len = in_len;
    if (consume_frames(cfd, tfd, tsock, buf, &len))
        goto done;
    while (!atomic_load(&p->stopping)) {
        struct pollfd pf[2] = { { .fd = cfd, .events = POLLIN }, { .fd = tfd, .events = POLLIN } };
        int n = poll(pf, 2, 500);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        if (pf[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = read(tfd, out, 65536);
            if (r <= 0) {
                (void)send_frame(cfd, 0x8, NULL, 0);   /* The console went away. */
                break;
            }
            if (send_frame(cfd, 0x2, out, (size_t)r))
                break;
        }
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(cfd, buf + len, cap - len, 0);
            if (r <= 0)
                break;
            len += (size_t)r;
            if (consume_frames(cfd, tfd, tsock, buf, &len))
                break;
        }
    }
done:
    free(buf);
    free(out);
}

static void
log_refusal(struct cproxy *p, const char *what)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&p->mu);
    bool show = now != p->last_refusal_log;
    p->last_refusal_log = now;
    pthread_mutex_unlock(&p->mu);
    if (show)
        log_warn("console", "connection refused: %s", what);
}

/* GET /migration/<uuid>/disk (disk_move.h): the overlay of an instance
 * stopped for a move, to the destination that shows the move's secret. */
static void
serve_disk(struct cproxy *p, int fd, const char *target, const char *head)
{
    char uuid[37], secret[80], sha[65];
    size_t tl = strlen(target);
    if (!p->instances_dir || tl != 11 + 36 + 5 || strcmp(target + 47, "/disk")) {
        http_answer(fd, 404, "Not Found", "no such resource\n");
        return;
    }
    memcpy(uuid, target + 11, 36);
    uuid[36] = 0;
    if (!header(head, "X-Nimbus-Migration-Secret", secret, sizeof secret)) {
        log_refusal(p, "a disk request without the move's secret");
        http_answer(fd, 403, "Forbidden", "invalid secret\n");
        return;
    }
    int dfd = -1;
    unsigned long long size = 0;
    int r = dmove_open(p->instances_dir, uuid, secret, &dfd, &size, sha);
    explicit_bzero(secret, sizeof secret);
    if (r == -EAGAIN) {
        http_answer(fd, 409, "Conflict", "the instance is not stopped for a move here\n");
        return;
    }
    if (r) {
        log_refusal(p, "a disk request with a bad secret or instance");
        http_answer(fd, r == -ENOENT ? 404 : 403, r == -ENOENT ? "Not Found" : "Forbidden",
                    "refused\n");
        return;
    }
    char resp[256];
    int n = snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream"
                     "\r\nContent-Length: %llu\r\nX-Nimbus-Disk-SHA256: %s\r\n"
                     "Connection: close\r\n\r\n", size, sha);
    log_info("console", "instance %s: sending its disk (%llu bytes) to a move's destination",
             uuid, size);
    /* A slow destination gets more than the 10 s of a console handshake. */
    struct timeval tv = { .tv_sec = 60 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    static __thread char buf[1 << 16];
    unsigned long long sent = 0;
    if (n > 0 && write_all(fd, resp, (size_t)n) == 0) {
        ssize_t got;
        while (sent < size && (got = read(dfd, buf, sizeof buf)) > 0 &&
               write_all(fd, buf, (size_t)got) == 0)
            sent += (unsigned long long)got;
    }
    if (sent != size)
        log_warn("console", "instance %s: disk transfer cut at %llu of %llu bytes", uuid, sent,
                 size);
    close(dfd);
}

static void
handle(struct cproxy *p, int fd)
{
    char head[CPROXY_MAX_HEAD + 1];
    size_t n = 0;
    char *end = NULL;
    /* A client that stops reading or writing cannot hold a thread. */
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    while (n < CPROXY_MAX_HEAD) {
        ssize_t r = recv(fd, head + n, CPROXY_MAX_HEAD - n, 0);
        if (r <= 0)
            return;
        n += (size_t)r;
        head[n] = 0;
        if ((end = strstr(head, "\r\n\r\n")))
            break;
    }
    if (!end) {
        http_answer(fd, 431, "Request Header Fields Too Large", "request head too large\n");
        return;
    }
    size_t head_len = (size_t)(end - head) + 4;
    char method[8], target[1024], key[64], upgrade[64], protos[128];
    if (sscanf(head, "%7s %1023s", method, target) != 2 || strcmp(method, "GET")) {
        http_answer(fd, 405, "Method Not Allowed", "GET only\n");
        return;
    }
    if (!strncmp(target, "/migration/", 11)) {
        serve_disk(p, fd, target, head);
        return;
    }
    if (!header(head, "Upgrade", upgrade, sizeof upgrade) || strcasecmp(upgrade, "websocket") ||
        !header(head, "Sec-WebSocket-Key", key, sizeof key) || strlen(key) > 40) {
        http_answer(fd, 400, "Bad Request", "a WebSocket connection is required\n");
        return;
    }
    char token[TOKEN_LEN + 1], uuid[37], proto[8], addr[256];
    if (!find_token(target, token)) {
        log_refusal(p, "no valid token in the request");
        http_answer(fd, 403, "Forbidden", "invalid token\n");
        return;
    }
    int r = check_token(p, token, uuid, proto);
    memset(token, 0, sizeof token);
    if (r == -EACCES) {
        log_refusal(p, "unknown, used or expired token");
        http_answer(fd, 403, "Forbidden", "invalid token\n");
        return;
    }
    if (r) {
        http_answer(fd, 503, "Service Unavailable", "cannot check the token now\n");
        return;
    }
    int tfd = -1;
    if ((r = p->target(p->ctx, uuid, proto, addr, sizeof addr)) || (tfd = open_target(proto, addr)) < 0) {
        log_warn("console", "instance %s: no %s console: %s", uuid, proto,
                 strerror(r ? -r : -tfd));
        http_answer(fd, 503, "Service Unavailable", "the console is not available\n");
        return;
    }
    /* The handshake (RFC 6455, 4.2.2). */
    char cat[128];
    unsigned char sha[SHA_DIGEST_LENGTH];
    unsigned char acc[64];
    bfmt(cat, sizeof cat, "%s%s", key, WS_GUID);
    SHA1((const unsigned char *)cat, strlen(cat), sha);
    EVP_EncodeBlock(acc, sha, SHA_DIGEST_LENGTH);
    bool binary = header(head, "Sec-WebSocket-Protocol", protos, sizeof protos) &&
                  strstr(protos, "binary");
    char resp[512];
    int rl = snprintf(resp, sizeof resp, "HTTP/1.1 101 Switching Protocols\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n%s\r\n", acc,
                      binary ? "Sec-WebSocket-Protocol: binary\r\n" : "");
    if (rl > 0 && write_all(fd, resp, (size_t)rl) == 0) {
        log_info("console", "instance %s: %s console opened", uuid, proto);
        relay(p, fd, tfd, strcmp(proto, "serial") != 0, (unsigned char *)head + head_len,
              n - head_len);
        log_info("console", "instance %s: %s console closed", uuid, proto);
    }
    close(tfd);
}

static void *
conn_main(void *arg)
{
    struct conn *c = arg;
    struct cproxy *p = c->p;
    handle(p, c->fd);
    close(c->fd);
    free(c);
    pthread_mutex_lock(&p->mu);
    p->active--;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void *
accept_main(void *arg)
{
    struct cproxy *p = arg;
    while (!atomic_load(&p->stopping)) {
        struct pollfd pf = { .fd = p->lfd, .events = POLLIN };
        if (poll(&pf, 1, 500) <= 0)
            continue;
        int fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&p->mu);
        bool full = p->active >= p->max_conns;
        if (!full)
            p->active++;
        pthread_mutex_unlock(&p->mu);
        if (full) {
            http_answer(fd, 503, "Service Unavailable", "too many console connections\n");
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = malloc(sizeof *c);
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (c) {
            c->p = p;
            c->fd = fd;
        }
        if (!c || pthread_create(&t, &attr, conn_main, c) != 0) {
            free(c);
            close(fd);
            pthread_mutex_lock(&p->mu);
            p->active--;
            pthread_mutex_unlock(&p->mu);
        }
        pthread_attr_destroy(&attr);
    }
    return NULL;
}

static void
cproxy_free(struct cproxy *p)
{
    if (p->lfd >= 0)
        close(p->lfd);
    free(p->api_url);
    free(p->node);
    if (p->node_token) {
        memset(p->node_token, 0, strlen(p->node_token));
        free(p->node_token);
    }
    free(p->url);
    free(p->instances_dir);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int
cproxy_start(const struct cproxy_config *cfg, cproxy_target_fn target, void *ctx,
             struct cproxy **out, char *err, size_t errlen)
{
    struct cproxy *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    curl_global_init(CURL_GLOBAL_DEFAULT);   /* Before any thread uses curl. */
    p->lfd = -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->target = target;
    p->ctx = ctx;
    p->max_conns = cfg->max_conns ? cfg->max_conns : 32;
    p->api_url = strdup(cfg->api_url ? cfg->api_url : "");
    p->node = strdup(cfg->node ? cfg->node : "");
    p->node_token = cfg->node_token ? strdup(cfg->node_token) : NULL;
    p->instances_dir = cfg->instances_dir ? strdup(cfg->instances_dir) : NULL;
    int r = 0;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    char port[16];
    bfmt(port, sizeof port, "%d", cfg->port);
    if (!p->api_url || !p->node || getaddrinfo(cfg->listen_host, port, &hints, &ai) != 0) {
        bfmt(err, errlen, "console proxy: bad address %s:%d", cfg->listen_host, cfg->port);
        r = -EINVAL;
        goto fail;
    }
    p->lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (p->lfd < 0 || setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(p->lfd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(p->lfd, 64) < 0) {
        r = -errno;
        bfmt(err, errlen, "console proxy on %s:%d: %s", cfg->listen_host, cfg->port,
             strerror(-r));
        freeaddrinfo(ai);
        goto fail;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int actual = cfg->port;
    if (getsockname(p->lfd, (struct sockaddr *)&ss, &sl) == 0)
        actual = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);
    char url[512];
    if (cfg->public_url && cfg->public_url[0])
        bfmt(url, sizeof url, "%s", cfg->public_url);
    else
        bfmt(url, sizeof url, strchr(cfg->listen_host, ':') ? "http://[%s]:%d" : "http://%s:%d",
             cfg->listen_host, actual);
    if (!(p->url = strdup(url))) {
        r = -ENOMEM;
        goto fail;
    }
    if ((r = -pthread_create(&p->accept_thread, NULL, accept_main, p))) {
        bfmt(err, errlen, "console proxy: %s", strerror(-r));
        goto fail;
    }
    *out = p;
    return 0;
fail:
    cproxy_free(p);
    return r;
}

const char *
cproxy_url(const struct cproxy *p)
{
    return p->url;
}

void
cproxy_stop(struct cproxy *p)
{
    if (!p)
        return;
    atomic_store(&p->stopping, true);
    pthread_join(p->accept_thread, NULL);
    pthread_mutex_lock(&p->mu);
    while (p->active)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    cproxy_free(p);
}
