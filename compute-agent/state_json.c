#include "state_json.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

void
desired_set_free(struct desired_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->insts[i].migration_xml);
    free(s->insts);
    s->insts = NULL;
    s->n = 0;
}

const struct inst_desired *
desired_set_find(const struct desired_set *s, const char *uuid)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->insts[i].uuid, uuid))
            return &s->insts[i];
    return NULL;
}

/* Copies an optional string member; fails when it is too long or not a
 * string. */
static int
get_str(json_t *o, const char *key, char *dst, size_t cap, bool required,
        const char *what, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        dst[0] = 0;
        if (required) {
            snprintf(err, errlen, "%s: missing '%s'", what, key);
            return -EINVAL;
        }
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) >= cap) {
        snprintf(err, errlen, "%s: '%s' must be a string shorter than %zu bytes", what, key, cap);
        return -EINVAL;
    }
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int
get_uint(json_t *o, const char *key, uint64_t max, uint64_t *dst, const char *what,
         char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *dst = 0;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) > max) {
        snprintf(err, errlen, "%s: '%s' must be an integer from 0 to %llu", what, key,
                 (unsigned long long)max);
        return -EINVAL;
    }
    *dst = (uint64_t)json_integer_value(v);
    return 0;
}

static bool
token_ok(const char *s)
{
    for (; *s; s++)
        if (!(('a' <= *s && *s <= 'z') || ('A' <= *s && *s <= 'Z') ||
              ('0' <= *s && *s <= '9') || *s == '-' || *s == '_' || *s == '.' || *s == ':'))
            return false;
    return true;
}

static int
parse_image(json_t *o, struct inst_image *img, const char *what, char *err, size_t errlen)
{
    int r;
    memset(img, 0, sizeof *img);
    if (!json_is_object(o)) {
        snprintf(err, errlen, "%s: must be an object", what);
        return -EINVAL;
    }
    json_t *props = json_object_get(o, "properties");
    if ((r = get_str(o, "id", img->id, sizeof img->id, true, what, err, errlen)) ||
        (r = get_str(o, "disk_format", img->disk_format, sizeof img->disk_format, false, what, err, errlen)) ||
        (r = get_str(o, "container_format", img->container_format, sizeof img->container_format, false, what, err, errlen)) ||
        (r = get_str(o, "sha512", img->sha512, sizeof img->sha512, false, what, err, errlen)))
        return r;
    if (!img->sha512[0] && (r = get_str(o, "os_hash_value", img->sha512, sizeof img->sha512,
                                        false, what, err, errlen)))
        return r;
    uint64_t size;
    if ((r = get_uint(o, "size", UINT64_MAX >> 1, &size, what, err, errlen)))
        return r;
    img->size = size;
    json_t *src = json_is_object(props) ? props : o;
    if ((r = get_str(src, "kernel_id", img->kernel_id, sizeof img->kernel_id, false, what, err, errlen)) ||
        (r = get_str(src, "ramdisk_id", img->ramdisk_id, sizeof img->ramdisk_id, false, what, err, errlen)) ||
        (r = get_str(src, "os_command_line", img->os_command_line, sizeof img->os_command_line,
                     false, what, err, errlen)))
        return r;
    if (!token_ok(img->id) || !token_ok(img->disk_format) || !token_ok(img->container_format) ||
        !token_ok(img->kernel_id) || !token_ok(img->ramdisk_id)) {
        snprintf(err, errlen, "%s: ids and formats may only use [A-Za-z0-9._:-]", what);
        return -EINVAL;
    }
    return 0;
}

static bool
mac_ok(const char *m)
{
    if (strlen(m) != 17)
        return false;
    for (int i = 0; i < 17; i++)
        if (i % 3 == 2 ? m[i] != ':' : !isxdigit((unsigned char)m[i]))
            return false;
    return true;
}

/* An address in text form: IPv4 or IPv6; *v6 tells which. */
static bool
ip_ok(const char *s, bool *v6)
{
    unsigned char buf[16];
    if (inet_pton(AF_INET, s, buf) == 1) {
        *v6 = false;
        return true;
    }
    if (inet_pton(AF_INET6, s, buf) == 1) {
        *v6 = true;
        return true;
    }
    return false;
}

static int
parse_port(json_t *p, struct inst_port *ip, const char *what, char *err, size_t errlen)
{
    int r;
    uint64_t v;
    char kind[8];
    memset(ip, 0, sizeof *ip);
    if (!json_is_object(p)) {
        snprintf(err, errlen, "%s: must be an object", what);
        return -EINVAL;
    }
    if ((r = get_str(p, "id", ip->id, sizeof ip->id, false, what, err, errlen)) ||
        (r = get_str(p, "mac", ip->mac, sizeof ip->mac, true, what, err, errlen)) ||
        (r = get_str(p, "tap", ip->tap, sizeof ip->tap, false, what, err, errlen)) ||
        (r = get_str(p, "kind", kind, sizeof kind, false, what, err, errlen)) ||
        (r = get_str(p, "network_id", ip->network_id, sizeof ip->network_id, false, what,
                     err, errlen)) ||
        (r = get_uint(p, "mtu", 65535, &v, what, err, errlen)))
        return r;
    ip->mtu = (unsigned)v;
    if (ip->mtu && ip->mtu < 68) {
        snprintf(err, errlen, "%s: 'mtu' must be from 68 to 65535", what);
        return -EINVAL;
    }
    if (!mac_ok(ip->mac) || !token_ok(ip->id) || !token_ok(ip->tap) ||
        !token_ok(ip->network_id)) {
        snprintf(err, errlen, "%s: bad port mac, id, tap or network_id", what);
        return -EINVAL;
    }
    if (!kind[0] || !strcmp(kind, "tap"))
        ip->kind = INST_PORT_TAP;
    else if (!strcmp(kind, "veth"))
        ip->kind = INST_PORT_VETH;
    else {
        snprintf(err, errlen, "%s: 'kind' must be \"tap\" or \"veth\"", what);
        return -EINVAL;
    }
    /* The network agent's name rule: "tap" + the first 11 hex digits of
     * the port id. */
    if (!ip->tap[0] && ip->id[0]) {
        char hex[12];
        size_t n = 0;
        for (const char *c = ip->id; *c && n < 11; c++)
            if (*c != '-')
                hex[n++] = *c;
        hex[n] = 0;
        snprintf(ip->tap, sizeof ip->tap, "tap%s", hex);
    }
    if (ip->kind == INST_PORT_VETH && strncmp(ip->tap, "tap", 3)) {
        snprintf(err, errlen, "%s: a veth port's 'tap' must start with \"tap\"", what);
        return -EINVAL;
    }
    json_t *fips = json_object_get(p, "fixed_ips");
    if (fips && !json_is_null(fips) && !json_is_array(fips)) {
        snprintf(err, errlen, "%s: 'fixed_ips' must be an array", what);
        return -EINVAL;
    }
    if (json_array_size(fips) > INST_MAX_FIXED_IPS) {
        snprintf(err, errlen, "%s: at most %d fixed_ips", what, INST_MAX_FIXED_IPS);
        return -E2BIG;
    }
    size_t i;
    json_t *f;
    json_array_foreach(fips, i, f) {
        struct inst_fixed_ip *fi = &ip->fixed_ips[ip->n_fixed_ips++];
        bool v6 = false, gv6 = false;
        if (!json_is_object(f)) {
            snprintf(err, errlen, "%s: fixed_ips must be objects", what);
            return -EINVAL;
        }
        if ((r = get_str(f, "ip_address", fi->ip, sizeof fi->ip, true, what, err, errlen)) ||
            (r = get_str(f, "gateway", fi->gateway, sizeof fi->gateway, false, what, err,
                         errlen)) ||
            (r = get_uint(f, "prefixlen", 128, &v, what, err, errlen)))
            return r;
        fi->prefixlen = (unsigned)v;
        if (!ip_ok(fi->ip, &v6) || (fi->gateway[0] && (!ip_ok(fi->gateway, &gv6) || gv6 != v6)) ||
            fi->prefixlen > (v6 ? 128u : 32u) || !json_object_get(f, "prefixlen")) {
            snprintf(err, errlen, "%s: fixed_ips[%zu] needs an ip_address, a prefixlen and "
                     "an optional gateway of the same family", what, i);
            return -EINVAL;
        }
    }
    return 0;
}

/* {"rescue": {"image": {...}, "kernel": {...}, "ramdisk": {...}}}: the
 * instance is (being) rescued with that image.  Absent or null: it is
 * not. */
static int
parse_rescue(json_t *o, struct inst_desired *d, const char *what, char *err, size_t errlen)
{
    json_t *rs = json_object_get(o, "rescue");
    char sub[128];
    int r;
    if (!rs || json_is_null(rs))
        return 0;
    if (!json_is_object(rs)) {
        snprintf(err, errlen, "%s: 'rescue' must be an object", what);
        return -EINVAL;
    }
    snprintf(sub, sizeof sub, "%s rescue image", d->uuid);
    if ((r = parse_image(json_object_get(rs, "image"), &d->rescue_image, sub, err, errlen)))
        return r;
    json_t *k = json_object_get(rs, "kernel"), *rd = json_object_get(rs, "ramdisk");
    if (k && !json_is_null(k)) {
        snprintf(sub, sizeof sub, "%s rescue kernel", d->uuid);
        if ((r = parse_image(k, &d->rescue_kernel, sub, err, errlen)))
            return r;
    } else if (d->rescue_image.kernel_id[0]) {
        snprintf(err, errlen, "%s: rescue image has kernel_id %s but no 'kernel' object", what,
                 d->rescue_image.kernel_id);
        return -EINVAL;
    }
    if (rd && !json_is_null(rd)) {
        snprintf(sub, sizeof sub, "%s rescue ramdisk", d->uuid);
        if ((r = parse_image(rd, &d->rescue_ramdisk, sub, err, errlen)))
            return r;
    }
    d->rescue = true;
    return 0;
}

static int
parse_instance(json_t *o, struct inst_desired *d, size_t idx, char *err, size_t errlen)
{
    char what[96];
    int r;
    uint64_t v;
    snprintf(what, sizeof what, "instances[%zu]", idx);
    if (!json_is_object(o)) {
        snprintf(err, errlen, "%s: must be an object", what);
        return -EINVAL;
    }
    if ((r = get_str(o, "uuid", d->uuid, sizeof d->uuid, true, what, err, errlen)))
        return r;
    if (strlen(d->uuid) != 36 || !token_ok(d->uuid)) {
        snprintf(err, errlen, "%s: 'uuid' must be a canonical UUID", what);
        return -EINVAL;
    }
    snprintf(what, sizeof what, "instance %s", d->uuid);
    if ((r = get_str(o, "name", d->name, sizeof d->name, false, what, err, errlen)))
        return r;
    json_t *fl = json_object_get(o, "flavor");
    json_t *fsrc = json_is_object(fl) ? fl : o;
    if ((r = get_uint(fsrc, "vcpus", 1024, &v, what, err, errlen)))
        return r;
    d->vcpus = v ? (unsigned)v : 1;
    if ((r = get_uint(fsrc, "ram_mb", 1u << 24, &v, what, err, errlen)))
        return r;
    d->ram_mb = v ? (unsigned)v : 128;
    if ((r = get_uint(fsrc, "disk_gb", 1u << 20, &v, what, err, errlen)))
        return r;
    d->disk_gb = (unsigned)v;
    json_t *deleted = json_object_get(o, "deleted");
    d->deleted = json_is_true(deleted);
    if (d->deleted && !json_object_get(o, "image"))
        return 0;
    char sub[128];
    snprintf(sub, sizeof sub, "%s image", d->uuid);
    if ((r = parse_image(json_object_get(o, "image"), &d->image, sub, err, errlen)))
        return r;
    json_t *k = json_object_get(o, "kernel"), *rd = json_object_get(o, "ramdisk");
    if (k && !json_is_null(k)) {
        snprintf(sub, sizeof sub, "%s kernel", d->uuid);
        if ((r = parse_image(k, &d->kernel, sub, err, errlen)))
            return r;
    } else if (d->image.kernel_id[0]) {
        snprintf(err, errlen, "%s: image has kernel_id %s but no 'kernel' object", what, d->image.kernel_id);
        return -EINVAL;
    }
    if (rd && !json_is_null(rd)) {
        snprintf(sub, sizeof sub, "%s ramdisk", d->uuid);
        if ((r = parse_image(rd, &d->ramdisk, sub, err, errlen)))
            return r;
    }
    json_t *ports = json_object_get(o, "ports");
    if (ports && !json_is_array(ports)) {
        snprintf(err, errlen, "%s: 'ports' must be an array", what);
        return -EINVAL;
    }
    if (json_array_size(ports) > INST_MAX_PORTS) {
        snprintf(err, errlen, "%s: at most %d ports", what, INST_MAX_PORTS);
        return -E2BIG;
    }
    size_t i;
    json_t *p;
    json_array_foreach(ports, i, p) {
        char pwhat[160];
        snprintf(pwhat, sizeof pwhat, "%s ports[%zu]", what, i);
        if ((r = parse_port(p, &d->ports[d->n_ports++], pwhat, err, errlen)))
            return r;
    }
    char power[16];
    if ((r = get_str(o, "power_state", power, sizeof power, false, what, err, errlen)))
        return r;
    d->power = POWER_RUNNING;
    if (power[0] && (power_state_parse(power, &d->power) < 0 ||
                     (d->power != POWER_RUNNING && d->power != POWER_SHUTOFF &&
                      d->power != POWER_PAUSED && d->power != POWER_SUSPENDED))) {
        snprintf(err, errlen, "%s: power_state must be running, shutoff, paused or suspended", what);
        return -EINVAL;
    }
    if ((r = get_uint(o, "generation", UINT64_MAX >> 1, &d->generation, what, err, errlen)))
        return r;
    if (!d->generation)
        d->generation = 1;   /* 0 means "created, nothing applied yet" in metadata. */
    if ((r = get_str(o, "reboot", d->reboot, sizeof d->reboot, false, what, err, errlen)))
        return r;
    if (d->reboot[0] && strcmp(d->reboot, "soft") && strcmp(d->reboot, "hard")) {
        snprintf(err, errlen, "%s: reboot must be \"soft\" or \"hard\"", what);
        return -EINVAL;
    }
    /* The action of this generation (resize, snapshot, rebuild), when any. */
    if ((r = get_str(o, "action", d->action, sizeof d->action, false, what, err, errlen)))
        return r;
    static const char *const actions[] = {
        "", "resize", "snapshot", "rebuild", "rescue", "unrescue", "migrate_in", "migrate_out",
        "live_in", "live_out",
    };
    bool known = false;
    for (size_t ai = 0; ai < sizeof actions / sizeof *actions && !known; ai++)
        known = !strcmp(d->action, actions[ai]);
    if (!known) {
        snprintf(err, errlen, "%s: action must be \"\", \"resize\", \"snapshot\", "
                 "\"rebuild\", \"rescue\", \"unrescue\", \"migrate_in\", \"migrate_out\", "
                 "\"live_in\" or \"live_out\"",
                 what);
        return -EINVAL;
    }
    if ((r = parse_rescue(o, d, what, err, errlen)))
        return r;
    /* A move: where the overlay comes from and the one-time secret
     * (destination), or the SHA-256 of that secret (source). */
    json_t *mig = json_object_get(o, "migration");
    bool in = !strcmp(d->action, "migrate_in"), out = !strcmp(d->action, "migrate_out");
    if (in || out) {
        if (!json_is_object(mig) ||
            (in && get_str(mig, "source_url", d->migration_url, sizeof d->migration_url, true,
                           what, err, errlen)) ||
            get_str(mig, in ? "secret" : "secret_sha256", d->migration_secret,
                    sizeof d->migration_secret, true, what, err, errlen) ||
            strlen(d->migration_secret) != 64 ||
            strspn(d->migration_secret, "0123456789abcdef") != 64 ||
            (in && strncmp(d->migration_url, "http://", 7) &&
             strncmp(d->migration_url, "https://", 8))) {
            snprintf(err, errlen, "%s: a move needs migration.%s", what,
                     in ? "source_url (http) and secret (64 hex digits)"
                        : "secret_sha256 (64 hex digits)");
            return -EINVAL;
        }
    }
    json_t *snap = json_object_get(o, "snapshot");
    if (!strcmp(d->action, "snapshot") &&
        (!json_is_object(snap) ||
         (r = get_str(snap, "image_id", d->snapshot_image, sizeof d->snapshot_image, true,
                      what, err, errlen)) ||
         strspn(d->snapshot_image, "0123456789abcdef-") != strlen(d->snapshot_image))) {
        snprintf(err, errlen, "%s: a snapshot needs snapshot.image_id (a uuid)", what);
        return -EINVAL;
    }
    /* A live migration's source: where to (the destination's libvirt URI,
     * its definition of the guest and its instance directory).  Last, so
     * that nothing fails once the definition is copied. */
    if (!strcmp(d->action, "live_out")) {
        json_t *xml = json_is_object(mig) ? json_object_get(mig, "dest_xml") : NULL;
        if (!json_is_object(mig) ||
            get_str(mig, "dest_uri", d->migration_url, sizeof d->migration_url, true,
                    what, err, errlen) ||
            get_str(mig, "dest_dir", d->migration_dir, sizeof d->migration_dir, true,
                    what, err, errlen) ||
            d->migration_dir[0] != '/' || !json_is_string(xml) ||
            json_string_length(xml) == 0 || json_string_length(xml) > SJ_MAX_MIGRATION_XML ||
            strlen(json_string_value(xml)) != json_string_length(xml)) {
            snprintf(err, errlen, "%s: a live migration needs migration.dest_uri, dest_dir "
                     "(absolute) and dest_xml (at most %u bytes)", what, SJ_MAX_MIGRATION_XML);
            return -EINVAL;
        }
        if (!(d->migration_xml = strdup(json_string_value(xml))))
            return -ENOMEM;
    }
    return 0;
}

int
sj_parse_desired(const char *text, size_t len, struct desired_set *out,
                 char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len > SJ_MAX_DOC_BYTES) {
        snprintf(err, errlen, "desired state larger than %u bytes", SJ_MAX_DOC_BYTES);
        return -E2BIG;
    }
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "desired state: line %d: %s", je.line, je.text);
        return -EINVAL;
    }
    int r = 0;
    json_t *insts = json_object_get(root, "instances");
    if (!json_is_object(root) || !json_is_array(insts)) {
        snprintf(err, errlen, "desired state: expected {\"instances\": [...]}");
        r = -EINVAL;
        goto out;
    }
    size_t n = json_array_size(insts);
    if (n > SJ_MAX_INSTANCES) {
        snprintf(err, errlen, "desired state: more than %d instances", SJ_MAX_INSTANCES);
        r = -E2BIG;
        goto out;
    }
    uint64_t ver;
    if ((r = get_uint(root, "version", UINT64_MAX >> 1, &ver, "desired state", err, errlen)))
        goto out;
    out->version = ver;
    out->insts = calloc(n ? n : 1, sizeof *out->insts);
    if (!out->insts) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if ((r = parse_instance(json_array_get(insts, i), &out->insts[i], i, err, errlen)))
            goto out;
        struct desired_set before = { .insts = out->insts, .n = i };
        if (desired_set_find(&before, out->insts[i].uuid)) {
            snprintf(err, errlen, "desired state: instance %s listed twice", out->insts[i].uuid);
            free(out->insts[i].migration_xml);
            r = -EINVAL;
            goto out;
        }
        out->n = i + 1;
    }
out:
    json_decref(root);
    if (r)
        desired_set_free(out);
    return r;
}

const char *
sj_vm_state(enum rc_state s)
{
    switch (s) {
    case RC_NEW:
    case RC_BUILDING: return "building";
    case RC_ACTIVE: return "active";
    case RC_STOPPED: return "stopped";
    case RC_PAUSED: return "paused";
    case RC_SUSPENDED: return "suspended";
    case RC_ERROR: return "error";
    case RC_ORPHANED: return "orphaned";
    case RC_DELETING: return "deleting";
    case RC_DELETED: return "deleted";
    case RC_N_STATES:
    default:
        return "error";
    }
}

char *
sj_observed(const char *node, const struct rc_observed *obs, size_t n,
            uint64_t desired_version)
{
    json_t *root = json_object();
    json_t *arr = json_array();
    json_object_set_new(root, "node", json_string(node));
    json_object_set_new(root, "desired_version", json_integer((json_int_t)desired_version));
    for (size_t i = 0; i < n; i++) {
        const struct rc_observed *o = &obs[i];
        json_t *j = json_object();
        json_object_set_new(j, "uuid", json_string(o->uuid));
        json_object_set_new(j, "vm_state", json_string(sj_vm_state(o->state)));
        json_object_set_new(j, "agent_state", json_string(rc_state_name(o->state)));
        json_object_set_new(j, "power_state", json_string(power_state_name(o->power)));
        json_object_set_new(j, "generation", json_integer((json_int_t)o->generation));
        json_object_set_new(j, "fault", o->fault[0] ? json_string(o->fault) : json_null());
        if (o->live_xml)
            json_object_set_new(j, "live_migration", json_pack("{s:s, s:s}", "xml", o->live_xml,
                                                               "inst_dir", o->live_dir));
        json_array_append_new(arr, j);
    }
    json_object_set_new(root, "instances", arr);
    char *s = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    return s;
}

char *
sj_event(const char *node, const char *uuid, const char *event, const char *detail,
         const char *timestamp)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "node", node, "uuid", uuid,
                          "event", event, "detail", detail ? detail : "",
                          "time", timestamp);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return s;
}
