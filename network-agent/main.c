/* nimbus-network: the per-node network agent.  Parses arguments and the
 * configuration, then loops: get the desired state of this node (the
 * Network API, or a file for tests), reconcile the overlay provider, report
 * wired ports; at start-up, then every [agent] interval seconds.  A crash or
 * kill -9 at any point converges on the next pass. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "netagent.h"
#include "netagent_api.h"
#include "overlay.h"

static const struct conf_option options[] = {
    { "agent", "host", CONF_STR, "", 0, 0,
      "This node's name: the binding:host_id of the ports it wires.  Empty: the host name." },
    { "agent", "provider", CONF_STR, "vxlan", 0, 0,
      "Overlay provider: vxlan (Linux bridge + VXLAN) or fake." },
    { "agent", "local_ip", CONF_STR, "", 0, 0,
      "This node's VTEP address on the underlay (required for vxlan)." },
    { "agent", "underlay_dev", CONF_STR, "", 0, 0,
      "Underlay interface for VXLAN traffic; empty: routed by local_ip." },
    { "agent", "vxlan_port", CONF_INT, "4789", 1, 65535, "VXLAN UDP port." },
    { "agent", "state_dir", CONF_STR, "/run/nimbus-network", 0, 0,
      "Directory of the DHCP servers' files (hosts, pid, leases)." },
    { "agent", "netns_prefix", CONF_STR, "nqdhcp-", 0, 0,
      "Name prefix of the DHCP network namespaces (one agent per machine owns "
      "it; tests running several agents on one machine give each its own)." },
    { "agent", "interval", CONF_INT, "5", 1, 3600,
      "Seconds between reconciliations." },
    { "api", "network_url", CONF_STR, "http://127.0.0.1:9696", 0, 0,
      "Network API endpoint (without /v2.0)." },
    { "api", "auth_url", CONF_STR, "http://127.0.0.1:5000/v3", 0, 0,
      "Identity endpoint for the agent's credentials." },
    { "api", "username", CONF_STR, "admin", 0, 0, "Agent user (needs the admin role)." },
    { "api", "password", CONF_STR, "", 0, 0, "Agent password." },
    { "api", "project", CONF_STR, "admin", 0, 0, "Project to scope the agent's token to." },
    { "log", "level", CONF_STR, "info", 0, 0, "debug, info, warning or error." },
};

static volatile sig_atomic_t stopping;

static void
on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static json_t *
load_file(const char *path, char *err, size_t errlen)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        snprintf(err, errlen, "%s: %s (line %d)", path, je.text, je.line);
    return j;
}

static void
usage(void)
{
    fprintf(stderr, "usage: nimbus-network [--config FILE] [--once] [--desired FILE]\n"
                    "  --desired FILE  take the desired state from FILE instead of the API\n"
                    "  --once          reconcile once and exit (status 0 when converged)\n"
                    "  --print-desired print each desired-state document on stdout\n");
}

int
main(int argc, char **argv)
{
    const char *config = NULL, *desired_file = NULL;
    int once = 0, print_desired = 0;
    static const struct option longopts[] = {
        { "print-desired", no_argument, NULL, 'p' },
        { "config", required_argument, NULL, 'c' },
        { "desired", required_argument, NULL, 'd' },
        { "once", no_argument, NULL, 'o' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:d:ohp", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case 'd': desired_file = optarg; break;
        case 'o': once = 1; break;
        case 'p': print_desired = 1; break;
        default: usage(); return opt == 'h' ? 0 : 2;
        }
    }

    struct conf *conf = conf_new(options, sizeof options / sizeof options[0]);
    char err[512];
    if (!conf)
        return 1;
    if (config && conf_load(conf, config, err, sizeof err) < 0) {
        fprintf(stderr, "nimbus-network: %s\n", err);
        conf_free(conf);
        return 2;
    }
    conf_log_init(conf, "nimbus-network");

    char host[256];
    snprintf(host, sizeof host, "%s", conf_str(conf, "agent", "host"));
    if (!host[0] && gethostname(host, sizeof host) < 0)
        snprintf(host, sizeof host, "localhost");

    struct overlay_config oc = {
        .type = conf_str(conf, "agent", "provider"),
        .local_ip = conf_str(conf, "agent", "local_ip"),
        .underlay_dev = conf_str(conf, "agent", "underlay_dev"),
        .vxlan_port = (int)conf_int(conf, "agent", "vxlan_port"),
        .state_dir = conf_str(conf, "agent", "state_dir"),
        .netns_prefix = conf_str(conf, "agent", "netns_prefix"),
    };
    struct overlay *ov = NULL;
    int rc = overlay_open(&oc, &ov);
    if (rc < 0) {
        log_error("main", "cannot open overlay provider %s: %s", oc.type, strerror(-rc));
        conf_free(conf);
        return 1;
    }
    struct na_api *api = NULL;
    if (!desired_file) {
        struct na_api_config ac = {
            .network_url = conf_str(conf, "api", "network_url"),
            .auth_url = conf_str(conf, "api", "auth_url"),
            .username = conf_str(conf, "api", "username"),
            .password = conf_str(conf, "api", "password"),
            .project = conf_str(conf, "api", "project"),
            .host = host,
            .local_ip = oc.local_ip,
            .timeout_ms = 30000,
        };
        if ((rc = na_api_new(&ac, &api)) < 0) {
            log_error("main", "cannot set up the API client: %s", strerror(-rc));
            overlay_close(ov);
            conf_free(conf);
            return 1;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    log_info("main", "host %s, provider %s, local_ip %s", host, oc.type, oc.local_ip);

    int status = 0;
    unsigned long passes = 0;
    while (!stopping) {
        json_t *doc = desired_file ? load_file(desired_file, err, sizeof err)
                                   : NULL;
        if (!desired_file && na_api_desired(api, &doc, err, sizeof err) < 0)
            doc = NULL;
        if (!doc) {
            log_warn("main", "no desired state: %s", err);
            status = 1;
        } else {
            struct na_desired want;
            if (print_desired) {
                char *text = json_dumps(doc, JSON_COMPACT);
                if (text)
                    printf("%s\n", text);
                free(text);
                fflush(stdout);
            }
            if (na_desired_parse(doc, &want, err, sizeof err) < 0) {
                log_warn("main", "%s", err);
                status = 1;
            } else {
                struct na_result res;
                rc = na_reconcile(ov, &want, &res);
                passes++;
                if (rc < 0) {
                    log_warn("main", "reconcile: %zu of %zu actions failed; last: %s",
                             res.failures, res.actions, res.last_error);
                    status = 1;
                } else {
                    if (res.actions)
                        log_info("main", "reconciled: %zu actions, %zu networks, %zu ports",
                                 res.actions, want.n_nets, want.n_ports);
                    status = 0;
                    if (api && na_api_report(api, doc, err, sizeof err) > 0)
                        log_warn("main", "report: %s", err);
                }
                na_desired_free(&want);
            }
            json_decref(doc);
        }
        if (once)
            break;
        struct timespec ts = { conf_int(conf, "agent", "interval"), 0 };
        while (!stopping && nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
    log_info("main", "stopping after %lu passes", passes);
    na_api_free(api);
    overlay_close(ov);
    conf_free(conf);
    return status;
}
