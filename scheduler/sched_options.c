/* Configuration of nimbus-scheduler: the [scheduler], [database] and [log]
 * sections of the shared Nimbus configuration file.  Sections that belong
 * to other daemons ([api], [identity]...) are skipped, so one file serves
 * every daemon. */
#include "sched_options.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

const struct conf_option sched_options[] = {
    { "scheduler", "host", CONF_STR, "", 0, 0,
      "Name this scheduler registers under (os-services, build request leases). "
      "Empty: the machine's host name and the process id." },
    { "scheduler", "filters", CONF_STR,
      "enabled,alive,availability_zone,force_host,ram,cpu,disk,image_properties,"
      "affinity,anti_affinity,same_host,different_host", 0, 0,
      "Host filters, in order (see docs/scheduler.md for the list)." },
    { "scheduler", "weighers", CONF_STR, "ram,cpu,instances,build_failures,soft_group", 0, 0,
      "Host weighers; each score is normalised to [0, 1] and multiplied by its "
      "multiplier." },
    { "scheduler", "placement_strategy", CONF_STR, "spread", 0, 0,
      "spread: prefer the emptiest hosts; pack: the fullest (flips the sign of "
      "the ram, cpu, disk and instances multipliers)." },
    { "scheduler", "ram_weight_multiplier", CONF_STR, "1.0", 0, 0,
      "Weight of free RAM." },
    { "scheduler", "cpu_weight_multiplier", CONF_STR, "1.0", 0, 0,
      "Weight of free vCPUs." },
    { "scheduler", "disk_weight_multiplier", CONF_STR, "0.0", 0, 0,
      "Weight of free disk." },
    { "scheduler", "instances_weight_multiplier", CONF_STR, "0.5", 0, 0,
      "Weight of the instance count (fewer is better when spreading)." },
    { "scheduler", "build_failure_weight_multiplier", CONF_STR, "100.0", 0, 0,
      "Penalty for hosts with recent build failures." },
    { "scheduler", "load_weight_multiplier", CONF_STR, "0.0", 0, 0,
      "Weight of the load reported by the host's agent." },
    { "scheduler", "soft_affinity_weight_multiplier", CONF_STR, "10.0", 0, 0,
      "Weight of soft-affinity and soft-anti-affinity server groups." },
    { "scheduler", "host_subset_size", CONF_INT, "1", 1, 1000,
      "Choose at random among this many best hosts (more than 1 reduces "
      "races between several schedulers)." },
    { "scheduler", "hosts_sampled", CONF_INT, "0", 0, 1000000,
      "When more than 0: weigh only this many hosts drawn at random per "
      "decision (the best of k random choices), falling back to every host "
      "when none of them fits.  0: every host, as Nova.  For clouds of "
      "thousands of hosts." },
    { "scheduler", "service_down_time", CONF_INT, "60", 1, 86400,
      "Seconds without a heartbeat after which a host counts as dead." },
    { "scheduler", "batch_size", CONF_INT, "200", 1, 2000,
      "Build requests leased, decided and claimed together per cycle: larger "
      "batches place more per second, each request waits for its batch." },
    { "scheduler", "lease_seconds", CONF_INT, "30", 1, 3600,
      "How long a leased build request stays with this scheduler; after that "
      "another scheduler may take it (a scheduler that died)." },
    { "scheduler", "max_attempts", CONF_INT, "10", 1, 1000,
      "Claims tried per request and cycle before giving it back (races lost)." },
    { "scheduler", "max_reschedules", CONF_INT, "3", 0, 100,
      "Times a build whose host stopped reporting (no heartbeat for "
      "service_down_time, or forced down) is moved to another host before "
      "it ends in ERROR." },
    { "scheduler", "sweep_interval", CONF_INT, "5", 1, 3600,
      "Seconds between periodic sweeps for build requests (besides "
      "notifications) and heartbeats." },
    { "scheduler", "metrics_port", CONF_INT, "0", 0, 65535,
      "Port of the /healthz and /metrics listener on 127.0.0.1; 0: none." },
    { "database", "connection", CONF_STR,
      "host=/var/run/postgresql dbname=nimbus user=nimbus", 0, 0,
      "libpq connection string of the Nimbus database." },
    { "database", "pool_size", CONF_INT, "4", 1, 256,
      "Shared with nimbus-api; the scheduler uses one connection for "
      "decisions and one for LISTEN." },
    { "database", "query_timeout", CONF_INT, "30", 1, 3600,
      "Seconds after which a database query is abandoned." },
    { "log", "level", CONF_STR, "info", 0, 0,
      "Minimum level logged to stderr: debug, info, warn or error." },
};

const size_t sched_options_count = sizeof sched_options / sizeof sched_options[0];

static bool
section_ours(const char *s)
{
    return !strcmp(s, "scheduler") || !strcmp(s, "database") || !strcmp(s, "log");
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
sched_config_load(struct conf *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -errno;
    }
    char line[4096], section[128] = "";
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (!e) {
                snprintf(err, errlen, "%s:%d: malformed section header", path, lineno);
                rc = -EINVAL;
                break;
            }
            *e = '\0';
            snprintf(section, sizeof section, "%s", trim(s + 1));
            continue;
        }
        if (!section_ours(section))
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected 'key = value'", path, lineno);
            rc = -EINVAL;
            break;
        }
        *eq = '\0';
        char msg[512];
        if ((rc = conf_set(c, section, trim(s), trim(eq + 1), msg, sizeof msg)) < 0) {
            /* [database] and [log] are shared: keys only other daemons
             * know are theirs to check.  [scheduler] is ours alone. */
            if (strcmp(section, "scheduler") && !strncmp(msg, "unknown option", 14)) {
                rc = 0;
                continue;
            }
            snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
            break;
        }
    }
    fclose(f);
    return rc;
}
