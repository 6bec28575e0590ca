/* Libvirt domain XML for a Nimbus instance, built from the flavor, the
 * image properties and the ports.  Plain text generation with no libvirt
 * headers, so it is unit-tested (and checked with virt-xml-validate) on
 * machines without libvirt, Xen included. */
#ifndef NIMBUS_AGENT_DOMAIN_XML_H
#define NIMBUS_AGENT_DOMAIN_XML_H

#include <stdbool.h>
#include <stdint.h>

#include "hypervisor.h"

/* The namespace of the metadata element that marks a domain as Nimbus's. */
#define DX_NS_URI "https://nimbus.dev/xmlns/compute/1.0"
#define DX_NS_PREFIX "nimbus"

/* Domain name of an instance: "nimbus-<uuid>". */
#define DX_NAME_PREFIX "nimbus-"

/* Builds the domain XML for 'a' with domain type 'virt_type' ("kvm",
 * "qemu" or "xen").  Returns a malloc'd string the caller frees. */
char *dx_domain_xml(const struct hv_create_args *a, const char *virt_type,
                    uint64_t generation);

/* One port's <interface> element (for attaching it to a defined domain),
 * malloc'd. */
char *dx_interface_xml(const struct inst_port *p, const char *virt_type, bool foreign_taps);

/* The metadata element alone (for virDomainSetMetadata), malloc'd. */
char *dx_metadata_xml(const struct inst_desired *d, uint64_t generation);

/* Whether a metadata element names node 'node' (false when it names
 * another node or none). */
bool dx_metadata_node_is(const char *xml, const char *node);

/* Parses the generation out of a metadata element; 0 when absent. */
uint64_t dx_metadata_generation(const char *xml);

#endif
