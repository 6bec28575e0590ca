/* The libvirt hypervisor provider: KVM, QEMU emulation (TCG) or Xen (libxl)
 * domains.  The only file of Nimbus that includes libvirt's headers.
 *
 * Ownership: a domain is this agent's only when it carries the metadata
 * element of namespace DX_NS_URI naming this node; every lookup checks it,
 * so a domain created by hand, or by the agent of another node sharing the
 * libvirtd (two "hosts" on one machine in tests), is never listed, stopped
 * or undefined, whatever its name or uuid. */
#include "hypervisor.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "domain_xml.h"
#include "kvm_probe.h"
#include "util.h"

/* Connections: libvirtd runs at most max_client_requests (5 by default)
 * calls of one client connection at once and queues the others, so the
 * reconciler's threads, creating at once, each get their own connection,
 * opened on a thread's first call and closed with the provider.  The
 * thread that opened the provider uses 'conn'. */
struct lv_thread_conn {
    pthread_t thread;
    virConnectPtr conn;
};

struct hv_libvirt {
    struct hypervisor up;
    virConnectPtr conn;
    pthread_t opener;
    char uri[512];
    pthread_mutex_t conns_mu;
    struct lv_thread_conn *conns;
    size_t n_conns, cap_conns;
    char virt_type[8];
    char node[256];
    bool network_agent;
    unsigned migrate_timeout_s;
};

static struct hv_libvirt *
lv_cast(struct hypervisor *hv)
{
    return (struct hv_libvirt *)hv;
}

/* Libvirt prints every error to stderr by default; we report them
 * ourselves, once. */
static void
lv_quiet(void *data, virErrorPtr err)
{
}

static int
lv_fail(struct hypervisor *hv, const char *what, const char *uuid)
{
    const char *msg = virGetLastErrorMessage();
    int code = virGetLastErrorCode();
    hv_set_error(hv, "%s %s: %s", what, uuid ? uuid : "", msg ? msg : "unknown error");
    if (code == VIR_ERR_NO_DOMAIN)
        return -ENOENT;
    if (code == VIR_ERR_OPERATION_INVALID)
        return -EINVAL;
    return -EIO;
}

/* The calling thread's connection: its own, opened now on its first call,
 * or the opener's one when opening another fails. */
static virConnectPtr
lv_conn(struct hv_libvirt *lv)
{
    pthread_t self = pthread_self();
    if (pthread_equal(self, lv->opener))
        return lv->conn;
    virConnectPtr c = NULL;
    pthread_mutex_lock(&lv->conns_mu);
    for (size_t i = 0; i < lv->n_conns && !c; i++)
        if (pthread_equal(lv->conns[i].thread, self))
            c = lv->conns[i].conn;
    pthread_mutex_unlock(&lv->conns_mu);
    if (c)
        return c;
    c = virConnectOpen(lv->uri);
    if (!c)
        return lv->conn;
    pthread_mutex_lock(&lv->conns_mu);
    if (lv->n_conns == lv->cap_conns) {
        size_t cap = lv->cap_conns ? lv->cap_conns * 2 : 16;
        struct lv_thread_conn *v = realloc(lv->conns, cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&lv->conns_mu);
            virConnectClose(c);
            return lv->conn;
        }
        lv->conns = v;
        lv->cap_conns = cap;
    }
    lv->conns[lv->n_conns++] = (struct lv_thread_conn){ self, c };
    pthread_mutex_unlock(&lv->conns_mu);
    return c;
}

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int
lv_open(const struct hv_config *cfg, struct hypervisor **out)
{
    struct hv_libvirt *lv = calloc(1, sizeof *lv);
    if (!lv)
        return -ENOMEM;
    lv->up.class = &hv_libvirt_class;
    lv->opener = pthread_self();
    pthread_mutex_init(&lv->conns_mu, NULL);
    *out = &lv->up;
    virSetErrorFunc(NULL, lv_quiet);
    hv_node_name(cfg, lv->node, sizeof lv->node);
    lv->network_agent = cfg->network_agent;
    lv->migrate_timeout_s = cfg->migrate_timeout_s;
    const char *uri = cfg->libvirt_uri && cfg->libvirt_uri[0] ? cfg->libvirt_uri : "qemu:///system";
    snprintf(lv->uri, sizeof lv->uri, "%s", uri);
    lv->conn = virConnectOpen(uri);
    if (!lv->conn)
        return lv_fail(&lv->up, "connect", uri);
    const char *vt = cfg->virt_type && cfg->virt_type[0] ? cfg->virt_type : "auto";
    if (!strcmp(vt, "auto")) {
        char why[256];
        vt = kvm_probe(NULL, why, sizeof why) ? "kvm" : "qemu";
    } else if (strcmp(vt, "kvm") && strcmp(vt, "qemu") && strcmp(vt, "xen")) {
        hv_set_error(&lv->up, "virt_type must be auto, kvm, qemu or xen, not '%s'", vt);
        return -EINVAL;
    }
    snprintf(lv->virt_type, sizeof lv->virt_type, "%s", vt);
    return 0;
}

static void
lv_close(struct hypervisor *hv)
{
    struct hv_libvirt *lv = lv_cast(hv);
    for (size_t i = 0; i < lv->n_conns; i++)
        virConnectClose(lv->conns[i].conn);
    free(lv->conns);
    pthread_mutex_destroy(&lv->conns_mu);
    if (lv->conn)
        virConnectClose(lv->conn);
    free(lv);
}

/* The Nimbus metadata of 'dom' (malloc'd) or NULL when the domain is not
 * Nimbus's. */
static char *
lv_metadata_any(virDomainPtr dom)
{
    return virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, DX_NS_URI, 0);
}

/* The same, but NULL too when the domain belongs to another node. */
static char *
lv_metadata(struct hv_libvirt *lv, virDomainPtr dom)
{
    char *md = lv_metadata_any(dom);
    if (md && !dx_metadata_node_is(md, lv->node)) {
        free(md);
        return NULL;
    }
    return md;
}

static enum power_state
lv_power(virDomainPtr dom)
{
    int state = VIR_DOMAIN_NOSTATE, reason = 0;
    if (virDomainGetState(dom, &state, &reason, 0) < 0)
        return POWER_NOSTATE;
    switch ((virDomainState)state) {
    case VIR_DOMAIN_RUNNING:
    case VIR_DOMAIN_BLOCKED:
    case VIR_DOMAIN_SHUTDOWN:       /* Being shut down: still running. */
        return POWER_RUNNING;
    case VIR_DOMAIN_PAUSED:
        /* QEMU starts paused and libvirt resumes it: starting up is
         * running, not a pause anyone asked for (an agent restarted while
         * libvirtd finishes a start it was killed in must not "unpause"). */
        return reason == VIR_DOMAIN_PAUSED_STARTING_UP ? POWER_RUNNING : POWER_PAUSED;
    case VIR_DOMAIN_PMSUSPENDED:
        return POWER_SUSPENDED;
    case VIR_DOMAIN_SHUTOFF:
        return virDomainHasManagedSaveImage(dom, 0) > 0 ? POWER_SUSPENDED : POWER_SHUTOFF;
    case VIR_DOMAIN_CRASHED:
        return POWER_CRASHED;
    case VIR_DOMAIN_NOSTATE:
    default:
        return POWER_NOSTATE;
    }
}

static int
lv_list(struct hypervisor *hv, struct inst_actual **out, size_t *n)
{
    struct hv_libvirt *lv = lv_cast(hv);
    virDomainPtr *doms = NULL;
    int nd = virConnectListAllDomains(lv_conn(lv), &doms, 0);
    if (nd < 0)
        return lv_fail(hv, "list domains", NULL);
    *out = calloc(nd ? (size_t)nd : 1, sizeof **out);
    *n = 0;
    for (int i = 0; i < nd; i++) {
        char *md = lv_metadata(lv, doms[i]);
        if (md && *out) {
            struct inst_actual *a = &(*out)[(*n)++];
            if (virDomainGetUUIDString(doms[i], a->uuid) < 0)
                (*n)--;
            else {
                a->power = lv_power(doms[i]);
                a->generation = dx_metadata_generation(md);
            }
        }
        free(md);
        virDomainFree(doms[i]);
    }
    free(doms);
    return *out ? 0 : -ENOMEM;
}

/* Looks up a Nimbus-owned domain; -ENOENT when missing or not Nimbus's. */
static int
lv_lookup(struct hv_libvirt *lv, const char *uuid, virDomainPtr *out)
{
    virDomainPtr dom = virDomainLookupByUUIDString(lv_conn(lv), uuid);
    if (!dom) {
        hv_set_error(&lv->up, "no domain %s", uuid);
        return -ENOENT;
    }
    char *md = lv_metadata(lv, dom);
    if (!md) {
        virDomainFree(dom);
        hv_set_error(&lv->up, "domain %s is not this node's: not touching it", uuid);
        return -ENOENT;
    }
    free(md);
    *out = dom;
    return 0;
}

char *
hv_libvirt_dest_xml(struct hypervisor *hv, const struct hv_create_args *a, uint64_t gen)
{
    struct hv_libvirt *lv = lv_cast(hv);
    struct hv_create_args args = *a;
    args.node = lv->node;
    args.foreign_taps = lv->network_agent;
    return dx_domain_xml(&args, lv->virt_type, gen);
}

static int
lv_create(struct hypervisor *hv, const struct hv_create_args *a, bool start)
{
    struct hv_libvirt *lv = lv_cast(hv);
    virDomainPtr old = virDomainLookupByUUIDString(lv_conn(lv), a->d->uuid);
    if (old) {
        char *md = lv_metadata(lv, old);
        virDomainFree(old);
        if (!md) {
            hv_set_error(hv, "a domain not this node's has uuid %s", a->d->uuid);
            return -EEXIST;
        }
        free(md);
    }
    /* The taps are the network agent's: define only once they are there, so
     * that starting never fails half-way on a missing device. */
    int r = lv->network_agent ? hv_ports_ready(hv, a->d) : 0;
    if (r)
        return r;
    char *xml = hv_libvirt_dest_xml(hv, a, 0);
    uint64_t t0 = util_now_ns();
    virDomainPtr dom = virDomainDefineXML(lv_conn(lv), xml);
    uint64_t t1 = util_now_ns();
    free(xml);
    hv_timing(hv)->define_ns = t1 - t0;
    if (!dom)
        return lv_fail(hv, "define", a->d->uuid);
    if (start && virDomainIsActive(dom) == 0) {
        if (virDomainCreate(dom) < 0)
            r = lv_fail(hv, "start", a->d->uuid);
        hv_timing(hv)->start_ns = util_now_ns() - t1;
    }
    virDomainFree(dom);
    return r;
}

/* The value of attribute 'attr' of the first element starting with
 * 'elem' in 'xml' (libvirt writes attributes in single quotes). */
static bool
xml_attr(const char *xml, const char *elem, const char *attr, char *out, size_t len)
{
    const char *e = strstr(xml, elem);
    if (!e)
        return false;
    const char *close = strchr(e, '>');
    char pat[64];
    snprintf(pat, sizeof pat, " %s='", attr);
    const char *a = strstr(e, pat);
    if (!a || (close && a > close))
        return false;
    a += strlen(pat);
    size_t n = strcspn(a, "'");
    if (n >= len)
        return false;
    memcpy(out, a, n);
    out[n] = 0;
    return true;
}

static int
lv_console(struct hypervisor *hv, const char *uuid, const char *protocol, char *addr,
           size_t len)
{
    struct hv_libvirt *lv = lv_cast(hv);
    virDomainPtr dom = virDomainLookupByUUIDString(lv_conn(lv), uuid);
    if (!dom)
        return -ENOENT;
    char *md = lv_metadata(lv, dom);
    char *xml = md && virDomainIsActive(dom) == 1 ? virDomainGetXMLDesc(dom, 0) : NULL;
    free(md);
    virDomainFree(dom);
    if (!xml)
        return -ENOENT;
    int r = -ENOENT;
    char v[128];
    if (!strcmp(protocol, "vnc")) {
        /* Nimbus defines VNC on loopback with autoport: the port is known
         * once the domain runs. */
        if (xml_attr(xml, "<graphics type='vnc'", "port", v, sizeof v) && atoi(v) > 0) {
            snprintf(addr, len, "127.0.0.1:%d", atoi(v));
            r = 0;
        }
    } else if (!strcmp(protocol, "serial")) {
        const char *s = strstr(xml, "<serial type='pty'>");
        if (s && xml_attr(s, "<source path=", "path", v, sizeof v) &&
            !strncmp(v, "/dev/pts/", 9)) {
            snprintf(addr, len, "%s", v);
            r = 0;
        }
    } else {
        r = -ENOTSUP;
    }
    free(xml);
    return r;
}

static int
lv_start(struct hypervisor *hv, const char *uuid)
{
    virDomainPtr dom;
    int r = lv_lookup(lv_cast(hv), uuid, &dom);
    if (r)
        return r;
    if (virDomainIsActive(dom) == 0 && virDomainCreate(dom) < 0)
        r = lv_fail(hv, "start", uuid);
    virDomainFree(dom);
    return r;
}

static int
lv_stop_dom(struct hypervisor *hv, virDomainPtr dom, const char *uuid, unsigned timeout_ms)
{
    if (virDomainIsActive(dom) != 1) {
        /* A suspended instance asked to stop: forget its saved memory. */
        if (virDomainHasManagedSaveImage(dom, 0) > 0 && virDomainManagedSaveRemove(dom, 0) < 0)
            return lv_fail(hv, "remove managed save", uuid);
        return 0;
    }
    int state = 0, reason = 0;
    if (virDomainGetState(dom, &state, &reason, 0) == 0 && state == VIR_DOMAIN_PAUSED)
        timeout_ms = 0;   /* A paused guest cannot react to ACPI. */
    if (timeout_ms && virDomainShutdown(dom) == 0) {
        for (unsigned waited = 0; waited < timeout_ms; waited += 100) {
            if (virDomainIsActive(dom) != 1)
                return 0;
            sleep_ms(100);
        }
    }
    if (virDomainIsActive(dom) == 1 && virDomainDestroy(dom) < 0 && virDomainIsActive(dom) == 1)
        return lv_fail(hv, "destroy", uuid);
    return 0;
}

static int
lv_stop(struct hypervisor *hv, const char *uuid, unsigned timeout_ms)
{
    virDomainPtr dom;
    int r = lv_lookup(lv_cast(hv), uuid, &dom);
    if (r)
        return r;
    r = lv_stop_dom(hv, dom, uuid, timeout_ms);
    virDomainFree(dom);
    return r;
}

/* Soft reboot as Nova's libvirt driver does it: a clean shutdown (ACPI) and
 * a fresh start, so the guest gets new hardware state; forced after the
 * timeout.  Hard: destroy and start. */
static int
lv_reboot(struct hypervisor *hv, const char *uuid, bool hard)
{
    virDomainPtr dom;
    int r = lv_lookup(lv_cast(hv), uuid, &dom);
    if (r)
        return r;
    r = lv_stop_dom(hv, dom, uuid, hard ? 0 : 10000);
    if (!r && virDomainCreate(dom) < 0)
        r = lv_fail(hv, "start", uuid);
    virDomainFree(dom);
    return r;
}

static int
lv_pause(struct hypervisor *hv, const char *uuid)
{
    virDomainPtr dom;
    int r = lv_lookup(lv_cast(hv), uuid, &dom);
    if (r)
        return r;
    if (lv_power(dom) != POWER_PAUSED && virDomainSuspend(dom) < 0)
        r = lv_fail(hv, "pause", uuid);
    virDomainFree(dom);
    return r;
}

static int
lv_unpause(struct hypervisor *hv, const char *uuid)
{
    virDomainPtr dom;
    int r = lv_lookup(lv_cast(hv), uuid, &dom);
    if (r)
        return r;
    if (lv_power(dom) == POWER_PAUSED && virDomainResume(dom) < 0 &&
        lv_power(dom) != POWER_RUNNING)
        r = lv_fail(hv, "unpause", uuid);
    virDomainFree(dom);
    return r;
}

static int
lv_suspend(struct hypervisor *hv, const char *uuid)
{
    virDomainPtr dom;
    int r = lv_lookup(lv_cast(hv), uuid, &dom);
    if (r)
        return r;
    if (virDomainIsActive(dom) == 1 && virDomainManagedSave(dom, 0) < 0)
        r = lv_fail(hv, "suspend (managed save)", uuid);
    virDomainFree(dom);
    return r;
}

static int
lv_resume(struct hypervisor *hv, const char *uuid)
{
    return lv_start(hv, uuid);   /* Starting restores the managed save. */
}

static int
lv_destroy(struct hypervisor *hv, const char *uuid)
{
    virDomainPtr dom;
    int r = lv_lookup(lv_cast(hv), uuid, &dom);
    if (r == -ENOENT)
        return 0;
    if (r)
        return r;
    if (virDomainIsActive(dom) == 1 && virDomainDestroy(dom) < 0 && virDomainIsActive(dom) == 1) {
        r = lv_fail(hv, "destroy", uuid);
        goto out;
    }
    unsigned flags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_NVRAM |
                     VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                     VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA;
    if (virDomainUndefineFlags(dom, flags) < 0 && virDomainUndefine(dom) < 0 &&
        virGetLastErrorCode() != VIR_ERR_NO_DOMAIN)
        r = lv_fail(hv, "undefine", uuid);
out:
    virDomainFree(dom);
    return r;
}

static int
lv_set_generation(struct hypervisor *hv, const char *uuid, uint64_t gen)
{
    virDomainPtr dom;
    int r = lv_lookup(lv_cast(hv), uuid, &dom);
    if (r)
        return r;
    char *md = lv_metadata(lv_cast(hv), dom);
    char *p = md ? strstr(md, "generation>") : NULL;
    if (!p) {
        free(md);
        virDomainFree(dom);
        hv_set_error(hv, "domain %s: metadata without generation", uuid);
        return -EINVAL;
    }
    /* Splice the new number into the element libvirt gave back. */
    p += strlen("generation>");
    char *end = p + strspn(p, "0123456789");
    size_t head = (size_t)(p - md);
    size_t len = head + 24 + strlen(end) + 1;
    char *nmd = malloc(len);
    if (!nmd) {
        free(md);
        virDomainFree(dom);
        return -ENOMEM;
    }
    snprintf(nmd, len, "%.*s%llu%s", (int)head, md, (unsigned long long)gen, end);
    unsigned flags = VIR_DOMAIN_AFFECT_CONFIG;
    if (virDomainIsActive(dom) == 1)
        flags |= VIR_DOMAIN_AFFECT_LIVE;
    if (virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, nmd, DX_NS_PREFIX,
                             DX_NS_URI, flags) < 0)
        r = lv_fail(hv, "set metadata", uuid);
    free(nmd);
    free(md);
    virDomainFree(dom);
    return r;
}

/* Interfaces attached or detached after create (os-interface): compared by
 * MAC with the domain's persistent definition, attached or detached in the
 * definition and, when it runs, live (hotplug; a detach completes when
 * the guest releases the device). */
static int
lv_sync_ports(struct hypervisor *hv, const struct inst_desired *d)
{
    struct hv_libvirt *lv = lv_cast(hv);
    virDomainPtr dom;
    if (lv_lookup(lv, d->uuid, &dom))
        return 0;
    char *xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
    if (!xml) {
        virDomainFree(dom);
        return lv_fail(hv, "read the definition of", d->uuid);
    }
    /* The MACs of its ethernet interfaces (every NIC Nimbus defines). */
    char have[INST_MAX_PORTS * 2][18];
    unsigned n_have = 0;
    for (const char *p = xml; (p = strstr(p, "<interface type='ethernet'>")) &&
                              n_have < INST_MAX_PORTS * 2; p++) {
        const char *m = strstr(p, "<mac address='");
        const char *end = strstr(p, "</interface>");
        if (m && (!end || m < end))
            snprintf(have[n_have++], sizeof have[0], "%.17s", m + strlen("<mac address='"));
    }
    free(xml);
    unsigned flags = VIR_DOMAIN_AFFECT_CONFIG;
    if (virDomainIsActive(dom) == 1)
        flags |= VIR_DOMAIN_AFFECT_LIVE;
    int r = 0;
    bool changed = false;
    for (unsigned i = 0; i < n_have && !r; i++) {
        bool wanted = false;
        for (unsigned k = 0; k < d->n_ports; k++)
            wanted = wanted || !strcasecmp(d->ports[k].mac, have[i]);
        if (wanted)
            continue;
        char ifx[128];
        snprintf(ifx, sizeof ifx, "<interface type='ethernet'><mac address='%.17s'/></interface>",
                 have[i]);
        if (virDomainDetachDeviceFlags(dom, ifx, flags) < 0)
            r = lv_fail(hv, "detach an interface from", d->uuid);
        changed = true;
    }
    for (unsigned k = 0; k < d->n_ports && !r; k++) {
        bool present = false;
        for (unsigned i = 0; i < n_have; i++)
            present = present || !strcasecmp(d->ports[k].mac, have[i]);
        if (present)
            continue;
        struct inst_desired one = *d;
        one.ports[0] = d->ports[k];
        one.n_ports = 1;
        if (lv->network_agent && (r = hv_ports_ready(hv, &one)))
            break;
        char *ifx = dx_interface_xml(&d->ports[k], lv->virt_type, lv->network_agent);
        if (virDomainAttachDeviceFlags(dom, ifx, flags) < 0)
            r = lv_fail(hv, "attach an interface to", d->uuid);
        free(ifx);
        changed = true;
    }
    virDomainFree(dom);
    return r ? r : changed ? 1 : 0;
}

/* One migration, run by a thread of its own so that the caller can give
 * up on it: virDomainMigrateToURI3() blocks until the end. */
struct lv_migration {
    virDomainPtr dom;
    const char *dconnuri;
    virTypedParameterPtr params;
    int nparams;
    unsigned flags;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
    int code;           /* libvirt's error code (errors are per thread). */
    char msg[384];
};

static void *
lv_migration_run(void *arg)
{
    struct lv_migration *m = arg;
    int rc = virDomainMigrateToURI3(m->dom, m->dconnuri, m->params, (unsigned)m->nparams,
                                    m->flags);
    pthread_mutex_lock(&m->mu);
    m->rc = rc;
    if (rc < 0) {
        const char *msg = virGetLastErrorMessage();
        m->code = virGetLastErrorCode();
        snprintf(m->msg, sizeof m->msg, "%s", msg ? msg : "unknown error");
    }
    m->done = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* The migration stream's URI for destination 'dconnuri': the host of a
 * remote libvirt URI (qemu+tcp://host/system, qemu+ssh://user@host/system),
 * or loopback for a libvirtd on this machine (qemu:///system,
 * qemu+unix:///system?socket=...), the destination then listening on
 * loopback only.  False when the URI is malformed. */
static bool
lv_migration_uri(const char *dconnuri, char *uri, size_t len, bool *loopback)
{
    const char *p = strstr(dconnuri, "://");
    if (!p)
        return false;
    p += 3;
    const char *at = strpbrk(p, "@/?");
    if (at && *at == '@')
        p = at + 1;
    size_t n = strcspn(p, "/?");
    if (p[0] == '[') {
        const char *close = strchr(p, ']');
        if (!close || (size_t)(close - p) >= n)
            return false;
        n = (size_t)(close - p) + 1;
    } else {
        n = strcspn(p, ":/?");
    }
    *loopback = n == 0;
    if (*loopback)
        snprintf(uri, len, "tcp://127.0.0.1");
    else if ((size_t)snprintf(uri, len, "tcp://%.*s", (int)n, p) >= len)
        return false;
    return true;
}

static int
lv_migrate_live(struct hypervisor *hv, const struct hv_migrate_args *a)
{
    struct hv_libvirt *lv = lv_cast(hv);
    const char *uuid = a->d->uuid;
    if (!a->dest_uri || !a->dest_uri[0] || !a->dest_xml || !a->inst_dir_dest) {
        hv_set_error(hv, "migrate %s: destination URI, XML and directory needed", uuid);
        return -EINVAL;
    }
    /* A definition with this node's paths would run the destination on
     * the source's files. */
    if (!strstr(a->dest_xml, a->inst_dir_dest)) {
        hv_set_error(hv, "migrate %s: the destination XML does not use %s", uuid,
                     a->inst_dir_dest);
        return -EINVAL;
    }
    char muri[300];
    bool loopback;
    if (!lv_migration_uri(a->dest_uri, muri, sizeof muri, &loopback)) {
        hv_set_error(hv, "migrate %s: bad destination URI '%s'", uuid, a->dest_uri);
        return -EINVAL;
    }
    virDomainPtr dom;
    int r = lv_lookup(lv, uuid, &dom);
    if (r)
        return r;
    if (virDomainIsActive(dom) != 1) {
        virDomainFree(dom);
        hv_set_error(hv, "migrate %s: not running", uuid);
        return -EINVAL;
    }

    struct lv_migration m = { .dom = dom, .dconnuri = a->dest_uri };
    int maxparams = 0;
    /* The definition goes both live and persistent: without PERSIST_XML
     * the destination would keep the source's persistent definition, with
     * this node's name and paths. */
    if (virTypedParamsAddString(&m.params, &m.nparams, &maxparams,
                                VIR_MIGRATE_PARAM_DEST_XML, a->dest_xml) < 0 ||
        virTypedParamsAddString(&m.params, &m.nparams, &maxparams,
                                VIR_MIGRATE_PARAM_PERSIST_XML, a->dest_xml) < 0 ||
        virTypedParamsAddString(&m.params, &m.nparams, &maxparams,
                                VIR_MIGRATE_PARAM_URI, muri) < 0 ||
        (loopback && virTypedParamsAddString(&m.params, &m.nparams, &maxparams,
                                             VIR_MIGRATE_PARAM_LISTEN_ADDRESS,
                                             "127.0.0.1") < 0) ||
        (a->bandwidth_mib && virTypedParamsAddULLong(&m.params, &m.nparams, &maxparams,
                                                     VIR_MIGRATE_PARAM_BANDWIDTH,
                                                     a->bandwidth_mib) < 0)) {
        r = lv_fail(hv, "migrate (parameters)", uuid);
        goto out;
    }
    /* Non-shared storage, incremental: the destination made the overlay
     * on its own copy of the backing image, only the overlay's data is
     * copied (NBD, on the same host as the stream).  Auto-converge slows
     * a guest that dirties memory faster than it can be sent. */
    m.flags = VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_PERSIST_DEST |
              VIR_MIGRATE_UNDEFINE_SOURCE | VIR_MIGRATE_NON_SHARED_INC |
              VIR_MIGRATE_AUTO_CONVERGE;
    pthread_mutex_init(&m.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m.cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_t th;
    if (pthread_create(&th, NULL, lv_migration_run, &m)) {
        hv_set_error(hv, "migrate %s: cannot start a thread", uuid);
        r = -EAGAIN;
        goto out_sync;
    }
    unsigned timeout_s = lv->migrate_timeout_s ? lv->migrate_timeout_s :
                         HV_MIGRATE_TIMEOUT_S + a->d->ram_mb / 32;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_s;
    bool timed_out = false;
    pthread_mutex_lock(&m.mu);
    while (!m.done && !timed_out)
        timed_out = pthread_cond_timedwait(&m.cv, &m.mu, &deadline) == ETIMEDOUT && !m.done;
    pthread_mutex_unlock(&m.mu);
    char abort_err[200] = "";
    if (timed_out && virDomainAbortJob(dom) < 0)
        snprintf(abort_err, sizeof abort_err, " (abort: %s)", virGetLastErrorMessage());
    pthread_join(th, NULL);
    if (m.rc == 0) {
        r = 0;
    } else if (timed_out) {
        hv_set_error(hv, "migrate %s: not done after %u s, aborted%s: %s", uuid, timeout_s,
                     abort_err, m.msg);
        r = -ETIMEDOUT;
    } else {
        hv_set_error(hv, "migrate %s to %s: %s", uuid, a->dest_uri, m.msg);
        r = m.code == VIR_ERR_NO_DOMAIN ? -ENOENT :
            m.code == VIR_ERR_OPERATION_INVALID ? -EINVAL : -EIO;
    }
out_sync:
    pthread_cond_destroy(&m.cv);
    pthread_mutex_destroy(&m.mu);
out:
    virTypedParamsFree(m.params, m.nparams);
    virDomainFree(dom);
    return r;
}

static const char *
lv_virt_type(struct hypervisor *hv)
{
    return lv_cast(hv)->virt_type;
}

const struct hypervisor_class hv_libvirt_class = {
    .name = "libvirt",
    .open = lv_open,
    .close = lv_close,
    .list = lv_list,
    .create = lv_create,
    .start = lv_start,
    .stop = lv_stop,
    .reboot = lv_reboot,
    .pause = lv_pause,
    .unpause = lv_unpause,
    .suspend = lv_suspend,
    .resume = lv_resume,
    .destroy = lv_destroy,
    .set_generation = lv_set_generation,
    .console = lv_console,
    .sync_ports = lv_sync_ports,
    .virt_type = lv_virt_type,
    .migrate_live = lv_migrate_live,
};
