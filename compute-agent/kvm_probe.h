/* Detects whether KVM can really run guests on this host. */
#ifndef NIMBUS_AGENT_KVM_PROBE_H
#define NIMBUS_AGENT_KVM_PROBE_H

#include <stdbool.h>
#include <stddef.h>

/* Runs a one-instruction guest on 'dev' (NULL: /dev/kvm).  True when it
 * halts as it should; 'why' says what happened either way. */
bool kvm_probe(const char *dev, char *why, size_t whylen);

#endif
