/* Provider registry and helpers shared by every provider. */
#include "hypervisor.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <net/if.h>
#include <unistd.h>

/* Results of the calling thread's last provider operations: several
 * threads run operations on one provider at once. */
static _Thread_local struct {
    char err[512];
    struct hv_timing timing;
} hv_tls;

static const struct hypervisor_class *const classes[] = {
    &hv_fake_class,
#ifdef NIMBUS_HAVE_LIBVIRT
    &hv_libvirt_class,
#endif
    &hv_oci_class,
};

int
hv_open(const struct hv_config *cfg, struct hypervisor **out, char *err, size_t errlen)
{
    *out = NULL;
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
        if (strcmp(classes[i]->name, cfg->type))
            continue;
        struct hypervisor *hv = NULL;
        hv_clear_error(NULL);
        int r = classes[i]->open(cfg, &hv);
        if (r < 0) {
            snprintf(err, errlen, "%s provider: %s", cfg->type,
                     hv_tls.err[0] ? hv_tls.err : strerror(-r));
            if (hv)
                hv->class->close(hv);
            return r;
        }
        hv->network_agent = cfg->network_agent;
        *out = hv;
        return 0;
    }
    snprintf(err, errlen, "unknown hypervisor type '%s'%s", cfg->type,
             !strcmp(cfg->type, "libvirt") ? " (built without libvirt)" : "");
    return -ENOTSUP;
}

char *
hv_migration_dest_xml(struct hypervisor *hv, const struct hv_create_args *a, uint64_t gen)
{
#ifdef NIMBUS_HAVE_LIBVIRT
    if (hv->class == &hv_libvirt_class)
        return hv_libvirt_dest_xml(hv, a, gen);
#endif
    if (hv->class == &hv_fake_class)
        return hv_fake_dest_xml(hv, a, gen);
    hv_set_error(hv, "the %s provider has no live migration", hv->class->name);
    return NULL;
}

void
hv_node_name(const struct hv_config *cfg, char *out, size_t len)
{
    if (cfg->node && cfg->node[0]) {
        snprintf(out, len, "%s", cfg->node);
        return;
    }
    char host[256];
    if (gethostname(host, sizeof host) < 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    snprintf(out, len, "%s", host);
}

bool
hv_netdev_exists(const char *dev)
{
    /* Not /sys/class/net: sysfs shows the namespace it was mounted in,
     * and agents run in namespaces of their own in tests. */
    if (!dev[0] || strlen(dev) >= IF_NAMESIZE)
        return false;
    return if_nametoindex(dev) != 0;
}

int
hv_ports_ready(struct hypervisor *hv, const struct inst_desired *d)
{
    for (unsigned i = 0; i < d->n_ports; i++) {
        const struct inst_port *p = &d->ports[i];
        char dev[16];
        if (p->kind == INST_PORT_VETH)
            inst_port_peer(p, dev);
        else
            snprintf(dev, sizeof dev, "%s", p->tap);
        if (!dev[0])
            continue;
        if (!hv_netdev_exists(dev)) {
            hv_set_error(hv, "waiting for the network agent to create %s for port %s", dev, p->id);
            return -EAGAIN;
        }
    }
    return 0;
}

void
inst_port_peer(const struct inst_port *p, char out[16])
{
    if (!strncmp(p->tap, "tap", 3))
        snprintf(out, 16, "tpp%.12s", p->tap + 3);
    else
        out[0] = 0;
}

void
hv_close(struct hypervisor *hv)
{
    if (hv)
        hv->class->close(hv);
}

void
hv_set_error(struct hypervisor *hv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)hv;
    vsnprintf(hv_tls.err, sizeof hv_tls.err, fmt, ap);
    va_end(ap);
}

const char *
hv_err(const struct hypervisor *hv)
{
    (void)hv;
    return hv_tls.err;
}

void
hv_clear_error(struct hypervisor *hv)
{
    (void)hv;
    hv_tls.err[0] = 0;
}

struct hv_timing *
hv_timing(struct hypervisor *hv)
{
    (void)hv;
    return &hv_tls.timing;
}

static const char *const power_names[] = {
#define X(e, s) s,
    POWER_STATES(X)
#undef X
};

const char *
power_state_name(enum power_state p)
{
    return (unsigned)p < sizeof power_names / sizeof power_names[0] ? power_names[p] : "?";
}

int
power_state_parse(const char *s, enum power_state *out)
{
    for (size_t i = 0; i < sizeof power_names / sizeof power_names[0]; i++)
        if (!strcmp(s, power_names[i])) {
            *out = (enum power_state)i;
            return 0;
        }
    return -EINVAL;
}
