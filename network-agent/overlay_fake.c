/* The fake overlay provider: networks and ports in memory, with a count of
 * device operations so that tests can check that a converged node is left
 * alone. */
#include "overlay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_MAX 1024

struct overlay_fake {
    struct overlay up;
    struct overlay_net nets[FAKE_MAX];
    size_t n_nets;
    struct overlay_port ports[FAKE_MAX];
    size_t n_ports;
    unsigned ops;
    char *ruleset;
};

static struct overlay_fake *
fake(struct overlay *ov)
{
    return (struct overlay_fake *)ov;
}

static int
fake_open(const struct overlay_config *cfg, struct overlay **out)
{
    struct overlay_fake *f = calloc(1, sizeof *f);
    (void)cfg;
    if (!f)
        return -ENOMEM;
    f->up.cls = &overlay_fake_class;
    *out = &f->up;
    return 0;
}

static void
fake_close(struct overlay *ov)
{
    free(fake(ov)->ruleset);
    free(ov);
}

static int
fake_firewall_sync(struct overlay *ov, const char *ruleset, bool *changed)
{
    struct overlay_fake *f = fake(ov);
    *changed = false;
    if (f->ruleset ? !strcmp(f->ruleset, ruleset) : !*ruleset)
        return 0;
    char *copy = strdup(ruleset);
    if (!copy)
        return -ENOMEM;
    free(f->ruleset);
    f->ruleset = copy;
    f->ops++;
    *changed = true;
    return 0;
}

const char *
overlay_fake_ruleset(const struct overlay *ov)
{
    const struct overlay_fake *f = (const struct overlay_fake *)ov;
    return ov->cls == &overlay_fake_class && f->ruleset ? f->ruleset : "";
}

static int
fake_list(struct overlay *ov, struct overlay_net **nets, size_t *n_nets,
          struct overlay_port **ports, size_t *n_ports)
{
    struct overlay_fake *f = fake(ov);
    *nets = calloc(f->n_nets + 1, sizeof **nets);
    *ports = calloc(f->n_ports + 1, sizeof **ports);
    if (!*nets || !*ports) {
        free(*nets);
        free(*ports);
        return -ENOMEM;
    }
    memcpy(*nets, f->nets, f->n_nets * sizeof **nets);
    memcpy(*ports, f->ports, f->n_ports * sizeof **ports);
    *n_nets = f->n_nets;
    *n_ports = f->n_ports;
    for (size_t i = 0; i < f->n_ports; i++) {
        (*ports)[i].attached = false;
        for (size_t j = 0; j < f->n_nets; j++)
            if (!strcmp(f->nets[j].id, f->ports[i].network_id))
                (*ports)[i].attached = true;
    }
    return 0;
}

static int
fake_net_ensure(struct overlay *ov, const struct overlay_net *net)
{
    struct overlay_fake *f = fake(ov);
    size_t i;
    for (i = 0; i < f->n_nets; i++)
        if (!strcmp(f->nets[i].id, net->id))
            break;
    if (i == f->n_nets) {
        if (f->n_nets == FAKE_MAX)
            return -ENOSPC;
        f->n_nets++;
    }
    f->nets[i] = *net;
    overlay_dhcp_digest(net, f->nets[i].dhcp_digest);
    memset(&f->nets[i].dhcp, 0, sizeof f->nets[i].dhcp);
    f->ops++;
    return 0;
}

static int
fake_net_remove(struct overlay *ov, const char *id)
{
    struct overlay_fake *f = fake(ov);
    for (size_t i = 0; i < f->n_nets; i++)
        if (!strcmp(f->nets[i].id, id)) {
            f->nets[i] = f->nets[--f->n_nets];
            f->ops++;
            return 0;
        }
    return 0;
}

static int
fake_port_ensure(struct overlay *ov, const struct overlay_port *port)
{
    struct overlay_fake *f = fake(ov);
    size_t i;
    for (i = 0; i < f->n_ports; i++)
        if (!strcmp(f->ports[i].id, port->id))
            break;
    if (i == f->n_ports) {
        if (f->n_ports == FAKE_MAX)
            return -ENOSPC;
        f->n_ports++;
    }
    f->ports[i] = *port;
    f->ops++;
    return 0;
}

static int
fake_port_remove(struct overlay *ov, const char *id)
{
    struct overlay_fake *f = fake(ov);
    for (size_t i = 0; i < f->n_ports; i++)
        if (!strcmp(f->ports[i].id, id)) {
            f->ports[i] = f->ports[--f->n_ports];
            f->ops++;
            return 0;
        }
    return 0;
}

unsigned
overlay_fake_ops(const struct overlay *ov)
{
    return ov->cls == &overlay_fake_class ? ((const struct overlay_fake *)ov)->ops : 0;
}

const struct overlay_class overlay_fake_class = {
    .name = "fake",
    .open = fake_open,
    .close = fake_close,
    .list = fake_list,
    .net_ensure = fake_net_ensure,
    .net_remove = fake_net_remove,
    .port_ensure = fake_port_ensure,
    .port_remove = fake_port_remove,
    .firewall_sync = fake_firewall_sync,
};
