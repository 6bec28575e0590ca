#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>


/* Appends what 'fd' has to 'buf', up to its first 'cap'-1 bytes; closes
 * 'fd' at its end. */
static void
drain(int fd, char *buf, size_t cap, size_t *len, int *open_fd)
{
    char tmp[4096];
    ssize_t n = read(fd, tmp, sizeof tmp);
    if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
            close(fd);
            *open_fd = -1;
        }
        return;
    }
    if (!buf || cap < 2)
        return;
    size_t room = cap - 1 - *len;
    size_t take = (size_t)n < room ? (size_t)n : room;
    memcpy(buf + *len, tmp, take);
    *len += take;
    buf[*len] = 0;
}

int
proc_run(const char *const argv[], char *out, size_t outlen, char *err, size_t errlen)
{
    int op[2] = { -1, -1 }, ep[2] = { -1, -1 };
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int r;

    if (out && outlen)
        out[0] = 0;
    if (err && errlen)
        err[0] = 0;
    if (pipe2(op, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
        r = -errno;
        goto out;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, op[1], 1);
    posix_spawn_file_actions_adddup2(&fa, ep[1], 2);
    r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(op[1]);
    close(ep[1]);
    op[1] = ep[1] = -1;
    if (r) {
        if (err)
            snprintf(err, errlen, "cannot run %s: %s", argv[0], strerror(r));
        r = -r;
        goto out;
    }
    size_t olen = 0, elen = 0;
    char ebuf[1024] = "";
    while (op[0] >= 0 || ep[0] >= 0) {
        struct pollfd p[2] = { { op[0], POLLIN, 0 }, { ep[0], POLLIN, 0 } };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (op[0] >= 0 && p[0].revents)
            drain(op[0], out, outlen, &olen, &op[0]);
        if (ep[0] >= 0 && p[1].revents)
            drain(ep[0], ebuf, sizeof ebuf, &elen, &ep[0]);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) {
            r = -errno;
            goto out;
        }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        r = 0;
    } else {
        r = -ECHILD;
        if (err && errlen) {
            size_t n = strlen(ebuf);
            while (n && (ebuf[n - 1] == '\n' || ebuf[n - 1] == '\r'))
                ebuf[--n] = 0;
            if (WIFEXITED(st))
                snprintf(err, errlen, "%s exited with %d: %s", argv[0], WEXITSTATUS(st), ebuf);
            else
                snprintf(err, errlen, "%s killed by signal %d: %s", argv[0], WTERMSIG(st), ebuf);
        }
    }
out:
    for (int i = 0; i < 2; i++) {
        if (op[i] >= 0)
            close(op[i]);
        if (ep[i] >= 0)
            close(ep[i]);
    }
    return r;
}

int
proc_run_logged(const char *const argv[], const char *log, char *err, size_t errlen)
{
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", log, strerror(e));
        return -e;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fd, 1);
    posix_spawn_file_actions_adddup2(&fa, fd, 2);
    pid_t pid;
    int r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd);
    if (r) {
        snprintf(err, errlen, "cannot run %s: %s", argv[0], strerror(r));
        return -r;
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -errno;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    snprintf(err, errlen, "%s failed (exit %d); see %s", argv[0],
             WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), log);
    return -ECHILD;
}
