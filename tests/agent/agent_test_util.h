/* Helpers shared by the agent's integration tests: the test guest, an
 * image source directory, desired instances, waiting on files. */
#ifndef NIMBUS_AGENT_TEST_UTIL_H
#define NIMBUS_AGENT_TEST_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hypervisor.h"
#include "image_cache.h"
#include "instance.h"
#include "strbuf.h"

static inline double
t_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline uint64_t
t_now_ms(void)
{
    return (uint64_t)(t_now() * 1000.0);
}

/* Builds the test guest (deploy/build-guest) into the build directory;
 * false when it cannot (no network for apt-get download, no busybox). */
static inline bool
t_guest(char dir[PATH_MAX])
{
    const char *src = getenv("NIMBUS_SOURCE"), *build = getenv("NIMBUS_BUILD");
    if (!src || !build)
        return false;
    bfmt(dir, PATH_MAX, "%s/agent-test-guest", build);
    char cmd[3 * PATH_MAX];
    bfmt(cmd, sizeof cmd, "%s/deploy/build-guest %s >&2", src, dir);
    return system(cmd) == 0;
}

/* Links guest file 'file' into 'srcdir' as image 'id' and fills 'img'. */
static inline bool
t_image(const char *guest, const char *file, const char *srcdir, const char *id,
        const char *disk_format, struct inst_image *img)
{
    char from[PATH_MAX], to[PATH_MAX];
    bfmt(from, sizeof from, "%s/%s", guest, file);
    bfmt(to, sizeof to, "%s/%s", srcdir, id);
    unlink(to);
    if (symlink(from, to) < 0)
        return false;
    memset(img, 0, sizeof *img);
    bfmt(img->id, sizeof img->id, "%s", id);
    bfmt(img->disk_format, sizeof img->disk_format, "%s", disk_format);
    bfmt(img->container_format, sizeof img->container_format, "bare");
    return img_sha512_file(to, img->sha512) == 0;
}

/* The power state provider 'h' lists for 'uuid'; POWER_NOSTATE when it
 * does not list it. */
static inline enum power_state
t_power(struct hypervisor *h, const char *uuid)
{
    struct inst_actual *v;
    size_t n;
    enum power_state p = POWER_NOSTATE;
    if (h->class->list(h, &v, &n))
        return p;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].uuid, uuid))
            p = v[i].power;
    free(v);
    return p;
}

/* Runs `virsh -q -c URI ARGS`, its output (up to len - 1 bytes) into 'out'
 * when given; returns its status. */
static inline int
t_virsh(const char *uri, const char *args, char *out, size_t len)
{
    char cmd[2 * PATH_MAX];
    bfmt(cmd, sizeof cmd, "virsh -q -c '%s' %s 2>/dev/null", uri, args);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    size_t n = out ? fread(out, 1, len - 1, f) : 0;
    if (out)
        out[n] = 0;
    else
        while (fgetc(f) != EOF) {
        }
    return pclose(f);
}

/* Waits up to 'timeout' seconds for 'path' to contain 'needle' at least
 * 'count' times; returns the seconds it took, or -1. */
static inline double
t_wait_file(const char *path, const char *needle, int count, double timeout)
{
    double t0 = t_now();
    while (t_now() - t0 < timeout) {
        FILE *f = fopen(path, "r");
        if (f) {
            char *buf = malloc(1 << 20);
            size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
            fclose(f);
            int seen = 0;
            if (buf) {
                buf[n] = 0;
                for (char *p = buf; (p = strstr(p, needle)); p += strlen(needle))
                    seen++;
                free(buf);
            }
            if (seen >= count)
                return t_now() - t0;
        }
        usleep(50000);
    }
    return -1;
}

#endif
