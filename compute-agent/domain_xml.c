#include "domain_xml.h"

#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

static void
add_metadata(struct strbuf *b, const struct inst_desired *d, const char *node, uint64_t gen)
{
    sb_add(b, "<" DX_NS_PREFIX ":instance xmlns:" DX_NS_PREFIX "='" DX_NS_URI "'>");
    sb_add(b, "<" DX_NS_PREFIX ":uuid>");
    sb_add_xml(b, d->uuid);
    sb_add(b, "</" DX_NS_PREFIX ":uuid><" DX_NS_PREFIX ":name>");
    sb_add_xml(b, d->name);
    sb_add(b, "</" DX_NS_PREFIX ":name>");
    sb_printf(b, "<" DX_NS_PREFIX ":flavor vcpus='%u' ram_mb='%u' disk_gb='%u'/>",
              d->vcpus, d->ram_mb, d->disk_gb);
    sb_add(b, "<" DX_NS_PREFIX ":image>");
    sb_add_xml(b, d->image.id);
    sb_add(b, "</" DX_NS_PREFIX ":image>");
    if (node && node[0]) {
        sb_add(b, "<" DX_NS_PREFIX ":node>");
        sb_add_xml(b, node);
        sb_add(b, "</" DX_NS_PREFIX ":node>");
    }
    sb_printf(b, "<" DX_NS_PREFIX ":generation>%llu</" DX_NS_PREFIX ":generation>",
              (unsigned long long)gen);
    sb_add(b, "</" DX_NS_PREFIX ":instance>");
}

/* A file disk, the 'index'th (0: vda or xvda, 1: vdb or xvdb). */
static void
add_disk(struct strbuf *b, const char *path, const char *format, bool xen, unsigned index)
{
    sb_printf(b, "    <disk type='file' device='disk'>\n"
                 "      <driver name='qemu' type='%s'/>\n"
                 "      <source file='", format);
    sb_add_xml(b, path);
    sb_printf(b, "'/>\n      <target dev='%s%c' bus='%s'/>\n    </disk>\n",
              xen ? "xvd" : "vd", 'a' + (char)(index % 26), xen ? "xen" : "virtio");
}

static void
add_interface(struct strbuf *b, const struct inst_port *p, bool xen, bool foreign_taps)
{
    sb_add(b, "    <interface type='ethernet'>\n      <mac address='");
    sb_add_xml(b, p->mac);
    sb_add(b, "'/>\n");
    if (p->tap[0]) {
        sb_add(b, "      <target dev='");
        sb_add_xml(b, p->tap);
        sb_add(b, foreign_taps ? "' managed='no'/>\n" : "'/>\n");
    }
    sb_printf(b, "      <model type='%s'/>\n", xen ? "netfront" : "virtio");
    if (p->mtu && !xen)
        sb_printf(b, "      <mtu size='%u'/>\n", p->mtu);
    sb_add(b, "    </interface>\n");
}

char *
dx_interface_xml(const struct inst_port *p, const char *virt_type, bool foreign_taps)
{
    struct strbuf b = { 0 };
    add_interface(&b, p, !strcmp(virt_type, "xen"), foreign_taps);
    return sb_steal(&b);
}

char *
dx_metadata_xml(const struct inst_desired *d, uint64_t generation)
{
    struct strbuf b = { 0 };
    add_metadata(&b, d, NULL, generation);
    return sb_steal(&b);
}

bool
dx_metadata_node_is(const char *xml, const char *node)
{
    const char *p = xml ? strstr(xml, ":node>") : NULL;
    if (!p)
        p = xml ? strstr(xml, "<node>") : NULL;
    if (!p)
        return false;
    p = strchr(p, '>') + 1;
    const char *end = strchr(p, '<');
    if (!end)
        return false;
    /* Names are written escaped: compare with the escaped form. */
    struct strbuf b = { 0 };
    sb_add_xml(&b, node);
    char *want = sb_steal(&b);
    bool same = want && strlen(want) == (size_t)(end - p) && !strncmp(p, want, (size_t)(end - p));
    free(want);
    return same;
}

uint64_t
dx_metadata_generation(const char *xml)
{
    const char *p = xml ? strstr(xml, ":generation>") : NULL;
    if (!p)
        p = xml ? strstr(xml, "<generation>") : NULL;
    if (!p)
        return 0;
    p = strchr(p, '>') + 1;
    return strtoull(p, NULL, 10);
}

char *
dx_domain_xml(const struct hv_create_args *a, const char *virt_type,
              uint64_t generation)
{
    const struct inst_desired *d = a->d;
    bool xen = !strcmp(virt_type, "xen");
    bool direct = a->kernel_path != NULL;
    struct strbuf b = { 0 };

    sb_printf(&b, "<domain type='%s'>\n", xen ? "xen" : virt_type);
    sb_add(&b, "  <name>" DX_NAME_PREFIX);
    sb_add_xml(&b, d->uuid);
    sb_add(&b, "</name>\n  <uuid>");
    sb_add_xml(&b, d->uuid);
    sb_add(&b, "</uuid>\n  <title>");
    sb_add_xml(&b, d->name);
    sb_add(&b, "</title>\n  <metadata>\n    ");
    add_metadata(&b, d, a->node, generation);
    sb_add(&b, "\n  </metadata>\n");
    sb_printf(&b, "  <memory unit='MiB'>%u</memory>\n", d->ram_mb);
    sb_printf(&b, "  <vcpu placement='static'>%u</vcpu>\n", d->vcpus ? d->vcpus : 1);

    /* Boot: Xen PV takes the kernel directly; HVM guests (KVM, QEMU, Xen
     * HVM) boot from the disk or directly from kernel+ramdisk. */
    sb_add(&b, "  <os>\n");
    if (xen && direct)
        sb_add(&b, "    <type arch='x86_64' machine='xenpv'>xen</type>\n");
    else if (xen)
        sb_add(&b, "    <type arch='x86_64' machine='xenfv'>hvm</type>\n");
    else
        sb_add(&b, "    <type arch='x86_64' machine='pc'>hvm</type>\n");
    if (direct) {
        sb_add(&b, "    <kernel>");
        sb_add_xml(&b, a->kernel_path);
        sb_add(&b, "</kernel>\n");
        if (a->ramdisk_path) {
            sb_add(&b, "    <initrd>");
            sb_add_xml(&b, a->ramdisk_path);
            sb_add(&b, "</initrd>\n");
        }
        /* In rescue mode the kernel is the rescue image's, and so is its
         * command line. */
        const char *cmdline = a->rescue_disk_path ? d->rescue_image.os_command_line
                                                  : d->image.os_command_line;
        sb_add(&b, "    <cmdline>");
        sb_add_xml(&b, cmdline[0] ? cmdline :
                   xen ? "root=/dev/xvda console=hvc0" : "root=/dev/vda console=tty0 console=ttyS0");
        sb_add(&b, "</cmdline>\n");
    } else {
        sb_add(&b, "    <boot dev='hd'/>\n");
    }
    sb_add(&b, "  </os>\n");
    if (!(xen && direct))
        sb_add(&b, "  <features>\n    <acpi/>\n    <apic/>\n  </features>\n");
    if (!strcmp(virt_type, "kvm"))
        sb_add(&b, "  <cpu mode='host-passthrough'/>\n");
    sb_add(&b, "  <clock offset='utc'/>\n");
    sb_add(&b, "  <on_poweroff>destroy</on_poweroff>\n"
               "  <on_reboot>restart</on_reboot>\n"
               "  <on_crash>destroy</on_crash>\n");

    sb_add(&b, "  <devices>\n");
    /* Rescue mode (Nova's libvirt rescue): the rescue overlay is the
     * first disk, booted from; the instance's own disk the second. */
    unsigned n_disks = 0;
    if (a->rescue_disk_path)
        add_disk(&b, a->rescue_disk_path, "qcow2", xen, n_disks++);
    if (a->disk_path)
        add_disk(&b, a->disk_path, a->disk_format ? a->disk_format : "qcow2", xen, n_disks++);
    /* Ports: the network agent of the node has made the tap and plugged it
     * into the tenant bridge, so libvirt only opens it (managed='no');
     * without a network agent libvirt makes the tap itself. */
    for (unsigned i = 0; i < d->n_ports; i++)
        add_interface(&b, &d->ports[i], xen, a->foreign_taps);
    if (xen) {
        sb_add(&b, "    <console type='pty'>\n      <log file='");
        sb_add_xml(&b, a->console_log);
        sb_add(&b, "' append='on'/>\n      <target type='xen' port='0'/>\n    </console>\n");
    } else {
        sb_add(&b, "    <serial type='pty'>\n      <log file='");
        sb_add_xml(&b, a->console_log);
        sb_add(&b, "' append='on'/>\n      <target port='0'/>\n    </serial>\n"
                   "    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n");
    }
    sb_add(&b, "    <graphics type='vnc' autoport='yes' listen='127.0.0.1'>\n"
               "      <listen type='address' address='127.0.0.1'/>\n"
               "    </graphics>\n");
    /* No balloon: nothing here resizes guests' memory, and under TCG each
     * device costs boot time. */
    sb_add(&b, "    <memballoon model='none'/>\n");
    sb_add(&b, "  </devices>\n</domain>\n");
    return sb_steal(&b);
}
