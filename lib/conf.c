#include "conf.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define CONF_MAX_LINE 4096

struct conf {
    const struct conf_option *opts;
    size_t n;
    char **values;      /* Parallel to opts; malloc'd text. */
    const char *const *foreign;     /* Sections skipped unread, or NULL. */
};

void
conf_set_foreign(struct conf *c, const char *const *sections)
{
    c->foreign = sections;
}

static bool
section_foreign(const struct conf *c, const char *section)
{
    for (const char *const *f = c->foreign; f && *f; f++)
        if (!strcmp(*f, section))
            return true;
    return false;
}

static void
die_oom(void)
{
    fputs("nimbus: out of memory\n", stderr);
    abort();
}

static char *
xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        die_oom();
    return d;
}

struct conf *
conf_new(const struct conf_option *opts, size_t n)
{
    struct conf *c = calloc(1, sizeof *c);
    if (!c)
        die_oom();
    c->opts = opts;
    c->n = n;
    c->values = calloc(n ? n : 1, sizeof *c->values);
    if (!c->values)
        die_oom();
    for (size_t i = 0; i < n; i++)
        c->values[i] = xstrdup(opts[i].def);
    return c;
}

void
conf_free(struct conf *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        free(c->values[i]);
    free(c->values);
    free(c);
}

static long
find_opt(const struct conf *c, const char *section, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->opts[i].section, section) && !strcmp(c->opts[i].name, name))
            return (long)i;
    return -1;
}

static bool
section_known(const struct conf *c, const char *section)
{
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->opts[i].section, section))
            return true;
    return false;
}

static int
parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) {
            *out = true;
            return 0;
        }
        if (!strcasecmp(v, no[i])) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

static int
parse_int(const char *v, long *out)
{
    if (!*v)
        return -EINVAL;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *out = x;
    return 0;
}

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int
conf_set(struct conf *c, const char *section, const char *name,
         const char *value, char *err, size_t errlen)
{
    long i = find_opt(c, section, name);
    if (i < 0) {
        set_err(err, errlen, "unknown option [%s] %s", section, name);
        return -ENOENT;
    }
    const struct conf_option *o = &c->opts[i];
    switch (o->type) {
    case CONF_INT: {
        long x;
        if (parse_int(value, &x) < 0) {
            set_err(err, errlen, "option [%s] %s: '%s' is not an integer",
                    section, name, value);
            return -EINVAL;
        }
        if (x < o->min || x > o->max) {
            set_err(err, errlen, "option [%s] %s: %ld is outside %ld..%ld",
                    section, name, x, o->min, o->max);
            return -ERANGE;
        }
        break;
    }
    case CONF_BOOL: {
        bool b;
        if (parse_bool(value, &b) < 0) {
            set_err(err, errlen, "option [%s] %s: '%s' is not a boolean "
                    "(true/false)", section, name, value);
            return -EINVAL;
        }
        break;
    }
    case CONF_STR:
        break;
    }
    free(c->values[i]);
    c->values[i] = xstrdup(value);
    return 0;
}

static char *
trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

int
conf_load(struct conf *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        set_err(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    char line[CONF_MAX_LINE];
    char section[128] = "";
    char msg[512];
    int lineno = 0, rc = 0;
    bool skipping = false;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            set_err(err, errlen, "%s:%d: line longer than %d bytes", path,
                    lineno, CONF_MAX_LINE - 2);
            rc = -E2BIG;
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (!e || e[1] || e - s - 1 <= 0 || (size_t)(e - s) > sizeof section) {
                set_err(err, errlen, "%s:%d: malformed section header", path, lineno);
                rc = -EINVAL;
                break;
            }
            *e = '\0';
            snprintf(section, sizeof section, "%s", trim(s + 1));
            skipping = section_foreign(c, section);
            if (!skipping && !section_known(c, section)) {
                set_err(err, errlen, "%s:%d: unknown section [%s]", path,
                        lineno, section);
                rc = -ENOENT;
                break;
            }
            continue;
        }
        if (skipping)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            set_err(err, errlen, "%s:%d: expected 'name = value'", path, lineno);
            rc = -EINVAL;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        if (!*section) {
            set_err(err, errlen, "%s:%d: option '%s' outside any section",
                    path, lineno, key);
            rc = -EINVAL;
            break;
        }
        rc = conf_set(c, section, key, val, msg, sizeof msg);
        if (rc < 0) {
            set_err(err, errlen, "%s:%d: %s", path, lineno, msg);
            break;
        }
    }
    fclose(f);
    return rc;
}

static long
must_find(const struct conf *c, const char *section, const char *name)
{
    long i = find_opt(c, section, name);
    if (i < 0) {
        fprintf(stderr, "nimbus: undeclared option [%s] %s\n", section, name);
        abort();
    }
    return i;
}

const char *
conf_str(const struct conf *c, const char *section, const char *name)
{
    return c->values[must_find(c, section, name)];
}

long
conf_int(const struct conf *c, const char *section, const char *name)
{
    long x = 0;
    if (parse_int(c->values[must_find(c, section, name)], &x) < 0)
        return 0;
    return x;
}

bool
conf_bool(const struct conf *c, const char *section, const char *name)
{
    bool b = false;
    if (parse_bool(c->values[must_find(c, section, name)], &b) < 0)
        return false;
    return b;
}

static void
write_wrapped_comment(FILE *out, const char *text)
{
    const char *p = text;
    while (*p) {
        size_t n = strlen(p);
        if (n > 76) {
            n = 76;
            while (n > 0 && p[n] != ' ')
                n--;
            if (n == 0)
                n = 76;
        }
        fprintf(out, "# %.*s\n", (int)n, p);
        p += n;
        while (*p == ' ')
            p++;
    }
}

void
conf_write_example(const struct conf_option *opts, size_t n, FILE *out)
{
    const char *section = NULL;
    fputs("# Nimbus configuration.  Every option is shown at its default,\n"
          "# commented out.  Generated by 'nimbus-manage config-example'.\n", out);
    for (size_t i = 0; i < n; i++) {
        if (!section || strcmp(section, opts[i].section)) {
            section = opts[i].section;
            fprintf(out, "\n[%s]\n", section);
        }
        fputc('\n', out);
        write_wrapped_comment(out, opts[i].help);
        if (opts[i].type == CONF_INT)
            fprintf(out, "# (integer, %ld..%ld)\n", opts[i].min, opts[i].max);
        else if (opts[i].type == CONF_BOOL)
            fputs("# (boolean)\n", out);
        fprintf(out, "#%s = %s\n", opts[i].name, opts[i].def ? opts[i].def : "");
    }
}

struct conf *
conf_open(const struct conf_option *opts, size_t n, const char *const *foreign,
          const char *path, const char *default_path)
{
    char err[512];
    struct conf *c = conf_new(opts, n);
    if (foreign)
        conf_set_foreign(c, foreign);
    const char *p = path ? path : default_path;
    if (!path && access(p, F_OK) < 0 && errno == ENOENT)
        return c;
    if (conf_load(c, p, err, sizeof err) < 0) {
        fprintf(stderr, "configuration error: %s\n", err);
        conf_free(c);
        return NULL;
    }
    enum log_level lvl;
    if (log_level_parse(conf_str(c, "log", "level"), &lvl) < 0) {
        fprintf(stderr, "configuration error: %s: option [log] level: '%s' "
                "is not one of debug, info, warn, error\n", p,
                conf_str(c, "log", "level"));
        conf_free(c);
        return NULL;
    }
    return c;
}

void
conf_log_init(const struct conf *c, const char *progname)
{
    enum log_level lvl = LOG_LVL_INFO;
    if (log_level_parse(conf_str(c, "log", "level"), &lvl) < 0)
        lvl = LOG_LVL_INFO;
    log_init(progname, lvl);
}

int
conf_parse_args(int argc, char **argv, void (*usage)(FILE *out), const char **config)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    *config = NULL;
    while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            *config = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    return -1;
}
