/* The desired state of one instance, as nimbus-api (or a file, in tests and
 * development) describes it to the agent of its node, and the actual state
 * a hypervisor provider reports.  Plain data shared by every module of the
 * agent. */
#ifndef NIMBUS_AGENT_INSTANCE_H
#define NIMBUS_AGENT_INSTANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INST_MAX_PORTS 8

/* Power states, as the user wants them and as a hypervisor reports them.
 * NOSTATE: the hypervisor does not know the instance. */
#define POWER_STATES(X)                                                    \
    X(NOSTATE, "nostate")                                                  \
    X(RUNNING, "running")                                                  \
    X(PAUSED, "paused")                                                    \
    X(SUSPENDED, "suspended")                                              \
    X(SHUTOFF, "shutoff")                                                  \
    X(CRASHED, "crashed")

enum power_state {
#define X(e, s) POWER_##e,
    POWER_STATES(X)
#undef X
};
const char *power_state_name(enum power_state p);
/* Parses a power state name; returns 0 or -EINVAL. */
int power_state_parse(const char *s, enum power_state *out)
    __attribute__((warn_unused_result));

struct inst_image {
    char id[64];
    char disk_format[16];        /* qcow2, raw, aki, ari, ami, ... */
    char container_format[16];   /* bare, docker, ociarchive, aki, ... */
    char kernel_id[64];          /* For aki/ari/ami: image ids, "" if none. */
    char ramdisk_id[64];
    char sha512[129];            /* os_hash_value (hex), "" when unknown. */
    char os_command_line[256];   /* Kernel command line for direct boot. */
    uint64_t size;               /* Bytes, 0 when unknown. */
};

#define INST_MAX_FIXED_IPS 4

/* An address of a port, as the API's IPAM assigned it.  Containers are
 * configured with it directly (they run no DHCP client); VMs get it from
 * the network agent's DHCP server. */
struct inst_fixed_ip {
    char ip[46];                 /* Dotted quad or IPv6 text form. */
    unsigned prefixlen;
    char gateway[46];            /* "" when the subnet has none. */
};

enum inst_port_kind { INST_PORT_TAP, INST_PORT_VETH };

/* A port bound to this node: the network agent of the node creates its host
 * device ("tap" for VMs; for containers a veth pair, "tap<id>" on the bridge
 * and its peer "tpp<id>", which the oci provider moves into the container
 * as eth0). */
struct inst_port {
    char id[64];
    char mac[18];
    char tap[16];                /* Host device name (IFNAMSIZ). */
    enum inst_port_kind kind;
    char network_id[64];
    unsigned mtu;                /* 0: the device's default. */
    struct inst_fixed_ip fixed_ips[INST_MAX_FIXED_IPS];
    unsigned n_fixed_ips;
};

/* The name of the container side of a veth port: "tpp" + the tap's suffix
 * ("tap0b9a3c1e5f1" -> "tpp0b9a3c1e5f1").  'out' holds at least 16 bytes. */
void inst_port_peer(const struct inst_port *p, char out[16]);

/* One desired instance.  'generation' is raised by nimbus-api each time the
 * user asks for a power action (start, stop, reboot, pause, suspend...);
 * the agent applies the power state of a generation once, so that a guest
 * that powers itself off stays SHUTOFF (and is reported so) instead of
 * being restarted behind the user's back, as Nova does. */
struct inst_desired {
    char uuid[37];
    char name[128];
    unsigned vcpus;
    unsigned ram_mb;
    unsigned disk_gb;
    struct inst_image image;
    struct inst_image kernel;    /* Filled when image.kernel_id is set. */
    struct inst_image ramdisk;   /* Filled when image.ramdisk_id is set. */
    struct inst_port ports[INST_MAX_PORTS];
    unsigned n_ports;
    enum power_state power;      /* RUNNING, SHUTOFF, PAUSED or SUSPENDED. */
    uint64_t generation;
    char reboot[8];              /* "", "soft" or "hard": reboot when applying 'generation'. */
    bool deleted;                /* Delete now (no grace period). */
    /* Work of 'generation' besides the power state: "" (none), "resize"
     * (redefine with this flavor, grow the disk) or "snapshot" (copy the
     * disk to image 'snapshot_image' of nimbus-image) or "rebuild" (a new
     * disk from this image, defined again), "migrate_in" or "migrate_out"
     * (below), "live_in" or "live_out" (below). */
    char action[12];
    char snapshot_image[64];
    /* Rescue mode (Nova's rescue): while 'rescue' is set the guest boots
     * from a separate overlay of 'rescue_image' (with its kernel and
     * ramdisk, when it has them) and sees its own disk as the second
     * disk.  Actions "rescue" and "unrescue" redefine the guest in the
     * mode the document says. */
    bool rescue;
    struct inst_image rescue_image;
    struct inst_image rescue_kernel;
    struct inst_image rescue_ramdisk;
    /* A cold move between nodes (docs/compute-agent.md): "migrate_in" on
     * the destination (pull the overlay from 'migration_url' with the
     * one-time secret 'migration_secret', then define the guest);
     * "migrate_out" on the source (stop the guest and serve its overlay to
     * whoever shows the secret whose SHA-256 is 'migration_secret'). */
    char migration_url[512];
    char migration_secret[65];
    /* A live migration (docs/compute-agent.md "Live migration"): "live_in"
     * on the destination (make the storage, do not define: report the
     * definition this node would give the guest); "live_out" on the source
     * (migrate the running guest to the libvirtd at 'migration_url' with
     * definition 'migration_xml', its storage in 'migration_dir' there).
     * 'migration_xml' is malloc'd (NULL unless "live_out"), freed by
     * desired_set_free(). */
    char *migration_xml;
    char migration_dir[512];
};

/* A whole desired state: every instance the node should have. */
struct desired_set {
    uint64_t version;            /* Raised by the source on every change. */
    struct inst_desired *insts;
    size_t n;
};

void desired_set_free(struct desired_set *s);
const struct inst_desired *desired_set_find(const struct desired_set *s,
                                            const char *uuid);

/* What a provider reports for one Nimbus-owned instance. */
struct inst_actual {
    char uuid[37];
    enum power_state power;
    uint64_t generation;         /* Last generation applied (in the domain's metadata). */
};

#endif
