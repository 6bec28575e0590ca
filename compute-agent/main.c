/* nimbus-compute: parses arguments and configuration, sets up logging and
 * the event loop, starts the agent (agent.c) and runs until SIGTERM. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "conf.h"
#include "log.h"
#include "util.h"

static const struct conf_option options[] = {
    { "agent", "node", CONF_STR, NULL, 0, 0,
      "This node's name (default: the host name)." },
    { "agent", "state_dir", CONF_STR, "/var/lib/nimbus/compute", 0, 0,
      "Instance directories, the image cache and runc's state live here." },
    { "agent", "reconcile_interval", CONF_INT, "10", 1, 86400,
      "Seconds between reconcile passes when nothing changes (retries, power sync)." },
    { "agent", "delete_grace", CONF_INT, "60", 0, 86400 * 7,
      "Seconds an instance Nimbus owns may exist without being desired before it is deleted." },
    { "agent", "stop_timeout", CONF_INT, "10", 0, 3600,
      "Seconds a guest gets to shut down cleanly (ACPI, SIGTERM) before it is forced off." },
    { "agent", "workers", CONF_INT, "20", 1, 64,
      "Threads of the reconciler's pool: the creates in flight at once (each is mostly waiting "
      "for the hypervisor), beyond the pass that handed them; 1: every step one after the "
      "other in the pass." },
    { "agent", "max_attempts", CONF_INT, "3", 1, 100,
      "Failed steps for one instance and generation before it goes to ERROR." },
    { "agent", "network_agent", CONF_BOOL, "false", 0, 0,
      "Whether nimbus-network runs on this node: it makes the ports' taps and veth pairs, "
      "which instances wait for (VMs open the tap, containers get the veth as eth0). "
      "false: libvirt makes unplugged taps itself and containers get no network." },
    { "agent", "port_wait", CONF_INT, "120", 1, 86400,
      "Seconds an instance waits for the network agent to create its ports' devices "
      "before it goes to ERROR." },
    { "agent", "image_max_age", CONF_INT, "86400", 0, 86400 * 365,
      "Seconds an unused cached base image is kept; 0 keeps them forever." },
    { "agent", "image_source_dir", CONF_STR, "/var/lib/nimbus/images", 0, 0,
      "Directory the image cache fetches <image id> files from (until nimbus-image serves agents)." },
    { "agent", "image_fetch", CONF_STR, "dir", 0, 0,
      "Where base images come from: dir (image_source_dir) or http (nimbus-image, "
      "GET /v2/images/{id}/file with the node credential of [source] node_token_file)." },
    { "agent", "image_url", CONF_STR, NULL, 0, 0,
      "http image fetch: nimbus-image's base URL, e.g. http://127.0.0.1:9292." },
    { "agent", "listen", CONF_STR, "127.0.0.1", 0, 0,
      "Address of /healthz and /metrics; empty for none." },
    { "agent", "port", CONF_INT, "8790", 0, 65535,
      "Port of /healthz and /metrics (0 picks one)." },
    { "console", "listen", CONF_STR, "", 0, 0,
      "Address of the console proxy (WebSocket to the instances' VNC and serial consoles, "
      "http source only); empty for none." },
    { "console", "port", CONF_INT, "6083", 0, 65535, "Port of the console proxy (0 picks one)." },
    { "console", "public_url", CONF_STR, NULL, 0, 0,
      "URL of the console proxy that nimbus-api hands out (e.g. http://node1.example:6083); "
      "default http://<listen>:<port>." },
    { "hypervisor", "type", CONF_STR, "libvirt", 0, 0,
      "libvirt (KVM, QEMU emulation, Xen), oci (runc containers) or fake (in memory)." },
    { "hypervisor", "libvirt_uri", CONF_STR, "qemu:///system", 0, 0,
      "Libvirt connection URI (xen:///system for Xen through libxl)." },
    { "hypervisor", "migration_uri", CONF_STR, NULL, 0, 0,
      "This node's libvirt URI as the other nodes reach it (e.g. "
      "qemu+tcp://node1.example/system), registered with nimbus-api for live "
      "migration; unset: not registered." },
    { "hypervisor", "virt_type", CONF_STR, "auto", 0, 0,
      "auto (kvm when KVM really runs guests here, else qemu), kvm, qemu or xen." },
    { "hypervisor", "runc", CONF_STR, "runc", 0, 0, "The runc binary for the oci type." },
    { "hypervisor", "live_migration_timeout", CONF_INT, "0", 0, 86400,
      "Seconds after which a live migration from this node is aborted (the instance keeps "
      "running here); 0: 120 plus 1 per 32 MiB of the guest's RAM." },
    { "source", "type", CONF_STR, "file", 0, 0,
      "Where the desired state comes from: file (tests, development) or http (the agent "
      "channel of nimbus-api, docs/agent-channel.md)." },
    { "source", "api_url", CONF_STR, "http://127.0.0.1:8774/agent/v1", 0, 0,
      "http source: base URL of the agent channel on nimbus-api." },
    { "source", "node_token_file", CONF_STR, NULL, 0, 0,
      "File holding this node's credential (one line): the http source and the http "
      "image fetch send it." },
    { "source", "poll_wait", CONF_INT, "30", 1, 60,
      "http source: seconds a long poll for the desired state may wait." },
    { "source", "heartbeat", CONF_INT, "5", 1, 3600,
      "http source: seconds between inventory heartbeats." },
    { "source", "desired_file", CONF_STR, NULL, 0, 0,
      "file source: the desired-state JSON document, re-read on change and on SIGHUP." },
    { "source", "observed_file", CONF_STR, NULL, 0, 0,
      "file source: written (atomically) with the observed state after every pass." },
    { "source", "events_file", CONF_STR, NULL, 0, 0,
      "file source: instance events are appended here, one JSON object a line." },
    { "log", "level", CONF_STR, "info", 0, 0, "debug, info, warn or error." },
};

struct daemon {
    uv_loop_t loop;
    struct agent *agent;
    uv_signal_t sigterm, sigint, sighup;
    bool stopping;
};

static void
agent_stopped(void *arg)
{
    struct daemon *d = arg;
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
}

static void
on_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    if (d->stopping)
        return;
    d->stopping = true;
    log_info("main", "signal %d: finishing the pass in flight, then exiting", signum);
    agent_stop(d->agent, agent_stopped, d);
}

static void
on_sighup(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    log_info("main", "SIGHUP: re-reading the desired state");
    agent_reload(d->agent);
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: nimbus-compute [--config FILE] [--set SECTION.KEY=VALUE]...\n"
               "       nimbus-compute --config-example\n");
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "set", required_argument, NULL, 's' },
        { "config-example", no_argument, NULL, 'x' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct conf *conf = conf_new(options, ARRAY_SIZE(options));
    char err[512];
    const char *sets[64];
    int n_sets = 0, c;
    const char *config = NULL;
    while ((c = getopt_long(argc, argv, "c:s:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 's':
            if (n_sets == 64) {
                fprintf(stderr, "nimbus-compute: too many --set\n");
                return 2;
            }
            sets[n_sets++] = optarg;
            break;
        case 'x':
            conf_write_example(options, ARRAY_SIZE(options), stdout);
            conf_free(conf);
            return 0;
        case 'h': usage(stdout); conf_free(conf); return 0;
        default: usage(stderr); conf_free(conf); return 2;
        }
    }
    if (config && conf_load(conf, config, err, sizeof err) < 0) {
        fprintf(stderr, "nimbus-compute: %s\n", err);
        conf_free(conf);
        return 2;
    }
    for (int i = 0; i < n_sets; i++) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", sets[i]);
        char *dot = strchr(buf, '.'), *eq = strchr(buf, '=');
        if (!dot || !eq || dot > eq) {
            fprintf(stderr, "nimbus-compute: --set wants SECTION.KEY=VALUE, not '%s'\n", sets[i]);
            conf_free(conf);
            return 2;
        }
        *dot = 0;
        *eq = 0;
        if (conf_set(conf, buf, dot + 1, eq + 1, err, sizeof err) < 0) {
            fprintf(stderr, "nimbus-compute: --set %s: %s\n", sets[i], err);
            conf_free(conf);
            return 2;
        }
    }
    conf_log_init(conf, "nimbus-compute");
    signal(SIGPIPE, SIG_IGN);

    char host[256];
    const char *node = conf_str(conf, "agent", "node");
    if (!node || !node[0]) {
        if (gethostname(host, sizeof host) < 0)
            snprintf(host, sizeof host, "localhost");
        node = host;
    }
    const char *source = conf_str(conf, "source", "type");
    char token[1024] = "";
    if (strcmp(source, "file") && strcmp(source, "http")) {
        log_error("main", "[source] type must be file or http, not '%s'", source);
        conf_free(conf);
        return 2;
    }
    if (!strcmp(source, "http") || !strcmp(conf_str(conf, "agent", "image_fetch"), "http")) {
        const char *tf = conf_str(conf, "source", "node_token_file");
        FILE *f = tf && tf[0] ? fopen(tf, "re") : NULL;
        if (!f || !fgets(token, sizeof token, f)) {
            log_error("main", "cannot read the node credential from [source] node_token_file '%s'",
                      tf ? tf : "");
            if (f)
                fclose(f);
            conf_free(conf);
            return 2;
        }
        fclose(f);
        token[strcspn(token, "\r\n")] = 0;
    }
    struct agent_config ac = {
        .node = node,
        .state_dir = conf_str(conf, "agent", "state_dir"),
        .image_source_dir = conf_str(conf, "agent", "image_source_dir"),
        .image_fetch = conf_str(conf, "agent", "image_fetch"),
        .image_url = conf_str(conf, "agent", "image_url"),
        .interval_ms = (unsigned)conf_int(conf, "agent", "reconcile_interval") * 1000u,
        .image_max_age_s = (uint64_t)conf_int(conf, "agent", "image_max_age"),
        .rc = {
            .grace_ms = (uint64_t)conf_int(conf, "agent", "delete_grace") * 1000u,
            .max_attempts = (unsigned)conf_int(conf, "agent", "max_attempts"),
            .stop_timeout_ms = (unsigned)conf_int(conf, "agent", "stop_timeout") * 1000u,
            .port_wait_ms = (uint64_t)conf_int(conf, "agent", "port_wait") * 1000u,
            .workers = (unsigned)conf_int(conf, "agent", "workers"),
        },
        .hv = {
            .type = conf_str(conf, "hypervisor", "type"),
            .libvirt_uri = conf_str(conf, "hypervisor", "libvirt_uri"),
            .virt_type = conf_str(conf, "hypervisor", "virt_type"),
            .state_dir = conf_str(conf, "agent", "state_dir"),
            .runc = conf_str(conf, "hypervisor", "runc"),
            .node = node,
            .network_agent = conf_bool(conf, "agent", "network_agent"),
            .migrate_timeout_s = (unsigned)conf_int(conf, "hypervisor", "live_migration_timeout"),
        },
        .source = source,
        .api_url = conf_str(conf, "source", "api_url"),
        .node_token = token,
        .poll_wait_s = (unsigned)conf_int(conf, "source", "poll_wait"),
        .heartbeat_ms = (unsigned)conf_int(conf, "source", "heartbeat") * 1000u,
        .desired_file = conf_str(conf, "source", "desired_file"),
        .observed_file = conf_str(conf, "source", "observed_file"),
        .events_file = conf_str(conf, "source", "events_file"),
        .console_listen = conf_str(conf, "console", "listen"),
        .console_port = (int)conf_int(conf, "console", "port"),
        .console_public_url = conf_str(conf, "console", "public_url"),
        .migration_uri = conf_str(conf, "hypervisor", "migration_uri"),
        .listen_host = conf_str(conf, "agent", "listen"),
        .listen_port = (int)conf_int(conf, "agent", "port"),
    };

    struct daemon d = { 0 };
    uv_loop_init(&d.loop);
    int r = agent_start(&d.loop, &ac, &d.agent, err, sizeof err);
    if (r) {
        log_error("main", "cannot start: %s", err);
        agent_free(d.agent);
        uv_run(&d.loop, UV_RUN_NOWAIT);
        conf_free(conf);
        return 1;
    }
    if (agent_port(d.agent))
        log_info("main", "/healthz and /metrics on %s:%d", ac.listen_host, agent_port(d.agent));
    uv_signal_init(&d.loop, &d.sigterm);
    uv_signal_init(&d.loop, &d.sigint);
    uv_signal_init(&d.loop, &d.sighup);
    d.sigterm.data = d.sigint.data = d.sighup.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    uv_signal_start(&d.sighup, on_sighup, SIGHUP);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    agent_free(d.agent);
    uv_loop_close(&d.loop);
    conf_free(conf);
    log_info("main", "stopped");
    return 0;
}
