/* Domain XML: QEMU/KVM with direct kernel boot and whole-disk boot, Xen
 * (libxl) PV and HVM; Nimbus metadata, escaping, ports, console, VNC on
 * loopback.  Every document is checked with virt-xml-validate (libvirt's
 * schema) when it is installed; without it those checks are skipped, the
 * rest still runs. */
#include "domain_xml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../check.h"

static bool have_validator;

static void
validate(const char *xml, const char *what)
{
    if (!have_validator)
        return;
    char path[] = "/tmp/nimbus-dxml-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    FILE *f = fdopen(fd, "w");
    fputs(xml, f);
    fclose(f);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "virt-xml-validate %s domain >/tmp/nimbus-dxml.out 2>&1", path);
    int rc = system(cmd);
    if (rc != 0) {
        fprintf(stderr, "%s: virt-xml-validate failed:\n%s\n", what, xml);
        if (system("cat /tmp/nimbus-dxml.out >&2")) {
        }
    }
    CHECK_INT(rc, 0);
    unlink(path);
}

static struct inst_desired
desired(void)
{
    struct inst_desired d;
    memset(&d, 0, sizeof d);
    snprintf(d.uuid, sizeof d.uuid, "0b9a3c1e-5f4d-4c2b-9a8e-7d6c5b4a3f21");
    snprintf(d.name, sizeof d.name, "web<1>&'x'");
    d.vcpus = 2;
    d.ram_mb = 256;
    d.disk_gb = 1;
    snprintf(d.image.id, sizeof d.image.id, "img-ami");
    snprintf(d.image.disk_format, sizeof d.image.disk_format, "ami");
    d.n_ports = 2;
    snprintf(d.ports[0].mac, sizeof d.ports[0].mac, "fa:16:3e:00:00:01");
    snprintf(d.ports[0].tap, sizeof d.ports[0].tap, "tap0b9a3c1e-5f");
    d.ports[0].mtu = 1450;
    snprintf(d.ports[1].mac, sizeof d.ports[1].mac, "fa:16:3e:00:00:02");
    d.generation = 3;
    return d;
}

static void
test_qemu_direct(void)
{
    struct inst_desired d = desired();
    snprintf(d.image.os_command_line, sizeof d.image.os_command_line, "console=ttyS0 quiet");
    struct hv_create_args a = {
        .d = &d, .inst_dir = "/var/lib/nimbus/i", .disk_path = "/var/lib/nimbus/i/disk.qcow2",
        .disk_format = "qcow2", .kernel_path = "/cache/base/k", .ramdisk_path = "/cache/base/r",
        .console_log = "/var/lib/nimbus/i/console.log", .node = "node<a>", .foreign_taps = true,
    };
    char *x = dx_domain_xml(&a, "qemu", 0);
    CHECK(strstr(x, "<domain type='qemu'>"));
    /* Owned by one node: another agent on the same libvirtd leaves it be. */
    CHECK(strstr(x, "<nimbus:node>node&lt;a&gt;</nimbus:node>"));
    CHECK(dx_metadata_node_is(x, "node<a>"));
    CHECK(!dx_metadata_node_is(x, "node"));
    CHECK(!dx_metadata_node_is(x, "node<a>x"));
    CHECK(!dx_metadata_node_is("<nimbus:instance><nimbus:generation>1</nimbus:generation>"
                               "</nimbus:instance>", "node<a>"));
    CHECK(strstr(x, "<name>nimbus-0b9a3c1e-5f4d-4c2b-9a8e-7d6c5b4a3f21</name>"));
    CHECK(strstr(x, "<uuid>0b9a3c1e-5f4d-4c2b-9a8e-7d6c5b4a3f21</uuid>"));
    CHECK(strstr(x, "<title>web&lt;1&gt;&amp;&apos;x&apos;</title>"));
    CHECK(strstr(x, "xmlns:nimbus='" DX_NS_URI "'"));
    CHECK(strstr(x, "<nimbus:generation>0</nimbus:generation>"));
    CHECK(strstr(x, "<kernel>/cache/base/k</kernel>"));
    CHECK(strstr(x, "<initrd>/cache/base/r</initrd>"));
    CHECK(strstr(x, "<cmdline>console=ttyS0 quiet</cmdline>"));
    CHECK(strstr(x, "<target dev='vda' bus='virtio'/>"));
    CHECK(strstr(x, "<driver name='qemu' type='qcow2'/>"));
    CHECK(strstr(x, "<mac address='fa:16:3e:00:00:01'/>"));
    /* The network agent made the tap: libvirt opens it, never makes it. */
    CHECK(strstr(x, "<target dev='tap0b9a3c1e-5f' managed='no'/>"));
    CHECK(strstr(x, "<model type='virtio'/>"));
    CHECK(strstr(x, "<mtu size='1450'/>"));
    /* A node without a network agent: libvirt makes the tap. */
    a.foreign_taps = false;
    char *y = dx_domain_xml(&a, "qemu", 0);
    CHECK(strstr(y, "<target dev='tap0b9a3c1e-5f'/>"));
    free(y);
    a.foreign_taps = true;
    CHECK(strstr(x, "<log file='/var/lib/nimbus/i/console.log' append='on'/>"));
    CHECK(strstr(x, "<graphics type='vnc' autoport='yes' listen='127.0.0.1'>"));
    CHECK(strstr(x, "<memory unit='MiB'>256</memory>"));
    CHECK(strstr(x, ">2</vcpu>"));
    CHECK(!strstr(x, "<boot dev='hd'/>"));
    CHECK(!strstr(x, "host-passthrough"));
    validate(x, "qemu direct boot");
    free(x);

    x = dx_domain_xml(&a, "kvm", 7);
    CHECK(strstr(x, "<domain type='kvm'>"));
    CHECK(strstr(x, "<cpu mode='host-passthrough'/>"));
    CHECK_INT(dx_metadata_generation(x), 7);
    validate(x, "kvm direct boot");
    free(x);
}

static void
test_whole_disk(void)
{
    struct inst_desired d = desired();
    snprintf(d.image.disk_format, sizeof d.image.disk_format, "qcow2");
    d.n_ports = 0;
    struct hv_create_args a = {
        .d = &d, .inst_dir = "/i", .disk_path = "/i/disk.qcow2", .disk_format = "qcow2",
        .console_log = "/i/console.log",
    };
    char *x = dx_domain_xml(&a, "qemu", 0);
    CHECK(strstr(x, "<boot dev='hd'/>"));
    CHECK(!strstr(x, "<kernel>"));
    CHECK(!strstr(x, "<interface"));
    validate(x, "whole disk");
    free(x);
}

static void
test_xen(void)
{
    struct inst_desired d = desired();
    struct hv_create_args a = {
        .d = &d, .inst_dir = "/i", .disk_path = "/i/disk.qcow2", .disk_format = "qcow2",
        .kernel_path = "/k", .ramdisk_path = "/r", .console_log = "/i/console.log",
    };
    char *x = dx_domain_xml(&a, "xen", 0);
    CHECK(strstr(x, "<domain type='xen'>"));
    CHECK(strstr(x, "machine='xenpv'>xen</type>"));
    CHECK(strstr(x, "<target dev='xvda' bus='xen'/>"));
    CHECK(strstr(x, "<model type='netfront'/>"));
    CHECK(strstr(x, "<target type='xen' port='0'/>"));
    CHECK(strstr(x, "<cmdline>root=/dev/xvda console=hvc0</cmdline>"));
    validate(x, "xen pv");
    free(x);
    a.kernel_path = a.ramdisk_path = NULL;
    x = dx_domain_xml(&a, "xen", 0);
    CHECK(strstr(x, "machine='xenfv'>hvm</type>"));
    CHECK(strstr(x, "<boot dev='hd'/>"));
    validate(x, "xen hvm");
    free(x);
}

static void
test_metadata(void)
{
    struct inst_desired d = desired();
    char *m = dx_metadata_xml(&d, 42);
    CHECK(strstr(m, "<nimbus:uuid>0b9a3c1e-5f4d-4c2b-9a8e-7d6c5b4a3f21</nimbus:uuid>"));
    CHECK_INT(dx_metadata_generation(m), 42);
    /* As libvirt may give it back, with its own prefix. */
    CHECK_INT(dx_metadata_generation("<instance xmlns='x'><generation>9</generation></instance>"), 9);
    CHECK_INT(dx_metadata_generation(NULL), 0);
    free(m);
}
/* Rescue mode (Nova's libvirt rescue): the rescue overlay is the first
 * disk (booted from, with the rescue image's kernel and command line),
 * the instance's own disk the second; on Xen too. */
static void
test_rescue(void)
{
    struct inst_desired d = desired();
    snprintf(d.image.os_command_line, sizeof d.image.os_command_line, "own-cmdline");
    d.rescue = true;
    snprintf(d.rescue_image.id, sizeof d.rescue_image.id, "img-rescue");
    snprintf(d.rescue_image.os_command_line, sizeof d.rescue_image.os_command_line,
             "console=ttyS0 rescue");
    struct hv_create_args a = {
        .d = &d, .inst_dir = "/i", .disk_path = "/i/disk.qcow2", .disk_format = "qcow2",
        .rescue_disk_path = "/i/rescue.qcow2", .kernel_path = "/cache/base/rk",
        .ramdisk_path = "/cache/base/rr", .console_log = "/i/console.log",
    };
    char *x = dx_domain_xml(&a, "qemu", 0);
    const char *r = strstr(x, "<source file='/i/rescue.qcow2'/>\n      <target dev='vda' bus='virtio'/>");
    const char *o = strstr(x, "<source file='/i/disk.qcow2'/>\n      <target dev='vdb' bus='virtio'/>");
    CHECK(r && o && r < o);
    CHECK(strstr(x, "<kernel>/cache/base/rk</kernel>"));
    CHECK(strstr(x, "<cmdline>console=ttyS0 rescue</cmdline>"));
    CHECK(!strstr(x, "own-cmdline"));
    validate(x, "qemu rescue");
    free(x);
    /* A rescue image that boots from its disk. */
    a.kernel_path = a.ramdisk_path = NULL;
    x = dx_domain_xml(&a, "xen", 0);
    r = strstr(x, "<source file='/i/rescue.qcow2'/>\n      <target dev='xvda' bus='xen'/>");
    o = strstr(x, "<source file='/i/disk.qcow2'/>\n      <target dev='xvdb' bus='xen'/>");
    CHECK(r && o && r < o);
    validate(x, "xen rescue");
    free(x);
    /* Not rescued: the own disk alone, first. */
    a.rescue_disk_path = NULL;
    x = dx_domain_xml(&a, "qemu", 0);
    CHECK(strstr(x, "<source file='/i/disk.qcow2'/>\n      <target dev='vda' bus='virtio'/>"));
    CHECK(!strstr(x, "rescue.qcow2") && !strstr(x, "vdb"));
    free(x);
}

int
main(void)
{
    have_validator = system("command -v virt-xml-validate >/dev/null 2>&1") == 0;
    if (!have_validator)
        fprintf(stderr, "virt-xml-validate not installed: schema checks skipped\n");
    test_qemu_direct();
    test_whole_disk();
    test_xen();
    test_metadata();
    test_rescue();
    return check_exit();
}
