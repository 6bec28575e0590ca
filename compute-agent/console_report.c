#include "console_report.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "strbuf.h"

struct seen {
    char uuid[37];
    uint64_t size, mtime_ns, ino;   /* The version of the log being sent. */
    uint64_t first_doc;             /* First document that carried it; 0: none yet. */
    bool pending;                   /* Not known delivered. */
    uint64_t sent_ms;               /* When it was last known delivered. */
    bool live;                      /* In the current document. */
};

struct console_report {
    const struct storage *st;
    uint64_t docs;                  /* Documents numbered so far. */
    struct seen *v;
    size_t n, cap;
};

int
console_report_new(const struct storage *st, struct console_report **out)
{
    struct console_report *cr = calloc(1, sizeof *cr);
    if (!cr)
        return -ENOMEM;
    cr->st = st;
    *out = cr;
    return 0;
}

void
console_report_free(struct console_report *cr)
{
    if (!cr)
        return;
    free(cr->v);
    free(cr);
}

static struct seen *
seen_get(struct console_report *cr, const char *uuid)
{
    for (size_t i = 0; i < cr->n; i++)
        if (!strcmp(cr->v[i].uuid, uuid))
            return &cr->v[i];
    if (cr->n == cr->cap) {
        size_t cap = cr->cap ? cr->cap * 2 : 16;
        struct seen *v = realloc(cr->v, cap * sizeof *v);
        if (!v)
            return NULL;
        cr->v = v;
        cr->cap = cap;
    }
    struct seen *s = &cr->v[cr->n++];
    memset(s, 0, sizeof *s);
    bfmt(s->uuid, sizeof s->uuid, "%s", uuid);
    return s;
}

/* Length of the valid UTF-8 sequence at 'p' (of 'n' bytes), 0 if invalid. */
static size_t
utf8_len(const unsigned char *p, size_t n)
{
    size_t len;
    uint32_t cp;
    if (p[0] < 0x80)
        return 1;
    else if ((p[0] & 0xe0) == 0xc0) { len = 2; cp = p[0] & 0x1f; }
    else if ((p[0] & 0xf0) == 0xe0) { len = 3; cp = p[0] & 0x0f; }
    else if ((p[0] & 0xf8) == 0xf0) { len = 4; cp = p[0] & 0x07; }
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

char *
console_tail(const char *path, size_t max_bytes)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return NULL;
    }
    off_t from = st.st_size > (off_t)max_bytes ? st.st_size - (off_t)max_bytes : 0;
    size_t want = (size_t)(st.st_size - from);
    unsigned char *buf = malloc(want + 1);
    char *out = malloc(want + 1);
    size_t got = 0;
    if (!buf || !out)
        goto fail;
    while (got < want) {
        ssize_t r = pread(fd, buf + got, want - got, from + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    fd = -1;
    size_t i = 0, o = 0;
    if (from > 0) {
        /* Cut at a line start: the first line would be a fragment. */
        const unsigned char *nl = memchr(buf, '\n', got);
        i = nl ? (size_t)(nl - buf) + 1 : got;
    }
    while (i < got) {
        unsigned char ch = buf[i];
        if (ch < 0x20 || ch == 0x7f) {
            if (ch == '\n' || ch == '\t')
                out[o++] = (char)ch;
            i++;
            continue;
        }
        size_t l = utf8_len(buf + i, got - i);
        if (!l) {
            out[o++] = '?';
            i++;
            continue;
        }
        memcpy(out + o, buf + i, l);
        o += l;
        i += l;
    }
    out[o] = 0;
    free(buf);
    return out;
fail:
    if (fd >= 0)
        close(fd);
    free(buf);
    free(out);
    return NULL;
}

char *
console_report_add(struct console_report *cr, const char *json, uint64_t now_ms,
                    uint64_t delivered)
{
    uint64_t seq = ++cr->docs;
    json_t *doc = json_loads(json, 0, NULL);
    json_t *insts = json_object_get(doc, "instances");
    if (!json_is_array(insts)) {
        json_decref(doc);
        return NULL;
    }
    for (size_t i = 0; i < cr->n; i++)
        cr->v[i].live = false;
    /* nimbus-api takes documents of up to 1 MiB: the tails fit in what the
     * rest of the document leaves, with room to spare. */
    size_t base = strlen(json), room = 900u << 10;
    size_t budget = base >= room ? 0 : room - base;
    if (budget > CONSOLE_REPORT_BUDGET)
        budget = CONSOLE_REPORT_BUDGET;
    bool added = false;
    size_t k;
    json_t *e;
    json_array_foreach(insts, k, e) {
        const char *uuid = json_string_value(json_object_get(e, "uuid"));
        const char *state = json_string_value(json_object_get(e, "vm_state"));
        if (!uuid || (state && (!strcmp(state, "deleted") || !strcmp(state, "deleting"))))
            continue;
        struct seen *s = seen_get(cr, uuid);
        if (!s)
            continue;
        s->live = true;
        char dir[PATH_MAX], path[PATH_MAX];
        storage_inst_dir(cr->st, uuid, dir);
        bfmt(path, sizeof path, "%s/console.log", dir);
        struct stat st;
        if (stat(path, &st) < 0)
            continue;
        uint64_t mt = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
        bool changed = s->size != (uint64_t)st.st_size || s->mtime_ns != mt ||
                       s->ino != (uint64_t)st.st_ino;
        if (s->pending && s->first_doc && delivered >= s->first_doc) {
            s->pending = false;
            s->sent_ms = now_ms;
        }
        if (changed || (!s->pending && now_ms - s->sent_ms >= CONSOLE_RESEND_MS)) {
            s->pending = true;
            s->first_doc = 0;
            s->size = (uint64_t)st.st_size;
            s->mtime_ns = mt;
            s->ino = (uint64_t)st.st_ino;
        }
        if (!s->pending)
            continue;
        /* Escaping may double a tail in JSON: count it twice. */
        size_t cost = 2 * (st.st_size < (off_t)CONSOLE_TAIL_BYTES ? (size_t)st.st_size
                                                                  : CONSOLE_TAIL_BYTES);
        if (cost > budget)
            continue;       /* The next report. */
        char *tail = console_tail(path, CONSOLE_TAIL_BYTES);
        if (!tail)
            continue;
        json_object_set_new(e, "console", json_string(tail));
        free(tail);
        budget -= cost;
        added = true;
        if (!s->first_doc)
            s->first_doc = seq;
        if (delivered == UINT64_MAX) {
            s->pending = false;
            s->sent_ms = now_ms;
        }
    }
    /* Forget instances no longer reported. */
    for (size_t i = 0; i < cr->n;) {
        if (!cr->v[i].live)
            cr->v[i] = cr->v[--cr->n];
        else
            i++;
    }
    char *out = added ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return out;
}
