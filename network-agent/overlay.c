/* Provider selection and device naming (see overlay.h). */
#include "overlay.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

int
overlay_open(const struct overlay_config *cfg, struct overlay **out)
{
    static const struct overlay_class *const classes[] = {
        &overlay_vxlan_class, &overlay_fake_class,
    };
    *out = NULL;
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++)
        if (cfg->type && !strcmp(cfg->type, classes[i]->name))
            return classes[i]->open(cfg, out);
    return -ENOENT;
}

void
overlay_close(struct overlay *ov)
{
    if (ov)
        ov->cls->close(ov);
}

int
overlay_dev_name(const char *prefix, const char *id, size_t digits, char out[16])
{
    size_t plen = strlen(prefix), n = 0;
    if (plen + digits > 15)
        return -EINVAL;
    memcpy(out, prefix, plen);
    for (const char *p = id; *p && n < digits; p++) {
        if (*p == '-')
            continue;
        if (!isxdigit((unsigned char)*p))
            return -EINVAL;
        out[plen + n++] = (char)tolower((unsigned char)*p);
    }
    if (n < digits)
        return -EINVAL;
    out[plen + n] = '\0';
    return 0;
}

static uint64_t
fnv(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    h ^= 0xff;                     /* Field separator. */
    return h * 1099511628211ull;
}

void
overlay_dhcp_digest(const struct overlay_net *net, char out[OVERLAY_DIGEST_LEN + 1])
{
    const struct overlay_dhcp *d = &net->dhcp;
    char num[32];
    if (!d->enabled) {
        out[0] = '\0';
        return;
    }
    uint64_t b = 14695981039346656037ull, h = 14695981039346656037ull;
    snprintf(num, sizeof num, "%d/%d", net->mtu, d->prefixlen);
    b = fnv(b, num);
    b = fnv(b, d->port_id);
    b = fnv(b, d->mac);
    b = fnv(b, d->ip);
    b = fnv(b, d->subnet);
    b = fnv(b, d->gateway);
    for (size_t i = 0; i < d->n_dns; i++)
        b = fnv(b, d->dns[i]);
    for (size_t i = 0; i < d->n_hosts; i++) {
        h = fnv(h, d->hosts[i].mac);
        h = fnv(h, d->hosts[i].ip);
    }
    snprintf(out, OVERLAY_DIGEST_LEN + 1, "%016llx:%016llx", (unsigned long long)b,
             (unsigned long long)h);
}
