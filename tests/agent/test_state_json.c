/* The desired-state document (docs/agent-channel.md) and the observed one. */
#include "state_json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"

static const char good[] =
    "{\"version\": 7, \"instances\": ["
    " {\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"name\": \"vm1\","
    "  \"flavor\": {\"vcpus\": 2, \"ram_mb\": 256, \"disk_gb\": 1},"
    "  \"image\": {\"id\": \"ami1\", \"disk_format\": \"ami\", \"container_format\": \"ami\","
    "             \"sha512\": \"ab\", \"properties\": {\"kernel_id\": \"aki1\", \"ramdisk_id\": \"ari1\","
    "             \"os_command_line\": \"console=ttyS0\"}},"
    "  \"kernel\": {\"id\": \"aki1\", \"disk_format\": \"aki\"},"
    "  \"ramdisk\": {\"id\": \"ari1\", \"disk_format\": \"ari\"},"
    "  \"ports\": [{\"id\": \"p1\", \"mac\": \"fa:16:3e:00:00:01\", \"tap\": \"tap1\"}],"
    "  \"power_state\": \"paused\", \"generation\": 4, \"reboot\": \"hard\"},"
    " {\"uuid\": \"22222222-2222-4222-8222-222222222222\", \"deleted\": true}"
    "]}";

static int
parse(const char *s, struct desired_set *ds, char *err)
{
    return sj_parse_desired(s, strlen(s), ds, err, 256);
}

static void
test_good(void)
{
    struct desired_set ds;
    char err[256] = "";
    CHECK_INT(parse(good, &ds, err), 0);
    CHECK_INT(ds.version, 7);
    CHECK_INT(ds.n, 2);
    const struct inst_desired *d = desired_set_find(&ds, "11111111-1111-4111-8111-111111111111");
    CHECK(d != NULL);
    if (d) {
        CHECK_STR(d->name, "vm1");
        CHECK_INT(d->vcpus, 2);
        CHECK_INT(d->ram_mb, 256);
        CHECK_INT(d->disk_gb, 1);
        CHECK_STR(d->image.kernel_id, "aki1");
        CHECK_STR(d->image.ramdisk_id, "ari1");
        CHECK_STR(d->image.os_command_line, "console=ttyS0");
        CHECK_STR(d->kernel.id, "aki1");
        CHECK_STR(d->ramdisk.disk_format, "ari");
        CHECK_INT(d->n_ports, 1);
        CHECK_STR(d->ports[0].tap, "tap1");
        CHECK_INT(d->power, POWER_PAUSED);
        CHECK_INT(d->generation, 4);
        CHECK_STR(d->reboot, "hard");
        CHECK(!d->deleted);
    }
    CHECK(ds.insts[1].deleted);
    CHECK(desired_set_find(&ds, "33333333-3333-4333-8333-333333333333") == NULL);
    desired_set_free(&ds);
}

/* The ports as nimbus-api writes them once servers have Neutron ports
 * (the contract between the API and the agents). */
static void
test_ports(void)
{
    static const char doc[] =
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\","
        " \"image\": {\"id\": \"i\", \"container_format\": \"docker\"},"
        " \"ports\": [{\"id\": \"0b9a3c1e-5f4d-4c2b-9a8e-7d6c5b4a3f21\", \"mac\": \"fa:16:3e:0a:0b:0c\","
        "   \"tap\": \"tap0b9a3c1e5f4\", \"kind\": \"veth\","
        "   \"network_id\": \"9d1c8a22-1111-4111-8111-111111111111\", \"mtu\": 1450,"
        "   \"fixed_ips\": [{\"ip_address\": \"10.0.0.5\", \"prefixlen\": 24, \"gateway\": \"10.0.0.1\"},"
        "                   {\"ip_address\": \"fd00::5\", \"prefixlen\": 64, \"gateway\": null}]},"
        "  {\"id\": \"7e6d5c4b-3a29-4c2b-9a8e-7d6c5b4a3f21\", \"mac\": \"FA:16:3E:00:00:02\"}]}]}";
    struct desired_set ds;
    char err[256] = "";
    CHECK_INT(parse(doc, &ds, err), 0);
    if (ds.n == 1) {
        const struct inst_port *p = &ds.insts[0].ports[0];
        CHECK_INT(ds.insts[0].n_ports, 2);
        CHECK_STR(p->tap, "tap0b9a3c1e5f4");
        CHECK_INT(p->kind, INST_PORT_VETH);
        CHECK_STR(p->network_id, "9d1c8a22-1111-4111-8111-111111111111");
        CHECK_INT(p->mtu, 1450);
        CHECK_INT(p->n_fixed_ips, 2);
        CHECK_STR(p->fixed_ips[0].ip, "10.0.0.5");
        CHECK_INT(p->fixed_ips[0].prefixlen, 24);
        CHECK_STR(p->fixed_ips[0].gateway, "10.0.0.1");
        CHECK_STR(p->fixed_ips[1].ip, "fd00::5");
        CHECK_STR(p->fixed_ips[1].gateway, "");
        char peer[16];
        inst_port_peer(p, peer);
        CHECK_STR(peer, "tpp0b9a3c1e5f4");
        /* No tap given: the network agent's name rule, and a tap by default. */
        CHECK_STR(ds.insts[0].ports[1].tap, "tap7e6d5c4b3a2");
        CHECK_INT(ds.insts[0].ports[1].kind, INST_PORT_TAP);
        CHECK_INT(ds.insts[0].ports[1].mtu, 0);
    }
    desired_set_free(&ds);

    static const char *const bad[] = {
        "{\"mac\": \"fa:16:3e:0a:0b\"}",
        "{\"mac\": \"fa:16:3e:0a:0b:0c\", \"kind\": \"macvtap\"}",
        "{\"mac\": \"fa:16:3e:0a:0b:0c\", \"tap\": \"tap/../x\"}",
        "{\"mac\": \"fa:16:3e:0a:0b:0c\", \"tap\": \"averyveryverylongname\"}",
        "{\"mac\": \"fa:16:3e:0a:0b:0c\", \"mtu\": 20}",
        "{\"mac\": \"fa:16:3e:0a:0b:0c\", \"mtu\": 70000}",
        "{\"mac\": \"fa:16:3e:0a:0b:0c\", \"kind\": \"veth\", \"tap\": \"eth1\"}",
        "{\"mac\": \"fa:16:3e:0a:0b:0c\", \"fixed_ips\": {}}",
        "{\"mac\": \"fa:16:3e:0a:0b:0c\", \"fixed_ips\": [{\"ip_address\": \"10.0.0.5\"}]}",
        "{\"mac\": \"fa:16:3e:0a:0b:0c\", \"fixed_ips\": [{\"ip_address\": \"10.0.0.500\", \"prefixlen\": 24}]}",
        "{\"mac\": \"fa:16:3e:0a:0b:0c\", \"fixed_ips\": [{\"ip_address\": \"10.0.0.5\", \"prefixlen\": 33}]}",
        "{\"mac\": \"fa:16:3e:0a:0b:0c\", \"fixed_ips\": [{\"ip_address\": \"10.0.0.5\", \"prefixlen\": 24,"
        " \"gateway\": \"fd00::1\"}]}",
        "{\"mac\": \"fa:16:3e:0a:0b:0c\", \"fixed_ips\": [{\"ip_address\": \"10.0.0.5; rm\", \"prefixlen\": 24}]}",
        "{\"mac\": \"fa:16:3e:0a:0b:0c\", \"fixed_ips\": [{\"ip_address\": \"10.0.0.1\", \"prefixlen\": 1},"
        "{\"ip_address\": \"10.0.0.2\", \"prefixlen\": 1},{\"ip_address\": \"10.0.0.3\", \"prefixlen\": 1},"
        "{\"ip_address\": \"10.0.0.4\", \"prefixlen\": 1},{\"ip_address\": \"10.0.0.5\", \"prefixlen\": 1}]}",
        "[]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text, "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\","
                 " \"image\": {\"id\": \"i\"}, \"ports\": [%s]}]}", bad[i]);
        err[0] = 0;
        int r = parse(text, &ds, err);
        if (r >= 0)
            fprintf(stderr, "accepted bad port %zu: %s\n", i, bad[i]);
        CHECK(r < 0);
        CHECK(err[0] != 0);
    }
}

/* The two ends of a move (docs/agent-channel.md). */
static void
test_moves(void)
{
    static const char doc[] =
        "{\"version\": 3, \"instances\": ["
        " {\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"},"
        "  \"generation\": 2, \"action\": \"migrate_in\", \"migration\": {\"id\": \"m\","
        "  \"source_url\": \"http://10.0.0.2:6080/migration/11111111-1111-4111-8111-111111111111/disk\","
        "  \"secret\": \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}},"
        " {\"uuid\": \"22222222-2222-4222-8222-222222222222\", \"image\": {\"id\": \"i\"},"
        "  \"power_state\": \"shutoff\", \"action\": \"migrate_out\","
        "  \"migration\": {\"secret_sha256\": \"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\"}}]}";
    struct desired_set ds;
    char err[256] = "";
    CHECK_INT(parse(doc, &ds, err), 0);
    if (ds.n == 2) {
        CHECK_STR(ds.insts[0].action, "migrate_in");
        CHECK_STR(ds.insts[0].migration_url,
                  "http://10.0.0.2:6080/migration/11111111-1111-4111-8111-111111111111/disk");
        CHECK_STR(ds.insts[0].migration_secret, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        CHECK_STR(ds.insts[1].action, "migrate_out");
        CHECK_STR(ds.insts[1].migration_secret, "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
        CHECK(!ds.insts[1].migration_url[0]);
    }
    desired_set_free(&ds);

    /* The two ends of a live migration. */
    static const char live[] =
        "{\"version\": 4, \"instances\": ["
        " {\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"},"
        "  \"generation\": 2, \"action\": \"live_in\"},"
        " {\"uuid\": \"22222222-2222-4222-8222-222222222222\", \"image\": {\"id\": \"i\"},"
        "  \"generation\": 3, \"action\": \"live_out\", \"migration\": {\"id\": \"m\","
        "  \"dest_uri\": \"qemu+tcp://b.example/system\", \"dest_xml\": \"<domain/>\","
        "  \"dest_dir\": \"/var/lib/nimbus/instances/22222222-2222-4222-8222-222222222222\"}}]}";
    CHECK_INT(parse(live, &ds, err), 0);
    if (ds.n == 2) {
        CHECK_STR(ds.insts[0].action, "live_in");
        CHECK(ds.insts[0].migration_xml == NULL);
        CHECK_STR(ds.insts[1].action, "live_out");
        CHECK_STR(ds.insts[1].migration_url, "qemu+tcp://b.example/system");
        CHECK_STR(ds.insts[1].migration_xml ? ds.insts[1].migration_xml : "", "<domain/>");
        CHECK_STR(ds.insts[1].migration_dir,
                  "/var/lib/nimbus/instances/22222222-2222-4222-8222-222222222222");
    }
    desired_set_free(&ds);
}

static void
test_bad(void)
{
    static const char *const bad[] = {
        "",
        "[]",
        "{\"instances\": {}}",
        "{\"instances\": [{\"name\": \"no uuid\"}]}",
        "{\"instances\": [{\"uuid\": \"not-a-uuid\", \"image\": {\"id\": \"i\"}}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\"}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"../etc\"}}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"}, \"power_state\": \"crashed\"}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"}, \"reboot\": \"sideways\"}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"}, \"vcpus\": -1}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\", \"kernel_id\": \"k\"}}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"}},"
        "                {\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"}}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"},"
        " \"ports\": [{\"mac\":\"a\"},{\"mac\":\"a\"},{\"mac\":\"a\"},{\"mac\":\"a\"},{\"mac\":\"a\"},"
        "{\"mac\":\"a\"},{\"mac\":\"a\"},{\"mac\":\"a\"},{\"mac\":\"a\"}]}]}",
        /* Moves: the destination needs an http source URL and a 64-hex
         * secret, the source the secret's SHA-256. */
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"},"
        " \"action\": \"migrate_in\"}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"},"
        " \"action\": \"migrate_in\", \"migration\": {\"source_url\": \"file:///etc/passwd\","
        " \"secret\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"},"
        " \"action\": \"migrate_in\", \"migration\": {\"source_url\": \"http://h:1/m\","
        " \"secret\": \"short\"}}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"},"
        " \"action\": \"migrate_out\", \"migration\": {\"secret\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"},"
        " \"action\": \"teleport\"}]}",
        /* A live migration's source needs the destination's URI, an
         * absolute directory and a definition; the second instance's
         * definition is freed when the first fails. */
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"},"
        " \"action\": \"live_out\", \"migration\": {\"dest_uri\": \"qemu:///system\","
        " \"dest_dir\": \"/d\"}}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"},"
        " \"action\": \"live_out\", \"migration\": {\"dest_uri\": \"qemu:///system\","
        " \"dest_dir\": \"relative\", \"dest_xml\": \"<domain/>\"}}]}",
        "{\"instances\": [{\"uuid\": \"11111111-1111-4111-8111-111111111111\", \"image\": {\"id\": \"i\"},"
        " \"action\": \"live_out\", \"migration\": {\"dest_dir\": \"/d\", \"dest_xml\": \"<domain/>\"}}]}",
        "{\"instances\": [{\"uuid\": \"22222222-2222-4222-8222-222222222222\", \"image\": {\"id\": \"i\"},"
        " \"action\": \"live_out\", \"migration\": {\"dest_uri\": \"qemu:///system\","
        " \"dest_dir\": \"/d\", \"dest_xml\": \"<domain/>\"}},"
        " {\"uuid\": \"22222222-2222-4222-8222-222222222222\", \"image\": {\"id\": \"i\"}}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct desired_set ds;
        char err[256] = "";
        int r = parse(bad[i], &ds, err);
        if (r >= 0)
            fprintf(stderr, "accepted bad document %zu: %s\n", i, bad[i]);
        CHECK(r < 0);
        CHECK(err[0] != 0);
        CHECK(ds.insts == NULL);
    }
}

static void
test_observed(void)
{
    struct rc_observed o[2] = {
        { .uuid = "11111111-1111-4111-8111-111111111111", .state = RC_ACTIVE,
          .power = POWER_RUNNING, .generation = 3 },
        { .uuid = "22222222-2222-4222-8222-222222222222", .state = RC_ERROR,
          .power = POWER_NOSTATE, .fault = "create: \"boom\"" },
    };
    char *s = sj_observed("node1", o, 2, 9);
    CHECK(strstr(s, "\"node\":\"node1\""));
    CHECK(strstr(s, "\"desired_version\":9"));
    CHECK(strstr(s, "\"vm_state\":\"active\""));
    CHECK(strstr(s, "\"power_state\":\"running\""));
    CHECK(strstr(s, "\"vm_state\":\"error\""));
    CHECK(strstr(s, "\"fault\":\"create: \\\"boom\\\"\""));
    free(s);
    s = sj_event("node1", o[0].uuid, "created", "", "2026-11-25T00:00:00Z");
    CHECK(strstr(s, "\"event\":\"created\""));
    free(s);
}

int
main(void)
{
    test_moves();
    test_good();
    test_ports();
    test_bad();
    test_observed();
    return check_exit();
}
