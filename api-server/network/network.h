/* Network API module of nimbus-api (Neutron v2.0 compatible).  The entry
 * point, network_register(), is declared in api.h. */
#ifndef NIMBUS_NETWORK_H
#define NIMBUS_NETWORK_H

#include "api.h"

/* Defaults of the [network] options until api-server/options.c declares
 * them (vni_min, vni_max, underlay_mtu). */
#define NET_DEFAULT_VNI_MIN 1
#define NET_DEFAULT_VNI_MAX 16777215
#define NET_DEFAULT_UNDERLAY_MTU 1500

/* VXLAN costs 50 bytes of the underlay MTU. */
#define NET_VXLAN_OVERHEAD 50

struct net_conf {
    int vni_min, vni_max;          /* VNIs handed out to VXLAN networks. */
    int underlay_mtu;              /* MTU of the underlay interfaces. */
};

/* Fills 'c' with the built-in defaults. */
void net_conf_defaults(struct net_conf *c);

#endif
