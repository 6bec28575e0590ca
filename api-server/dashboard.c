/* The dashboard's static files, served by nimbus-api under /dashboard/ on
 * the identity listener when [dashboard] dir is set (docs/dashboard.md).
 *
 * Only regular files inside that directory are answered, at most
 * DASHBOARD_DEPTH_MAX directory levels deep (the vendored noVNC's modules
 * keep their package's layout): every path segment is checked (no empty, hidden,
 * "." or ".." segment, no byte outside [A-Za-z0-9._-], after percent
 * decoding) and opened relative to the directory with O_NOFOLLOW, so
 * neither "..", its encodings nor a symbolic link reach outside.  Files go
 * out with http_respond_file() (sendfile), with a Content-Security-Policy
 * that allows scripts and styles from the page's own origin only. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "arena.h"
#include "log.h"

#define DASHBOARD_NAME_MAX 64
/* Directory levels below the dashboard directory that are served:
 * vendor/novnc/vendor/pako/lib/zlib/ is the deepest. */
#define DASHBOARD_DEPTH_MAX 6

/* The directory, opened once at start-up; -1 when the dashboard is off. */
static int dashboard_dirfd = -1;

static bool
segment_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > DASHBOARD_NAME_MAX || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static const char *
content_type(const char *name)
{
    static const struct { const char *ext, *type; } types[] = {
        { ".html", "text/html; charset=utf-8" },
        { ".js", "text/javascript; charset=utf-8" },
        { ".css", "text/css; charset=utf-8" },
        { ".svg", "image/svg+xml" },
        { ".png", "image/png" },
        { ".ico", "image/x-icon" },
        { ".json", "application/json" },
        { ".txt", "text/plain; charset=utf-8" },
    };
    const char *dot = strrchr(name, '.');
    if (dot)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcmp(dot, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

static void
not_found(http_request *req)
{
    api_error(req, 404, "The resource could not be found.");
}

static void
file_sent(http_request *req, int status, uint64_t sent, void *arg)
{
    (void)req;
    (void)status;
    (void)sent;
    close((int)(intptr_t)arg);
}

/* Opens dirs[0]/.../dirs[ndirs-1]/name below the dashboard directory
 * without following symbolic links; returns the fd of a regular file or
 * -1. */
static int
open_beneath(const char *const *dirs, unsigned ndirs, const char *name, struct stat *st)
{
    int dfd = dashboard_dirfd;
    for (unsigned i = 0; i < ndirs; i++) {
        int sub = openat(dfd, dirs[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd != dashboard_dirfd)
            close(dfd);
        if (sub < 0)
            return -1;
        dfd = sub;
    }
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (dfd != dashboard_dirfd)
        close(dfd);
    if (fd < 0)
        return -1;
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        return -1;
    }
    return fd;
}

static void
serve(http_request *req, const char *const *dirs, unsigned ndirs, const char *name)
{
    bool ok = dashboard_dirfd >= 0 && name && segment_ok(name);
    for (unsigned i = 0; ok && i < ndirs; i++)
        ok = dirs[i] && segment_ok(dirs[i]);
    if (!ok) {
        not_found(req);
        return;
    }
    struct stat st;
    int fd = open_beneath(dirs, ndirs, name, &st);
    if (fd < 0) {
        not_found(req);
        return;
    }
    http_resp_header(req, "Content-Security-Policy",
                     "default-src 'none'; script-src 'self'; style-src 'self'; "
                     "img-src 'self' data:; connect-src 'self' http: https: ws: wss:; "
                     "base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
    http_resp_header(req, "X-Content-Type-Options", "nosniff");
    http_resp_header(req, "X-Frame-Options", "DENY");
    http_resp_header(req, "Referrer-Policy", "no-referrer");
    http_resp_header(req, "Cache-Control", "no-cache");
    int rc = http_respond_file(req, 200, content_type(name), fd, 0, (uint64_t)st.st_size,
                               file_sent, (void *)(intptr_t)fd);
    if (rc < 0) {
        close(fd);
        api_error(req, 500, "The file could not be sent.");
    }
}

static void
dashboard_redirect(http_request *req, struct api_req *ar)
{
    (void)ar;
    http_resp_header(req, "Location", "/dashboard/");
    (void)http_respond(req, 301, NULL, NULL, 0);
}

static void
dashboard_index(http_request *req, struct api_req *ar)
{
    (void)ar;
    /* The router ignores a trailing slash: "/dashboard" is sent to the
     * directory form so that relative links resolve below it. */
    const char *path = http_req_path(req);
    size_t n = strlen(path);
    if (n == 0 || path[n - 1] != '/') {
        dashboard_redirect(req, ar);
        return;
    }
    serve(req, NULL, 0, "index.html");
}

/* The route's captures: "d1" ... "d<n>" and "file". */
static const char *const dir_params[DASHBOARD_DEPTH_MAX] = { "d1", "d2", "d3", "d4", "d5", "d6" };

static void
dashboard_file(http_request *req, struct api_req *ar)
{
    (void)ar;
    const char *dirs[DASHBOARD_DEPTH_MAX];
    unsigned n = 0;
    while (n < DASHBOARD_DEPTH_MAX && (dirs[n] = http_req_param(req, dir_params[n])))
        n++;
    serve(req, dirs, n, http_req_param(req, "file"));
}

int
dashboard_init(struct api *a)
{
    const char *dir = conf_str(a->conf, "dashboard", "dir");
    if (!*dir)
        return 0;
    if (dashboard_dirfd < 0) {
        dashboard_dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dashboard_dirfd < 0) {
            int e = errno;
            log_error("dashboard", "[dashboard] dir %s: %s", dir, strerror(e));
            return -e;
        }
    }
    api_route(a, API_IDENTITY, "GET", "/dashboard", dashboard_index);
    /* "/dashboard/{file}", "/dashboard/{d1}/{file}", ... */
    char pattern[128] = "/dashboard";
    size_t len = strlen(pattern);
    for (unsigned depth = 0; depth <= DASHBOARD_DEPTH_MAX; depth++) {
        char route[160];
        snprintf(route, sizeof route, "%s/{file}", pattern);
        api_route(a, API_IDENTITY, "GET", route, dashboard_file);
        if (depth < DASHBOARD_DEPTH_MAX)
            len += (size_t)snprintf(pattern + len, sizeof pattern - len, "/{%s}", dir_params[depth]);
    }
    log_info("dashboard", "serving %s under /dashboard/ on the identity port", dir);
    return 0;
}

void
dashboard_free(void)
{
    if (dashboard_dirfd >= 0)
        close(dashboard_dirfd);
    dashboard_dirfd = -1;
}
