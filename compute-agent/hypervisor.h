/* Hypervisor providers: a small table of function pointers with a fake
 * beside the real ones (Open vSwitch's netdev-provider.h).
 *
 *   fake     in memory, for unit tests and the scheduler's scale simulation
 *   libvirt  KVM, QEMU emulation (TCG) or Xen (libxl) domains; hv_libvirt.c
 *            is the only file of Nimbus that includes libvirt's headers
 *   oci      containers through runc
 *
 * A provider only ever sees and touches instances Nimbus owns on its own
 * node: for libvirt, domains carrying the Nimbus metadata element with this
 * node's name (several agents, i.e. several "hosts", may share one
 * libvirtd); for oci, containers under its state directory whose marker
 * names this node.  A domain created by hand, or by another node's agent, is
 * invisible to list() and every operation on it fails with -ENOENT.
 *
 * Ports: create() (and oci's start()) return -EAGAIN, with a message, while
 * a port's host device is not there yet (the network agent of the node
 * creates it); the reconciler waits and tries again.
 *
 * Every operation is idempotent where it can be (create of an existing
 * instance redefines it, start of a running one succeeds, destroy of a
 * missing one succeeds), so the reconciler can repeat any step after a
 * crash.  Operations block: the daemon calls them from worker threads,
 * never from the event loop.  Operations on different instances may run
 * concurrently on several threads (the reconciler creates instances in
 * parallel): a provider guards whatever state it shares between them.
 * Operations on one instance never overlap.  All return 0 or a negative
 * errno; a message for people is left for the calling thread, read with
 * hv_err() (per thread, like errno and libvirt's virGetLastError()). */
#ifndef NIMBUS_AGENT_HYPERVISOR_H
#define NIMBUS_AGENT_HYPERVISOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "instance.h"

struct hypervisor;

struct hv_config {
    const char *type;            /* "fake", "libvirt" or "oci". */
    const char *libvirt_uri;     /* Default qemu:///system. */
    const char *virt_type;       /* "auto" (kvm when /dev/kvm works, else qemu), "kvm", "qemu", "xen". */
    const char *state_dir;       /* Per-instance directories live in state_dir/instances/<uuid>. */
    const char *runc;            /* runc binary for oci (default "runc"). */
    const char *node;            /* This node's name; NULL or "": the host name. */
    /* Whether nimbus-network runs on this node and makes the ports'
     * devices (taps, veth pairs), which instances then wait for.  false:
     * libvirt makes its own taps (on no bridge) and containers get no
     * network, for nodes without a network agent. */
    bool network_agent;
    /* Seconds before a live migration from this node is aborted; 0:
     * HV_MIGRATE_TIMEOUT_S plus 1 s per 32 MiB of the guest's RAM. */
    unsigned migrate_timeout_s;
};

/* Where the storage of an instance is, prepared by the image cache before
 * create(). */
struct hv_create_args {
    const struct inst_desired *d;
    const char *inst_dir;        /* state_dir/instances/<uuid>, exists. */
    const char *disk_path;       /* libvirt: the instance's overlay; NULL for none. */
    /* Rescue mode: the rescue overlay, booted as the first disk, with
     * 'disk_path' as the second; kernel_path/ramdisk_path are then the
     * rescue image's.  NULL otherwise. */
    const char *rescue_disk_path;
    const char *disk_format;     /* "qcow2" (overlays) or "raw". */
    const char *kernel_path;     /* Direct kernel boot, or NULL. */
    const char *ramdisk_path;    /* Or NULL. */
    const char *rootfs_path;     /* oci: the read-only cached layer. */
    const char *console_log;     /* Serial console / stdout log file. */
    const char *node;            /* Set by the provider: the owning node's name. */
    bool foreign_taps;           /* Set by the provider: taps exist already (managed='no'). */
};

/* A live migration of a running instance to another node (another
 * libvirtd).  The destination's storage is ready: its agent has fetched the
 * image into its own cache and made the instance's overlay in
 * inst_dir_dest, on the same backing content; dest_xml is the definition
 * the destination agent builds for the instance with its own node name and
 * paths (hv_migration_dest_xml() on the destination). */
struct hv_migrate_args {
    const struct inst_desired *d;
    const char *dest_uri;        /* The destination libvirtd, as this libvirtd reaches it. */
    const char *dest_xml;        /* The domain definition on the destination. */
    const char *inst_dir_dest;   /* state_dir/instances/<uuid> on the destination. */
    unsigned bandwidth_mib;      /* MiB/s; 0: unlimited. */
};

/* By default, a live migration not finished after this long, plus one
 * second per 32 MiB of guest RAM, is aborted; the instance keeps running
 * on the source (hv_config.migrate_timeout_s overrides it). */
#define HV_MIGRATE_TIMEOUT_S 120

struct hypervisor_class {
    const char *name;
    int (*open)(const struct hv_config *cfg, struct hypervisor **out);
    void (*close)(struct hypervisor *hv);
    /* Nimbus-owned instances with their state; *out is malloc'd, caller frees. */
    int (*list)(struct hypervisor *hv, struct inst_actual **out, size_t *n);
    /* Defines (or redefines) the instance, and starts it when 'start'. */
    int (*create)(struct hypervisor *hv, const struct hv_create_args *a, bool start);
    int (*start)(struct hypervisor *hv, const char *uuid);
    /* Graceful (ACPI, SIGTERM) stop, forced after 'timeout_ms'. */
    int (*stop)(struct hypervisor *hv, const char *uuid, unsigned timeout_ms);
    int (*reboot)(struct hypervisor *hv, const char *uuid, bool hard);
    int (*pause)(struct hypervisor *hv, const char *uuid);
    int (*unpause)(struct hypervisor *hv, const char *uuid);
    int (*suspend)(struct hypervisor *hv, const char *uuid);   /* Managed save. */
    int (*resume)(struct hypervisor *hv, const char *uuid);
    /* Stops and forgets the instance (managed save, nvram too).  Missing: 0. */
    int (*destroy)(struct hypervisor *hv, const char *uuid);
    /* Records the generation applied, in the instance's own metadata. */
    int (*set_generation)(struct hypervisor *hv, const char *uuid, uint64_t gen);
    /* Where the console of a running instance is, for the console proxy:
     * "host:port" of its VNC server for protocol "vnc", its serial pty for
     * "serial".  Optional (NULL: none).  Called from the proxy's threads,
     * concurrently with other operations. */
    int (*console)(struct hypervisor *hv, const char *uuid, const char *protocol,
                   char *addr, size_t len);
    /* Makes an existing instance's ports those of 'd' (interfaces attached
     * or detached after create: os-interface).  Returns 1 when it changed
     * something, 0 when nothing was to do, -EAGAIN while a new port's
     * device is not there yet, or another -errno.  May be NULL. */
    int (*sync_ports)(struct hypervisor *hv, const struct inst_desired *d);
    /* Host facts for the inventory report: "qemu", "kvm", "xen", "runc". */
    const char *(*virt_type)(struct hypervisor *hv);
    /* Moves running instance a->d->uuid, live, to the node at a->dest_uri:
     * peer to peer, memory and the overlay's own data copied while the
     * guest runs (the backing image is the destination's), defined there
     * from a->dest_xml, undefined here on success.  Bounded in time
     * (hv_config.migrate_timeout_s): aborted on timeout.  On any failure the
     * instance still runs here.  -ENOENT: not this node's; -EINVAL: not
     * running; -ETIMEDOUT; -EIO.  NULL when the provider cannot. */
    int (*migrate_live)(struct hypervisor *hv, const struct hv_migrate_args *a);
};

/* The part every provider's struct starts with. */
struct hypervisor {
    const struct hypervisor_class *class;
    /* cfg->network_agent, set by hv_open(): the ports' devices are made
     * by nimbus-network, and whoever plugs a guest waits for them. */
    bool network_agent;
};

/* How long the calling thread's last create() spent defining the instance
 * and starting it (nanoseconds, 0 for a part it did not do): the agent
 * reports them in its timing events.  Written by create() only. */
struct hv_timing {
    uint64_t define_ns, start_ns;
};

extern const struct hypervisor_class hv_fake_class;
extern const struct hypervisor_class hv_libvirt_class;   /* When built with libvirt. */
extern const struct hypervisor_class hv_oci_class;

/* Opens the provider named cfg->type.  Returns -ENOTSUP for an unknown (or
 * not compiled in) type, with a message in 'err'. */
int hv_open(const struct hv_config *cfg, struct hypervisor **out,
            char *err, size_t errlen) __attribute__((warn_unused_result));
/* Accepts NULL. */
void hv_close(struct hypervisor *hv);

/* This node's name: cfg->node, or the host name. */
void hv_node_name(const struct hv_config *cfg, char *out, size_t len);

/* The definition this node gives the instance of 'a' (its own node name,
 * the paths of 'a', generation 'gen'): what the destination of a live
 * migration hands the source as hv_migrate_args.dest_xml.  Malloc'd, the
 * caller frees; NULL with hv_err() set when the provider has none (libvirt
 * and fake have). */
char *hv_migration_dest_xml(struct hypervisor *hv, const struct hv_create_args *a, uint64_t gen);
#ifdef NIMBUS_HAVE_LIBVIRT
/* The libvirt provider's, for hv_migration_dest_xml(). */
char *hv_libvirt_dest_xml(struct hypervisor *hv, const struct hv_create_args *a, uint64_t gen);
#endif

/* Whether network device 'dev' exists in the agent's network namespace. */
bool hv_netdev_exists(const char *dev);

/* 0 when the host device of every port of 'd' is there (the tap, or for a
 * veth port the peer to move into the container); -EAGAIN with a message
 * in hv_err() naming the first one missing.  Callers skip it when the node
 * has no network agent. */
int hv_ports_ready(struct hypervisor *hv, const struct inst_desired *d)
    __attribute__((warn_unused_result));

/* Sets the calling thread's hypervisor error message from a format. */
void hv_set_error(struct hypervisor *hv, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The message the calling thread's last failed operation left ("" when
 * none since hv_clear_error()); valid until the thread's next operation.
 * Per thread, whatever 'hv' (which may be NULL). */
const char *hv_err(const struct hypervisor *hv);
void hv_clear_error(struct hypervisor *hv);
/* The calling thread's create() timings (hv_timing above); the caller
 * zeroes them before a create() and reads them after. */
struct hv_timing *hv_timing(struct hypervisor *hv);

/* ---- The fake provider's test hooks (safe from any thread). */

/* Makes the next 'count' calls of operation 'op' ("create", "start", ...)
 * fail with 'error'. */
void hv_fake_fail(struct hypervisor *hv, const char *op, int error, unsigned count);
/* The same for the calls on instance 'uuid' only (NULL: any). */
void hv_fake_fail_instance(struct hypervisor *hv, const char *op, const char *uuid, int error,
                           unsigned count);
/* Makes every later call of 'op' take 'ms' milliseconds more (0: none),
 * slept without holding the fake's lock, as a hypervisor's own work. */
void hv_fake_delay(struct hypervisor *hv, const char *op, unsigned ms);
/* The most calls of 'op' that were in progress at once. */
unsigned hv_fake_max_concurrent(struct hypervisor *hv, const char *op);
/* Changes an instance's power state behind the agent's back (a guest that
 * powers itself off, a crash).  -ENOENT if unknown. */
int hv_fake_set_power(struct hypervisor *hv, const char *uuid, enum power_state p);
/* Adds an instance Nimbus does not own: never listed, never touched. */
void hv_fake_add_foreign(struct hypervisor *hv, const char *uuid);
/* Whether a foreign instance is still there and untouched. */
bool hv_fake_foreign_intact(struct hypervisor *hv, const char *uuid);
/* Number of calls of 'op' so far. */
unsigned hv_fake_calls(struct hypervisor *hv, const char *op);
/* The vCPUs and RAM of the last create() of 'uuid'; -ENOENT if unknown. */
int hv_fake_flavor(struct hypervisor *hv, const char *uuid, unsigned *vcpus, unsigned *ram_mb)
    __attribute__((warn_unused_result));
/* The disk (or rootfs) path of the last create() of 'uuid', or NULL. */
const char *hv_fake_disk(struct hypervisor *hv, const char *uuid);
/* The rescue disk of the last create() of 'uuid' ("" when it was not in
 * rescue mode), or NULL. */
const char *hv_fake_rescue_disk(struct hypervisor *hv, const char *uuid);
/* The fake's hv_migration_dest_xml().  Its migrate_live() moves a running
 * instance to the fake provider opened for node N in the same process,
 * dest_uri "fake://N", disk and console log then in inst_dir_dest. */
char *hv_fake_dest_xml(struct hypervisor *hv, const struct hv_create_args *a, uint64_t gen);

#endif
