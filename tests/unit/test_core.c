/* Unit tests for the core library: arena, configuration, util. */
#include "arena.h"
#include "conf.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../check.h"

static const struct conf_option test_opts[] = {
    { "api", "port", CONF_INT, "5000", 1, 65535, "The port." },
    { "api", "host", CONF_STR, "127.0.0.1", 0, 0, "The host." },
    { "log", "debug", CONF_BOOL, "false", 0, 0, "Debug logging." },
};

static void
test_arena(void)
{
    struct arena *a = arena_new(64);
    char *s = arena_strdup(a, "hello");
    CHECK_STR(s, "hello");
    for (int i = 0; i < 1000; i++) {
        char *p = arena_alloc(a, 100);
        CHECK(((uintptr_t)p & 15) == 0);
        memset(p, 'x', 100);
    }
    char *big = arena_alloc(a, 3 << 20);
    memset(big, 0, 3 << 20);
    CHECK_STR(arena_printf(a, "%d-%s", 42, "x"), "42-x");
    arena_reset(a);
    CHECK_INT(arena_used(a), 0);
    CHECK_STR(arena_strndup(a, "abcdef", 3), "abc");
    arena_free(a);
    arena_free(NULL);
}

static char *
write_tmp(const char *text)
{
    char *path = strdup("/tmp/nimbus-conf-XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void
test_conf(void)
{
    char err[256];
    struct conf *c = conf_new(test_opts, ARRAY_SIZE(test_opts));
    CHECK_INT(conf_int(c, "api", "port"), 5000);
    CHECK(!conf_bool(c, "log", "debug"));

    char *p = write_tmp("# comment\n[api]\nport = 8080\n host=0.0.0.0 \n[log]\ndebug = yes\n");
    CHECK_INT(conf_load(c, p, err, sizeof err), 0);
    CHECK_INT(conf_int(c, "api", "port"), 8080);
    CHECK_STR(conf_str(c, "api", "host"), "0.0.0.0");
    CHECK(conf_bool(c, "log", "debug"));
    unlink(p);
    free(p);

    p = write_tmp("[api]\nport = 99999\n");
    CHECK(conf_load(c, p, err, sizeof err) < 0);
    CHECK(strstr(err, "port") && strstr(err, ":2:"));
    unlink(p);
    free(p);

    p = write_tmp("[api]\nprot = 1\n");
    CHECK(conf_load(c, p, err, sizeof err) < 0);
    CHECK(strstr(err, "unknown option [api] prot") != NULL);
    unlink(p);
    free(p);

    p = write_tmp("[nope]\n");
    CHECK(conf_load(c, p, err, sizeof err) < 0);
    CHECK(strstr(err, "unknown section [nope]") != NULL);
    unlink(p);
    free(p);

    /* Sections owned by other daemons are skipped, not validated. */
    static const char *const foreign[] = { "scheduler", NULL };
    conf_set_foreign(c, foreign);
    p = write_tmp("[scheduler]\nanything = goes\n[api]\nport = 7000\n");
    CHECK_INT(conf_load(c, p, err, sizeof err), 0);
    CHECK_INT(conf_int(c, "api", "port"), 7000);
    unlink(p);
    free(p);

    CHECK(conf_set(c, "log", "debug", "maybe", err, sizeof err) == -EINVAL);
    CHECK(conf_set(c, "api", "port", "12a", err, sizeof err) == -EINVAL);
    CHECK(conf_load(c, "/nonexistent/nimbus.conf", err, sizeof err) == -ENOENT);
    conf_free(c);
}

static void
test_util(void)
{
    char u[37], v[37];
    util_uuid4(u);
    util_uuid4(v);
    CHECK(util_is_uuid(u));
    CHECK(strcmp(u, v) != 0);
    CHECK(u[14] == '4');
    CHECK(!util_is_uuid("not-a-uuid"));
    util_uuid4_fast(u);
    util_uuid4_fast(v);
    CHECK(util_is_uuid(u));
    CHECK(strcmp(u, v) != 0);
    CHECK(u[14] == '4');
    CHECK(!util_is_uuid("1"));
    char out[64];
    CHECK_INT(util_percent_decode("a%20b+c", 7, out, true), 5);
    CHECK_STR(out, "a b c");
    CHECK(util_percent_decode("%2", 2, out, false) < 0);
    CHECK(util_percent_decode("%00", 3, out, false) < 0);
    CHECK(util_percent_decode("%zz", 3, out, false) < 0);
    CHECK(util_streq_ct("abc", "abc"));
    CHECK(!util_streq_ct("abc", "abd"));
    char ts[32];
    util_iso8601(0, 5, ts);
    CHECK_STR(ts, "1970-01-01T00:00:00.000005Z");
}

int
main(void)
{
    test_arena();
    test_conf();
    test_util();
    return check_exit();
}
