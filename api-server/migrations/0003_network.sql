-- Network (Neutron v2.0 compatible): networks, subnets, ports with their
-- IP allocations, security groups and rules, and quota overrides.
--
-- Everything lives in the schema "net".  The API is one function,
-- net.api(request jsonb) → jsonb {"status": N, "body": ...}: each call is a
-- single statement, so it runs in one transaction, and the locks below make
-- concurrent calls safe:
--   * a per-project advisory lock around every create (quota counts);
--   * SELECT ... FOR UPDATE on a subnet while choosing an address in it
--     (IPAM), with the primary key (subnet_id, ip_address) as a safety net;
--   * a global advisory lock while choosing a VNI, with a unique index on
--     the VNI of VXLAN networks as a safety net.
-- Failures are raised with SQLSTATE NX001 (message, DETAIL = Neutron type,
-- HINT = HTTP status) and turned into answers by net.api(), which also rolls
-- back whatever the failed call wrote.

CREATE SCHEMA net;

CREATE TABLE net.networks (
    id                    text PRIMARY KEY,
    project_id            text NOT NULL,
    name                  text NOT NULL DEFAULT '',
    description           text NOT NULL DEFAULT '',
    admin_state_up        boolean NOT NULL DEFAULT true,
    shared                boolean NOT NULL DEFAULT false,
    external              boolean NOT NULL DEFAULT false,
    is_default            boolean NOT NULL DEFAULT false,
    port_security_enabled boolean NOT NULL DEFAULT true,
    mtu                   integer NOT NULL,
    network_type          text NOT NULL CHECK (network_type IN ('vxlan', 'flat', 'vlan')),
    physical_network      text,
    segmentation_id       integer,
    az_hints              jsonb NOT NULL DEFAULT '[]',
    status                text NOT NULL DEFAULT 'ACTIVE',
    tags                  text[] NOT NULL DEFAULT '{}',
    revision_number       integer NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX networks_vxlan_vni ON net.networks (segmentation_id)
    WHERE network_type = 'vxlan';
CREATE UNIQUE INDEX networks_vlan_id ON net.networks (physical_network, segmentation_id)
    WHERE network_type = 'vlan';
CREATE UNIQUE INDEX networks_flat_physnet ON net.networks (physical_network)
    WHERE network_type = 'flat';
CREATE INDEX networks_project ON net.networks (project_id);

CREATE TABLE net.subnets (
    id                text PRIMARY KEY,
    project_id        text NOT NULL,
    network_id        text NOT NULL REFERENCES net.networks (id),
    name              text NOT NULL DEFAULT '',
    description       text NOT NULL DEFAULT '',
    ip_version        integer NOT NULL CHECK (ip_version IN (4, 6)),
    cidr              cidr NOT NULL,
    gateway_ip        inet,
    allocation_pools  jsonb NOT NULL DEFAULT '[]',   -- [{"start","end"}], sorted
    enable_dhcp       boolean NOT NULL DEFAULT true,
    dns_nameservers   jsonb NOT NULL DEFAULT '[]',
    host_routes       jsonb NOT NULL DEFAULT '[]',
    ipv6_ra_mode      text,
    ipv6_address_mode text,
    tags              text[] NOT NULL DEFAULT '{}',
    revision_number   integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subnets_network ON net.subnets (network_id);

CREATE TABLE net.security_groups (
    id              text PRIMARY KEY,
    project_id      text NOT NULL,
    name            text NOT NULL DEFAULT '',
    description     text NOT NULL DEFAULT '',
    is_default      boolean NOT NULL DEFAULT false,
    stateful        boolean NOT NULL DEFAULT true,
    tags            text[] NOT NULL DEFAULT '{}',
    revision_number integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- One default group per project, even when two requests create it at once.
CREATE UNIQUE INDEX security_groups_default ON net.security_groups (project_id)
    WHERE is_default;

CREATE TABLE net.security_group_rules (
    id                text PRIMARY KEY,
    project_id        text NOT NULL,
    security_group_id text NOT NULL REFERENCES net.security_groups (id) ON DELETE CASCADE,
    direction         text NOT NULL CHECK (direction IN ('ingress', 'egress')),
    ethertype         text NOT NULL CHECK (ethertype IN ('IPv4', 'IPv6')),
    protocol          text,
    port_range_min    integer,
    port_range_max    integer,
    remote_ip_prefix  cidr,
    remote_group_id   text REFERENCES net.security_groups (id) ON DELETE CASCADE,
    description       text NOT NULL DEFAULT '',
    revision_number   integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX security_group_rules_group ON net.security_group_rules (security_group_id);

CREATE TABLE net.ports (
    id                    text PRIMARY KEY,
    project_id            text NOT NULL,
    network_id            text NOT NULL REFERENCES net.networks (id),
    name                  text NOT NULL DEFAULT '',
    description           text NOT NULL DEFAULT '',
    admin_state_up        boolean NOT NULL DEFAULT true,
    mac_address           macaddr NOT NULL UNIQUE,
    device_id             text NOT NULL DEFAULT '',
    device_owner          text NOT NULL DEFAULT '',
    host_id               text NOT NULL DEFAULT '',
    vnic_type             text NOT NULL DEFAULT 'normal',
    binding_profile       jsonb NOT NULL DEFAULT '{}',
    status                text NOT NULL DEFAULT 'DOWN'
                          CHECK (status IN ('DOWN', 'BUILD', 'ACTIVE', 'ERROR')),
    port_security_enabled boolean NOT NULL DEFAULT true,
    allowed_address_pairs jsonb NOT NULL DEFAULT '[]',
    tags                  text[] NOT NULL DEFAULT '{}',
    revision_number       integer NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ports_network ON net.ports (network_id);
CREATE INDEX ports_project ON net.ports (project_id);
CREATE INDEX ports_host ON net.ports (host_id) WHERE host_id <> '';
CREATE INDEX ports_device ON net.ports (device_id) WHERE device_id <> '';

-- IPAM: an address is handed out at most once per subnet.
CREATE TABLE net.ip_allocations (
    subnet_id  text NOT NULL REFERENCES net.subnets (id),
    ip_address inet NOT NULL,
    port_id    text NOT NULL REFERENCES net.ports (id) ON DELETE CASCADE,
    PRIMARY KEY (subnet_id, ip_address)
);
CREATE INDEX ip_allocations_port ON net.ip_allocations (port_id);

CREATE TABLE net.port_security_groups (
    port_id           text NOT NULL REFERENCES net.ports (id) ON DELETE CASCADE,
    security_group_id text NOT NULL REFERENCES net.security_groups (id),
    PRIMARY KEY (port_id, security_group_id)
);
CREATE INDEX port_security_groups_group ON net.port_security_groups (security_group_id);

-- Per-project overrides of the default quotas (-1 = unlimited).
CREATE TABLE net.quotas (
    project_id  text NOT NULL,
    resource    text NOT NULL,
    hard_limit  integer NOT NULL CHECK (hard_limit >= -1),
    PRIMARY KEY (project_id, resource)
);

-- ---------------------------------------------------------------- helpers

CREATE FUNCTION net.fail(status integer, type text, msg text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'NX001', MESSAGE = msg, DETAIL = type,
                          HINT = status::text;
END $$;

CREATE FUNCTION net.bad(msg text) RETURNS void
LANGUAGE sql AS $$ SELECT net.fail(400, 'HTTPBadRequest', msg) $$;

CREATE FUNCTION net.ts(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

CREATE FUNCTION net.host(a inet) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT host(a) $$;

-- Rejects attributes that the resource does not accept in this call.
CREATE FUNCTION net.check_keys(o jsonb, allowed text[], verb text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE k text;
BEGIN
    FOR k IN SELECT jsonb_object_keys(o) LOOP
        IF NOT k = ANY (allowed) THEN
            PERFORM net.bad(format('Unrecognized attribute(s) ''%s''', k));
        END IF;
    END LOOP;
END $$;

CREATE FUNCTION net.get_text(o jsonb, k text, def text, maxlen integer DEFAULT 255)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE v jsonb := o -> k;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN def;
    END IF;
    IF jsonb_typeof(v) <> 'string' OR length(v #>> '{}') > maxlen THEN
        PERFORM net.bad(format('Invalid input for %s. Reason: ''%s'' is not a valid string of at most %s characters.',
                               k, v #>> '{}', maxlen));
    END IF;
    RETURN v #>> '{}';
END $$;

-- Booleans as Neutron's convert_to_boolean takes them.
CREATE FUNCTION net.get_bool(o jsonb, k text, def boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE v jsonb := o -> k;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN def;
    END IF;
    IF jsonb_typeof(v) = 'boolean' THEN
        RETURN v::text::boolean;
    END IF;
    IF jsonb_typeof(v) = 'string' AND lower(v #>> '{}') IN ('true', 'false', '1', '0') THEN
        RETURN lower(v #>> '{}') IN ('true', '1');
    END IF;
    IF jsonb_typeof(v) = 'number' AND v::text IN ('0', '1') THEN
        RETURN v::text = '1';
    END IF;
    PERFORM net.bad(format('Invalid input for %s. Reason: ''%s'' cannot be converted to boolean.', k, v #>> '{}'));
    RETURN NULL;
END $$;

CREATE FUNCTION net.get_int(o jsonb, k text, def integer, lo bigint, hi bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE v jsonb := o -> k; t text; n bigint;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN def;
    END IF;
    t := v #>> '{}';
    IF jsonb_typeof(v) NOT IN ('number', 'string') OR t !~ '^-?[0-9]{1,10}$' THEN
        PERFORM net.bad(format('Invalid input for %s. Reason: ''%s'' is not an integer.', k, t));
    END IF;
    n := t::bigint;
    IF n < lo OR n > hi THEN
        PERFORM net.bad(format('Invalid input for %s. Reason: ''%s'' is not in range %s through %s.', k, t, lo, hi));
    END IF;
    RETURN n::integer;
END $$;

CREATE FUNCTION net.parse_inet(t text, what text) RETURNS inet
LANGUAGE plpgsql AS $$
BEGIN
    IF t IS NULL OR t !~ '^[0-9a-fA-F:.]+$' THEN
        PERFORM net.bad(format('Invalid input for %s. Reason: ''%s'' is not a valid IP address.', what, t));
    END IF;
    RETURN host(t::inet)::inet;
EXCEPTION WHEN invalid_text_representation THEN
    PERFORM net.bad(format('Invalid input for %s. Reason: ''%s'' is not a valid IP address.', what, t));
    RETURN NULL;
END $$;

CREATE FUNCTION net.parse_cidr(t text, what text) RETURNS cidr
LANGUAGE plpgsql AS $$
BEGIN
    IF t IS NULL OR t !~ '^[0-9a-fA-F:.]+/[0-9]{1,3}$' THEN
        PERFORM net.bad(format('Invalid input for %s. Reason: ''%s'' is not a valid IP subnet.', what, t));
    END IF;
    RETURN t::cidr;
EXCEPTION WHEN invalid_text_representation OR invalid_binary_representation THEN
    PERFORM net.bad(format('Invalid input for %s. Reason: ''%s'' is not a valid IP subnet.', what, t));
    RETURN NULL;
END $$;

-- Quotas: Neutron's defaults, overridden per project in net.quotas.
CREATE FUNCTION net.quota_defaults() RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT '{"network": 100, "subnet": 100, "port": 500, "security_group": 10,
             "security_group_rule": 100, "router": 10, "floatingip": 50,
             "rbac_policy": 10, "subnetpool": -1}'::jsonb
$$;

CREATE FUNCTION net.quota_of(pid text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT net.quota_defaults()
           || coalesce((SELECT jsonb_object_agg(resource, hard_limit)
                        FROM net.quotas WHERE project_id = pid), '{}')
$$;

-- Called with the project's create lock held (net.lock_project).
CREATE FUNCTION net.quota_check(pid text, res text, adding integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE lim integer := (net.quota_of(pid) ->> res)::integer; used integer;
BEGIN
    IF lim < 0 THEN
        RETURN;
    END IF;
    used := CASE res
        WHEN 'network' THEN (SELECT count(*) FROM net.networks WHERE project_id = pid)
        WHEN 'subnet' THEN (SELECT count(*) FROM net.subnets WHERE project_id = pid)
        WHEN 'port' THEN (SELECT count(*) FROM net.ports WHERE project_id = pid)
        WHEN 'security_group' THEN (SELECT count(*) FROM net.security_groups WHERE project_id = pid)
        WHEN 'security_group_rule' THEN (SELECT count(*) FROM net.security_group_rules WHERE project_id = pid)
        ELSE 0 END;
    IF used + adding > lim THEN
        PERFORM net.fail(409, 'OverQuota', format('Quota exceeded for resources: [''%s''].', res));
    END IF;
END $$;

CREATE FUNCTION net.lock_project(pid text) RETURNS void
LANGUAGE sql AS $$ SELECT pg_advisory_xact_lock(hashtext('nimbus-net-project'), hashtext(pid)) $$;

-- ---------------------------------------------------------------- JSON views
-- plpgsql rather than SQL functions: they cannot be inlined, and plpgsql
-- keeps their plans for the session (three times faster per row).

CREATE FUNCTION net.network_json(n net.networks, admin boolean) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
        'id', n.id, 'name', n.name, 'description', n.description,
        'admin_state_up', n.admin_state_up, 'status', n.status,
        'subnets', coalesce((SELECT jsonb_agg(s.id ORDER BY s.created_at, s.id)
                             FROM net.subnets s WHERE s.network_id = n.id), '[]'),
        'shared', n.shared, 'router:external', n.external, 'is_default', n.is_default,
        'mtu', n.mtu, 'port_security_enabled', n.port_security_enabled,
        'project_id', n.project_id, 'tenant_id', n.project_id,
        'availability_zone_hints', n.az_hints,
        'availability_zones', CASE WHEN n.az_hints = '[]' THEN '["nova"]'::jsonb ELSE n.az_hints END,
        'ipv4_address_scope', NULL, 'ipv6_address_scope', NULL,
        'l2_adjacency', true, 'tags', to_jsonb(n.tags),
        'revision_number', n.revision_number,
        'created_at', net.ts(n.created_at), 'updated_at', net.ts(n.updated_at))
    || CASE WHEN admin THEN jsonb_build_object(
        'provider:network_type', n.network_type,
        'provider:physical_network', n.physical_network,
        'provider:segmentation_id', n.segmentation_id) ELSE '{}'::jsonb END);
END $$;

CREATE FUNCTION net.subnet_json(s net.subnets) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
        'id', s.id, 'name', s.name, 'description', s.description,
        'network_id', s.network_id, 'ip_version', s.ip_version,
        'cidr', s.cidr::text, 'gateway_ip', net.host(s.gateway_ip),
        'allocation_pools', s.allocation_pools, 'enable_dhcp', s.enable_dhcp,
        'dns_nameservers', s.dns_nameservers, 'host_routes', s.host_routes,
        'ipv6_ra_mode', s.ipv6_ra_mode, 'ipv6_address_mode', s.ipv6_address_mode,
        'subnetpool_id', NULL, 'segment_id', NULL, 'service_types', '[]'::jsonb,
        'project_id', s.project_id, 'tenant_id', s.project_id,
        'tags', to_jsonb(s.tags), 'revision_number', s.revision_number,
        'created_at', net.ts(s.created_at), 'updated_at', net.ts(s.updated_at)));
END $$;

CREATE FUNCTION net.port_json(p net.ports, admin boolean) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
        'id', p.id, 'name', p.name, 'description', p.description,
        'network_id', p.network_id, 'admin_state_up', p.admin_state_up,
        'mac_address', p.mac_address::text, 'status', p.status,
        'device_id', p.device_id, 'device_owner', p.device_owner,
        'fixed_ips', coalesce((SELECT jsonb_agg(jsonb_build_object('subnet_id', a.subnet_id,
                                                                   'ip_address', host(a.ip_address))
                                                ORDER BY family(a.ip_address), a.ip_address)
                               FROM net.ip_allocations a WHERE a.port_id = p.id), '[]'),
        'security_groups', coalesce((SELECT jsonb_agg(g.security_group_id ORDER BY g.security_group_id)
                                     FROM net.port_security_groups g WHERE g.port_id = p.id), '[]'),
        'port_security_enabled', p.port_security_enabled,
        'allowed_address_pairs', p.allowed_address_pairs,
        'extra_dhcp_opts', '[]'::jsonb, 'ip_allocation', 'immediate',
        'binding:vnic_type', p.vnic_type,
        'project_id', p.project_id, 'tenant_id', p.project_id,
        'tags', to_jsonb(p.tags), 'revision_number', p.revision_number,
        'created_at', net.ts(p.created_at), 'updated_at', net.ts(p.updated_at))
    || CASE WHEN admin THEN jsonb_build_object(
        'binding:host_id', p.host_id,
        'binding:profile', p.binding_profile,
        'binding:vif_type', CASE WHEN p.host_id = '' THEN 'unbound' ELSE 'bridge' END,
        'binding:vif_details', CASE WHEN p.host_id = '' THEN '{}'::jsonb
                                    ELSE '{"port_filter": true}'::jsonb END)
       ELSE '{}'::jsonb END);
END $$;

CREATE FUNCTION net.rule_json(r net.security_group_rules) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
        'id', r.id, 'security_group_id', r.security_group_id,
        'direction', r.direction, 'ethertype', r.ethertype, 'protocol', r.protocol,
        'port_range_min', r.port_range_min, 'port_range_max', r.port_range_max,
        'remote_ip_prefix', r.remote_ip_prefix::text, 'remote_group_id', r.remote_group_id,
        'remote_address_group_id', NULL,
        'normalized_cidr', CASE WHEN r.remote_ip_prefix IS NULL THEN NULL
                                ELSE network(r.remote_ip_prefix)::text END,
        'description', r.description,
        'project_id', r.project_id, 'tenant_id', r.project_id,
        'revision_number', r.revision_number,
        'created_at', net.ts(r.created_at), 'updated_at', net.ts(r.updated_at)));
END $$;

CREATE FUNCTION net.sg_json(g net.security_groups) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
        'id', g.id, 'name', g.name, 'description', g.description,
        'stateful', g.stateful, 'shared', false,
        'security_group_rules', coalesce((SELECT jsonb_agg(net.rule_json(r) ORDER BY r.created_at, r.id)
                                          FROM net.security_group_rules r
                                          WHERE r.security_group_id = g.id), '[]'),
        'project_id', g.project_id, 'tenant_id', g.project_id,
        'tags', to_jsonb(g.tags), 'revision_number', g.revision_number,
        'created_at', net.ts(g.created_at), 'updated_at', net.ts(g.updated_at)));
END $$;

-- ---------------------------------------------------------------- visibility

CREATE FUNCTION net.network_visible(n net.networks, ctx jsonb) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT (ctx ->> 'admin')::boolean OR n.project_id = ctx ->> 'project_id'
           OR n.shared OR n.external
$$;

CREATE FUNCTION net.find_network(nid text, ctx jsonb, for_write boolean) RETURNS net.networks
LANGUAGE plpgsql AS $$
DECLARE n net.networks;
BEGIN
    IF for_write THEN
        SELECT * INTO n FROM net.networks WHERE id = nid FOR UPDATE;
    ELSE
        SELECT * INTO n FROM net.networks WHERE id = nid;
    END IF;
    IF n.id IS NULL OR NOT net.network_visible(n, ctx) THEN
        PERFORM net.fail(404, 'NetworkNotFound', format('Network %s could not be found.', nid));
    END IF;
    RETURN n;
END $$;

-- The caller may change what it owns; an administrator may change anything.
CREATE FUNCTION net.check_owner(pid text, ctx jsonb, what text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (ctx ->> 'admin')::boolean AND pid <> ctx ->> 'project_id' THEN
        PERFORM net.fail(403, 'PolicyNotAuthorized',
                         format('rule:%s is disallowed by policy', what));
    END IF;
END $$;

-- The project a new resource belongs to: the caller's, or for an
-- administrator the one named in the body.
CREATE FUNCTION net.owner_of(o jsonb, ctx jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE p text := coalesce(net.get_text(o, 'project_id', NULL, 64), net.get_text(o, 'tenant_id', NULL, 64));
BEGIN
    IF o ? 'project_id' AND o ? 'tenant_id' AND o ->> 'project_id' <> o ->> 'tenant_id' THEN
        PERFORM net.bad('project_id and tenant_id do not match');
    END IF;
    IF p IS NULL OR p = '' THEN
        p := ctx ->> 'project_id';
    END IF;
    IF p IS NULL OR p = '' THEN
        PERFORM net.bad('Running without keystone AuthN requires that tenant_id is specified');
    END IF;
    IF p <> coalesce(ctx ->> 'project_id', '') AND NOT (ctx ->> 'admin')::boolean THEN
        PERFORM net.fail(403, 'PolicyNotAuthorized',
                         'Specifying ''project_id'' or ''tenant_id'' other than the authenticated project in request requires admin privileges');
    END IF;
    RETURN p;
END $$;

-- ---------------------------------------------------------------- networks

CREATE FUNCTION net.alloc_vni(vmin integer, vmax integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE v integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('nimbus-net-vni'));
    SELECT c INTO v FROM (
        SELECT vmin AS c
        UNION ALL
        SELECT segmentation_id + 1 FROM net.networks
        WHERE network_type = 'vxlan' AND segmentation_id BETWEEN vmin AND vmax - 1
    ) x
    WHERE c <= vmax AND NOT EXISTS (SELECT 1 FROM net.networks n
                                    WHERE n.network_type = 'vxlan' AND n.segmentation_id = x.c)
    ORDER BY c LIMIT 1;
    IF v IS NULL THEN
        PERFORM net.fail(503, 'NoNetworkAvailable',
                         'Unable to create the network. No tenant network is available for allocation.');
    END IF;
    RETURN v;
END $$;

CREATE FUNCTION net.network_create(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    ctx jsonb := req -> 'ctx';
    conf jsonb := req -> 'conf';
    o jsonb := req -> 'body' -> 'network';
    n net.networks;
    pid text;
    ntype text; physnet text; seg integer; maxmtu integer;
BEGIN
    IF o IS NULL OR jsonb_typeof(o) <> 'object' THEN
        PERFORM net.bad('Resource body required');
    END IF;
    PERFORM net.check_keys(o, ARRAY['name', 'description', 'admin_state_up', 'shared',
        'port_security_enabled', 'project_id', 'tenant_id', 'availability_zone_hints', 'mtu',
        'router:external', 'is_default', 'provider:network_type', 'provider:physical_network',
        'provider:segmentation_id', 'qos_policy_id', 'dns_domain'], 'POST');
    pid := net.owner_of(o, ctx);
    PERFORM net.lock_project(pid);
    PERFORM net.quota_check(pid, 'network', 1);

    ntype := coalesce(net.get_text(o, 'provider:network_type', NULL), 'vxlan');
    physnet := net.get_text(o, 'provider:physical_network', NULL);
    seg := net.get_int(o, 'provider:segmentation_id', NULL, 1, 16777215);
    IF ntype = 'vxlan' THEN
        IF physnet IS NOT NULL THEN
            PERFORM net.fail(400, 'InvalidInput', 'Invalid input for operation: provider:physical_network specified for vxlan network.');
        END IF;
        IF seg IS NULL THEN
            seg := net.alloc_vni((conf ->> 'vni_min')::integer, (conf ->> 'vni_max')::integer);
        ELSIF EXISTS (SELECT 1 FROM net.networks WHERE network_type = 'vxlan' AND segmentation_id = seg) THEN
            PERFORM net.fail(409, 'TunnelIdInUse', format('Unable to create the network. The tunnel ID %s is in use.', seg));
        END IF;
        maxmtu := (conf ->> 'underlay_mtu')::integer - 50;
    ELSIF ntype = 'vlan' THEN
        IF physnet IS NULL OR seg IS NULL OR seg > 4094 THEN
            PERFORM net.fail(400, 'InvalidInput', 'Invalid input for operation: vlan networks need provider:physical_network and a provider:segmentation_id from 1 to 4094.');
        END IF;
        IF EXISTS (SELECT 1 FROM net.networks WHERE network_type = 'vlan' AND physical_network = physnet AND segmentation_id = seg) THEN
            PERFORM net.fail(409, 'VlanIdInUse', format('Unable to create the network. The VLAN %s on physical network %s is in use.', seg, physnet));
        END IF;
        maxmtu := (conf ->> 'underlay_mtu')::integer;
    ELSIF ntype = 'flat' THEN
        IF physnet IS NULL OR seg IS NOT NULL THEN
            PERFORM net.fail(400, 'InvalidInput', 'Invalid input for operation: flat networks need provider:physical_network and no provider:segmentation_id.');
        END IF;
        IF EXISTS (SELECT 1 FROM net.networks WHERE network_type = 'flat' AND physical_network = physnet) THEN
            PERFORM net.fail(409, 'FlatNetworkInUse', format('Unable to create the flat network. Physical network %s is in use.', physnet));
        END IF;
        maxmtu := (conf ->> 'underlay_mtu')::integer;
    ELSE
        PERFORM net.fail(400, 'InvalidInput', format('Invalid input for operation: network_type value ''%s'' not supported.', ntype));
    END IF;

    IF jsonb_typeof(coalesce(o -> 'availability_zone_hints', '[]')) <> 'array' THEN
        PERFORM net.bad('Invalid input for availability_zone_hints.');
    END IF;
    IF coalesce(jsonb_typeof(o -> 'qos_policy_id'), 'null') <> 'null' THEN
        PERFORM net.bad('Unrecognized attribute(s) ''qos_policy_id''');
    END IF;

    INSERT INTO net.networks (id, project_id, name, description, admin_state_up, shared,
        external, is_default, port_security_enabled, mtu, network_type, physical_network,
        segmentation_id, az_hints)
    VALUES (gen_random_uuid()::text, pid, net.get_text(o, 'name', ''),
        net.get_text(o, 'description', '', 255), net.get_bool(o, 'admin_state_up', true),
        net.get_bool(o, 'shared', false), net.get_bool(o, 'router:external', false),
        net.get_bool(o, 'is_default', false), net.get_bool(o, 'port_security_enabled', true),
        net.get_int(o, 'mtu', maxmtu, 68, maxmtu), ntype, physnet, seg,
        coalesce(o -> 'availability_zone_hints', '[]'))
    RETURNING * INTO n;
    RETURN jsonb_build_object('status', 201, 'body',
        jsonb_build_object('network', net.network_json(n, (ctx ->> 'admin')::boolean)));
END $$;

CREATE FUNCTION net.network_update(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    ctx jsonb := req -> 'ctx';
    o jsonb := req -> 'body' -> 'network';
    n net.networks;
    maxmtu integer;
BEGIN
    IF o IS NULL OR jsonb_typeof(o) <> 'object' THEN
        PERFORM net.bad('Resource body required');
    END IF;
    PERFORM net.check_keys(o, ARRAY['name', 'description', 'admin_state_up', 'shared',
        'port_security_enabled', 'mtu', 'router:external', 'is_default', 'qos_policy_id',
        'dns_domain'], 'PUT');
    n := net.find_network(req ->> 'id', ctx, true);
    PERFORM net.check_owner(n.project_id, ctx, 'update_network');
    maxmtu := CASE WHEN n.network_type = 'vxlan' THEN (req -> 'conf' ->> 'underlay_mtu')::integer - 50
                   ELSE (req -> 'conf' ->> 'underlay_mtu')::integer END;
    UPDATE net.networks SET
        name = net.get_text(o, 'name', name),
        description = net.get_text(o, 'description', description),
        admin_state_up = net.get_bool(o, 'admin_state_up', admin_state_up),
        shared = net.get_bool(o, 'shared', shared),
        external = net.get_bool(o, 'router:external', external),
        is_default = net.get_bool(o, 'is_default', is_default),
        port_security_enabled = net.get_bool(o, 'port_security_enabled', port_security_enabled),
        mtu = net.get_int(o, 'mtu', mtu, 68, maxmtu),
        revision_number = revision_number + 1, updated_at = now()
    WHERE id = n.id RETURNING * INTO n;
    RETURN jsonb_build_object('status', 200, 'body',
        jsonb_build_object('network', net.network_json(n, (ctx ->> 'admin')::boolean)));
END $$;

CREATE FUNCTION net.network_delete(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE ctx jsonb := req -> 'ctx'; n net.networks;
BEGIN
    n := net.find_network(req ->> 'id', ctx, true);
    PERFORM net.check_owner(n.project_id, ctx, 'delete_network');
    -- DHCP ports belong to the network; any other port keeps it in use.
    DELETE FROM net.ports WHERE network_id = n.id AND device_owner = 'network:dhcp';
    IF EXISTS (SELECT 1 FROM net.ports WHERE network_id = n.id) THEN
        PERFORM net.fail(409, 'NetworkInUse',
            format('Unable to complete operation on network %s. There are one or more ports still in use on the network.', n.id));
    END IF;
    DELETE FROM net.subnets WHERE network_id = n.id;
    DELETE FROM net.networks WHERE id = n.id;
    RETURN jsonb_build_object('status', 204);
END $$;

-- ---------------------------------------------------------------- subnets

CREATE FUNCTION net.find_subnet(sid text, ctx jsonb, for_write boolean) RETURNS net.subnets
LANGUAGE plpgsql AS $$
DECLARE s net.subnets;
BEGIN
    IF for_write THEN
        SELECT * INTO s FROM net.subnets WHERE id = sid FOR UPDATE;
    ELSE
        SELECT * INTO s FROM net.subnets WHERE id = sid;
    END IF;
    IF s.id IS NULL OR NOT (s.project_id = ctx ->> 'project_id'
            OR (SELECT net.network_visible(n, ctx) FROM net.networks n WHERE n.id = s.network_id)) THEN
        PERFORM net.fail(404, 'SubnetNotFound', format('Subnet %s could not be found.', sid));
    END IF;
    RETURN s;
END $$;

-- Validates and normalises allocation pools for 'c' (gateway 'gw' may be
-- NULL); returns them sorted as [{"start","end"}].
CREATE FUNCTION net.check_pools(pools jsonb, c cidr, gw inet) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    p jsonb; s inet; e inet; prev_e inet := NULL; out jsonb := '[]';
    r record;
BEGIN
    IF jsonb_typeof(pools) <> 'array' THEN
        PERFORM net.bad('Invalid input for allocation_pools. Reason: Invalid data format for IP pool.');
    END IF;
    FOR p IN SELECT * FROM jsonb_array_elements(pools) LOOP
        IF jsonb_typeof(p) <> 'object' OR NOT p ? 'start' OR NOT p ? 'end' THEN
            PERFORM net.bad('Invalid input for allocation_pools. Reason: Invalid data format for IP pool.');
        END IF;
        s := net.parse_inet(p ->> 'start', 'allocation_pools');
        e := net.parse_inet(p ->> 'end', 'allocation_pools');
        IF family(s) <> family(c) OR family(e) <> family(c) OR s > e THEN
            PERFORM net.fail(400, 'InvalidAllocationPool',
                format('The allocation pool %s-%s spans beyond the subnet cidr %s.', host(s), host(e), c));
        END IF;
        IF NOT (s << c AND e << c) OR s = network(c) OR (family(c) = 4 AND masklen(c) < 31 AND e = broadcast(c)) THEN
            PERFORM net.fail(400, 'OutOfBoundsAllocationPool',
                format('The allocation pool %s-%s spans beyond the subnet cidr %s.', host(s), host(e), c));
        END IF;
    END LOOP;
    FOR r IN SELECT host((x ->> 'start')::inet)::inet AS s, host((x ->> 'end')::inet)::inet AS e
             FROM jsonb_array_elements(pools) x ORDER BY 1 LOOP
        IF prev_e IS NOT NULL AND r.s <= prev_e THEN
            PERFORM net.fail(409, 'OverlappingAllocationPools',
                format('Found overlapping allocation pools: %s-%s overlaps the previous pool in subnet %s.', host(r.s), host(r.e), c));
        END IF;
        IF gw IS NOT NULL AND gw BETWEEN r.s AND r.e THEN
            PERFORM net.fail(409, 'GatewayConflictWithAllocationPools',
                format('Gateway ip %s conflicts with allocation pool %s-%s.', host(gw), host(r.s), host(r.e)));
        END IF;
        prev_e := r.e;
        out := out || jsonb_build_array(jsonb_build_object('start', host(r.s), 'end', host(r.e)));
    END LOOP;
    RETURN out;
END $$;

-- The default pools: every host address of 'c' except the gateway.
CREATE FUNCTION net.default_pools(c cidr, gw inet) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE first inet; last inet; out jsonb := '[]';
BEGIN
    IF family(c) = 4 AND masklen(c) >= 31 THEN
        first := host(network(c))::inet;
        last := host(broadcast(c))::inet;
    ELSIF family(c) = 4 THEN
        first := host(network(c))::inet + 1;
        last := host(broadcast(c))::inet - 1;
    ELSE
        first := host(network(c))::inet + 1;
        last := host(broadcast(c))::inet;
    END IF;
    IF gw IS NULL OR gw < first OR gw > last THEN
        RETURN jsonb_build_array(jsonb_build_object('start', host(first), 'end', host(last)));
    END IF;
    IF gw > first THEN
        out := out || jsonb_build_array(jsonb_build_object('start', host(first), 'end', host(gw - 1)));
    END IF;
    IF gw < last THEN
        out := out || jsonb_build_array(jsonb_build_object('start', host(gw + 1), 'end', host(last)));
    END IF;
    RETURN out;
END $$;

CREATE FUNCTION net.check_list(o jsonb, k text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE v jsonb := coalesce(o -> k, '[]');
BEGIN
    IF jsonb_typeof(v) = 'null' THEN
        RETURN '[]';
    END IF;
    IF jsonb_typeof(v) <> 'array' OR jsonb_array_length(v) > 64 THEN
        PERFORM net.bad(format('Invalid input for %s. Reason: expected a list.', k));
    END IF;
    RETURN v;
END $$;

CREATE FUNCTION net.check_dns(v jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE e jsonb;
BEGIN
    FOR e IN SELECT * FROM jsonb_array_elements(v) LOOP
        PERFORM net.parse_inet(e #>> '{}', 'dns_nameservers');
    END LOOP;
    RETURN v;
END $$;

CREATE FUNCTION net.check_routes(v jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE e jsonb; out jsonb := '[]';
BEGIN
    FOR e IN SELECT * FROM jsonb_array_elements(v) LOOP
        IF jsonb_typeof(e) <> 'object' OR NOT e ? 'destination' OR NOT e ? 'nexthop' THEN
            PERFORM net.bad('Invalid input for host_routes. Reason: expected {"destination", "nexthop"}.');
        END IF;
        out := out || jsonb_build_array(jsonb_build_object(
            'destination', net.parse_cidr(e ->> 'destination', 'host_routes')::text,
            'nexthop', host(net.parse_inet(e ->> 'nexthop', 'host_routes'))));
    END LOOP;
    RETURN out;
END $$;

CREATE FUNCTION net.subnet_create(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    ctx jsonb := req -> 'ctx';
    o jsonb := req -> 'body' -> 'subnet';
    n net.networks; s net.subnets;
    pid text; ver integer; c cidr; gw inet; pools jsonb; other text;
    ctext text; raw inet;
BEGIN
    IF o IS NULL OR jsonb_typeof(o) <> 'object' THEN
        PERFORM net.bad('Resource body required');
    END IF;
    PERFORM net.check_keys(o, ARRAY['name', 'description', 'network_id', 'ip_version', 'cidr',
        'gateway_ip', 'allocation_pools', 'enable_dhcp', 'dns_nameservers', 'host_routes',
        'project_id', 'tenant_id', 'subnetpool_id', 'prefixlen', 'ipv6_ra_mode',
        'ipv6_address_mode', 'segment_id', 'service_types', 'use_default_subnet_pool',
        'dns_publish_fixed_ip'], 'POST');
    IF coalesce(jsonb_typeof(o -> 'subnetpool_id'), 'null') <> 'null'
       OR coalesce(jsonb_typeof(o -> 'segment_id'), 'null') <> 'null'
       OR net.get_bool(o, 'use_default_subnet_pool', false) THEN
        PERFORM net.bad('Subnet pools and segments are not supported.');
    END IF;
    IF NOT o ? 'network_id' THEN
        PERFORM net.bad('Failed to parse request. Required attribute ''network_id'' not specified');
    END IF;
    pid := net.owner_of(o, ctx);
    n := net.find_network(net.get_text(o, 'network_id', NULL, 64), ctx, false);
    IF n.project_id <> pid AND NOT (ctx ->> 'admin')::boolean THEN
        PERFORM net.fail(403, 'PolicyNotAuthorized', 'rule:create_subnet is disallowed by policy');
    END IF;
    PERFORM net.lock_project(pid);
    PERFORM net.quota_check(pid, 'subnet', 1);
    -- Serialise subnet creation on one network (overlap checks).
    PERFORM 1 FROM net.networks WHERE id = n.id FOR NO KEY UPDATE;

    ctext := net.get_text(o, 'cidr', NULL, 64);
    IF ctext IS NULL THEN
        PERFORM net.bad('Bad subnets request: a cidr must be specified in the absence of a subnet pool');
    END IF;
    IF ctext !~ '^[0-9a-fA-F:.]+/[0-9]{1,3}$' THEN
        PERFORM net.bad(format('Invalid input for cidr. Reason: ''%s'' is not a valid IP subnet.', ctext));
    END IF;
    BEGIN
        raw := ctext::inet;
    EXCEPTION WHEN invalid_text_representation OR invalid_binary_representation THEN
        PERFORM net.bad(format('Invalid input for cidr. Reason: ''%s'' is not a valid IP subnet.', ctext));
    END;
    IF raw <> network(raw)::inet THEN
        PERFORM net.bad(format('Invalid input for cidr. Reason: ''%s'' isn''t a recommended CIDR, ''%s'' is recommended.',
                               ctext, network(raw)::text));
    END IF;
    c := network(raw);
    ver := net.get_int(o, 'ip_version', 4, 4, 6);
    IF ver NOT IN (4, 6) THEN
        PERFORM net.bad(format('Invalid input for ip_version. Reason: %s is not in [4, 6].', ver));
    END IF;
    IF family(c) <> ver THEN
        PERFORM net.bad(format('Invalid input for operation: Cidr %s does not match ip_version %s.', c, ver));
    END IF;
    IF (ver = 4 AND masklen(c) > 30) OR (ver = 6 AND masklen(c) > 126) OR masklen(c) = 0 THEN
        PERFORM net.bad(format('Invalid input for cidr. Reason: ''%s'' is too small or too large a subnet.', c));
    END IF;
    SELECT id INTO other FROM net.subnets x WHERE x.network_id = n.id AND (x.cidr && c) LIMIT 1;
    IF other IS NOT NULL THEN
        PERFORM net.bad(format('Invalid input for operation: Requested subnet with cidr: %s for network: %s overlaps with another subnet.', c, n.id));
    END IF;

    IF NOT o ? 'gateway_ip' THEN
        gw := host(network(c))::inet + 1;
    ELSIF jsonb_typeof(o -> 'gateway_ip') = 'null' THEN
        gw := NULL;
    ELSE
        gw := net.parse_inet(net.get_text(o, 'gateway_ip', NULL, 64), 'gateway_ip');
        IF family(gw) <> ver OR NOT gw << c OR (ver = 4 AND (gw = network(c) OR gw = host(broadcast(c))::inet)) THEN
            PERFORM net.fail(400, 'InvalidInput', format('Invalid input for operation: Gateway is not valid on subnet %s.', c));
        END IF;
    END IF;
    IF o ? 'allocation_pools' AND jsonb_typeof(o -> 'allocation_pools') <> 'null' THEN
        pools := net.check_pools(o -> 'allocation_pools', c, gw);
    ELSE
        pools := net.default_pools(c, gw);
    END IF;

    INSERT INTO net.subnets (id, project_id, network_id, name, description, ip_version, cidr,
        gateway_ip, allocation_pools, enable_dhcp, dns_nameservers, host_routes,
        ipv6_ra_mode, ipv6_address_mode)
    VALUES (gen_random_uuid()::text, pid, n.id, net.get_text(o, 'name', ''),
        net.get_text(o, 'description', ''), ver, c, gw, pools,
        net.get_bool(o, 'enable_dhcp', true), net.check_dns(net.check_list(o, 'dns_nameservers')),
        net.check_routes(net.check_list(o, 'host_routes')),
        CASE WHEN ver = 6 THEN net.get_text(o, 'ipv6_ra_mode', NULL) END,
        CASE WHEN ver = 6 THEN net.get_text(o, 'ipv6_address_mode', NULL) END)
    RETURNING * INTO s;
    UPDATE net.networks SET revision_number = revision_number + 1, updated_at = now() WHERE id = n.id;
    RETURN jsonb_build_object('status', 201, 'body', jsonb_build_object('subnet', net.subnet_json(s)));
END $$;

CREATE FUNCTION net.subnet_update(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    ctx jsonb := req -> 'ctx';
    o jsonb := req -> 'body' -> 'subnet';
    s net.subnets; gw inet; pools jsonb;
BEGIN
    IF o IS NULL OR jsonb_typeof(o) <> 'object' THEN
        PERFORM net.bad('Resource body required');
    END IF;
    PERFORM net.check_keys(o, ARRAY['name', 'description', 'gateway_ip', 'allocation_pools',
        'enable_dhcp', 'dns_nameservers', 'host_routes', 'service_types'], 'PUT');
    s := net.find_subnet(req ->> 'id', ctx, true);
    PERFORM net.check_owner(s.project_id, ctx, 'update_subnet');
    gw := s.gateway_ip;
    IF o ? 'gateway_ip' THEN
        IF jsonb_typeof(o -> 'gateway_ip') = 'null' THEN
            gw := NULL;
        ELSE
            gw := net.parse_inet(net.get_text(o, 'gateway_ip', NULL, 64), 'gateway_ip');
            IF family(gw) <> s.ip_version OR NOT gw << s.cidr THEN
                PERFORM net.fail(400, 'InvalidInput', format('Invalid input for operation: Gateway is not valid on subnet %s.', s.cidr));
            END IF;
        END IF;
    END IF;
    pools := net.check_pools(CASE WHEN o ? 'allocation_pools' THEN o -> 'allocation_pools'
                                  ELSE s.allocation_pools END, s.cidr, gw);
    UPDATE net.subnets SET
        name = net.get_text(o, 'name', name),
        description = net.get_text(o, 'description', description),
        enable_dhcp = net.get_bool(o, 'enable_dhcp', enable_dhcp),
        dns_nameservers = CASE WHEN o ? 'dns_nameservers'
                               THEN net.check_dns(net.check_list(o, 'dns_nameservers')) ELSE dns_nameservers END,
        host_routes = CASE WHEN o ? 'host_routes'
                           THEN net.check_routes(net.check_list(o, 'host_routes')) ELSE host_routes END,
        gateway_ip = gw, allocation_pools = pools,
        revision_number = revision_number + 1, updated_at = now()
    WHERE id = s.id RETURNING * INTO s;
    RETURN jsonb_build_object('status', 200, 'body', jsonb_build_object('subnet', net.subnet_json(s)));
END $$;

CREATE FUNCTION net.subnet_delete(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE ctx jsonb := req -> 'ctx'; s net.subnets;
BEGIN
    -- Lock order everywhere: network, then subnet.
    s := net.find_subnet(req ->> 'id', ctx, false);
    PERFORM 1 FROM net.networks WHERE id = s.network_id FOR NO KEY UPDATE;
    s := net.find_subnet(req ->> 'id', ctx, true);
    PERFORM net.check_owner(s.project_id, ctx, 'delete_subnet');
    DELETE FROM net.ip_allocations a USING net.ports p
    WHERE a.subnet_id = s.id AND a.port_id = p.id AND p.device_owner = 'network:dhcp';
    IF EXISTS (SELECT 1 FROM net.ip_allocations WHERE subnet_id = s.id) THEN
        PERFORM net.fail(409, 'SubnetInUse',
            format('Unable to complete operation on subnet %s: One or more ports have an IP allocation from this subnet.', s.id));
    END IF;
    DELETE FROM net.subnets WHERE id = s.id;
    UPDATE net.networks SET revision_number = revision_number + 1, updated_at = now() WHERE id = s.network_id;
    RETURN jsonb_build_object('status', 204);
END $$;

-- ---------------------------------------------------------------- security groups

-- The project's default group, created with Neutron's default rules on
-- first use (concurrent first uses create one group).
CREATE FUNCTION net.default_sg(pid text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE gid text;
BEGIN
    SELECT id INTO gid FROM net.security_groups WHERE project_id = pid AND is_default;
    IF gid IS NOT NULL THEN
        RETURN gid;
    END IF;
    INSERT INTO net.security_groups (id, project_id, name, description, is_default)
    VALUES (gen_random_uuid()::text, pid, 'default', 'Default security group', true)
    ON CONFLICT (project_id) WHERE is_default DO NOTHING
    RETURNING id INTO gid;
    IF gid IS NULL THEN
        SELECT id INTO gid FROM net.security_groups WHERE project_id = pid AND is_default;
        RETURN gid;
    END IF;
    INSERT INTO net.security_group_rules (id, project_id, security_group_id, direction, ethertype, remote_group_id)
    VALUES (gen_random_uuid()::text, pid, gid, 'egress', 'IPv4', NULL),
           (gen_random_uuid()::text, pid, gid, 'egress', 'IPv6', NULL),
           (gen_random_uuid()::text, pid, gid, 'ingress', 'IPv4', gid),
           (gen_random_uuid()::text, pid, gid, 'ingress', 'IPv6', gid);
    RETURN gid;
END $$;

CREATE FUNCTION net.find_sg(gid text, ctx jsonb) RETURNS net.security_groups
LANGUAGE plpgsql AS $$
DECLARE g net.security_groups;
BEGIN
    SELECT * INTO g FROM net.security_groups WHERE id = gid;
    IF g.id IS NULL OR NOT ((ctx ->> 'admin')::boolean OR g.project_id = ctx ->> 'project_id') THEN
        PERFORM net.fail(404, 'SecurityGroupNotFound', format('Security group %s does not exist', gid));
    END IF;
    RETURN g;
END $$;

CREATE FUNCTION net.sg_create(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    ctx jsonb := req -> 'ctx';
    o jsonb := req -> 'body' -> 'security_group';
    g net.security_groups; pid text; nm text;
BEGIN
    IF o IS NULL OR jsonb_typeof(o) <> 'object' THEN
        PERFORM net.bad('Resource body required');
    END IF;
    PERFORM net.check_keys(o, ARRAY['name', 'description', 'project_id', 'tenant_id', 'stateful'], 'POST');
    pid := net.owner_of(o, ctx);
    nm := net.get_text(o, 'name', '');
    IF nm = 'default' THEN
        PERFORM net.fail(409, 'SecurityGroupDefaultAlreadyExists', 'Default security group already exists.');
    END IF;
    PERFORM net.default_sg(pid);
    PERFORM net.lock_project(pid);
    PERFORM net.quota_check(pid, 'security_group', 1);
    PERFORM net.quota_check(pid, 'security_group_rule', 2);
    INSERT INTO net.security_groups (id, project_id, name, description, stateful)
    VALUES (gen_random_uuid()::text, pid, nm, net.get_text(o, 'description', ''),
            net.get_bool(o, 'stateful', true))
    RETURNING * INTO g;
    -- Neutron gives a new group the two egress rules.
    INSERT INTO net.security_group_rules (id, project_id, security_group_id, direction, ethertype)
    VALUES (gen_random_uuid()::text, pid, g.id, 'egress', 'IPv4'),
           (gen_random_uuid()::text, pid, g.id, 'egress', 'IPv6');
    RETURN jsonb_build_object('status', 201, 'body', jsonb_build_object('security_group', net.sg_json(g)));
END $$;

CREATE FUNCTION net.sg_update(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE ctx jsonb := req -> 'ctx'; o jsonb := req -> 'body' -> 'security_group'; g net.security_groups;
BEGIN
    IF o IS NULL OR jsonb_typeof(o) <> 'object' THEN
        PERFORM net.bad('Resource body required');
    END IF;
    PERFORM net.check_keys(o, ARRAY['name', 'description'], 'PUT');
    g := net.find_sg(req ->> 'id', ctx);
    IF g.is_default AND o ? 'name' AND o ->> 'name' <> 'default' THEN
        PERFORM net.fail(409, 'SecurityGroupCannotUpdateDefault', 'Updating default security group not allowed.');
    END IF;
    UPDATE net.security_groups SET name = net.get_text(o, 'name', name),
        description = net.get_text(o, 'description', description),
        revision_number = revision_number + 1, updated_at = now()
    WHERE id = g.id RETURNING * INTO g;
    RETURN jsonb_build_object('status', 200, 'body', jsonb_build_object('security_group', net.sg_json(g)));
END $$;

CREATE FUNCTION net.sg_delete(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE ctx jsonb := req -> 'ctx'; g net.security_groups;
BEGIN
    g := net.find_sg(req ->> 'id', ctx);
    IF g.is_default AND NOT (ctx ->> 'admin')::boolean THEN
        PERFORM net.fail(409, 'SecurityGroupCannotRemoveDefault', 'Removing default security group not allowed.');
    END IF;
    IF EXISTS (SELECT 1 FROM net.port_security_groups WHERE security_group_id = g.id) THEN
        PERFORM net.fail(409, 'SecurityGroupInUse', format('Security Group %s in use.', g.id));
    END IF;
    DELETE FROM net.security_groups WHERE id = g.id;
    RETURN jsonb_build_object('status', 204);
END $$;

CREATE FUNCTION net.sgr_create(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    ctx jsonb := req -> 'ctx';
    o jsonb := req -> 'body' -> 'security_group_rule';
    g net.security_groups; r net.security_group_rules;
    dir text; eth text; proto text; pmin integer; pmax integer; prefix cidr; rgid text;
BEGIN
    IF o IS NULL OR jsonb_typeof(o) <> 'object' THEN
        PERFORM net.bad('Resource body required');
    END IF;
    PERFORM net.check_keys(o, ARRAY['security_group_id', 'direction', 'ethertype', 'protocol',
        'port_range_min', 'port_range_max', 'remote_ip_prefix', 'remote_group_id',
        'remote_address_group_id', 'description', 'project_id', 'tenant_id'], 'POST');
    IF coalesce(jsonb_typeof(o -> 'remote_address_group_id'), 'null') <> 'null' THEN
        PERFORM net.bad('Address groups are not supported.');
    END IF;
    g := net.find_sg(net.get_text(o, 'security_group_id', NULL, 64), ctx);
    IF g.id IS NULL THEN
        PERFORM net.bad('Failed to parse request. Required attribute ''security_group_id'' not specified');
    END IF;
    dir := net.get_text(o, 'direction', NULL);
    IF dir IS NULL OR dir NOT IN ('ingress', 'egress') THEN
        PERFORM net.bad(format('Invalid input for direction. Reason: %s is not in [''ingress'', ''egress''].', coalesce(dir, 'None')));
    END IF;
    eth := net.get_text(o, 'ethertype', 'IPv4');
    IF eth NOT IN ('IPv4', 'IPv6') THEN
        PERFORM net.fail(400, 'SecurityGroupRuleInvalidEtherType', format('Security group rule for ethertype ''%s'' not supported. Allowed values are [''IPv4'', ''IPv6''].', eth));
    END IF;
    proto := lower(net.get_text(o, 'protocol', NULL));
    IF proto IS NOT NULL AND proto NOT IN ('tcp', 'udp', 'icmp', 'ipv6-icmp', 'icmpv6', 'sctp', 'gre', 'esp', 'ah', 'any')
       AND NOT (proto ~ '^[0-9]{1,3}$' AND proto::integer <= 255) THEN
        PERFORM net.fail(400, 'SecurityGroupRuleInvalidProtocol', format('Security group rule protocol %s not supported.', proto));
    END IF;
    IF proto = 'any' THEN proto := NULL; END IF;
    pmin := net.get_int(o, 'port_range_min', NULL, 0, 65535);
    pmax := net.get_int(o, 'port_range_max', NULL, 0, 65535);
    IF proto IN ('tcp', 'udp', 'sctp', '6', '17', '132') THEN
        IF (pmin IS NULL) <> (pmax IS NULL) AND pmax IS NULL THEN
            pmax := pmin;
        END IF;
        IF pmin IS NOT NULL AND (pmin < 1 OR pmin > pmax) THEN
            PERFORM net.fail(400, 'SecurityGroupInvalidPortRange', 'For TCP/UDP protocols, port_range_min must be <= port_range_max');
        END IF;
    ELSIF proto IN ('icmp', 'ipv6-icmp', 'icmpv6', '1', '58') THEN
        IF pmin IS NOT NULL AND pmin > 255 OR pmax IS NOT NULL AND pmax > 255 THEN
            PERFORM net.fail(400, 'SecurityGroupInvalidIcmpValue', 'Invalid value for ICMP type or code.');
        END IF;
    ELSIF pmin IS NOT NULL OR pmax IS NOT NULL THEN
        PERFORM net.fail(400, 'SecurityGroupInvalidPortRange', 'Port ranges need a TCP, UDP or SCTP protocol.');
    END IF;
    IF o ? 'remote_ip_prefix' AND jsonb_typeof(o -> 'remote_ip_prefix') <> 'null' THEN
        BEGIN
            prefix := network(net.get_text(o, 'remote_ip_prefix', NULL, 64)::inet);
        EXCEPTION WHEN invalid_text_representation THEN
            PERFORM net.bad(format('Invalid input for remote_ip_prefix. Reason: ''%s'' is not a valid IP subnet.', o ->> 'remote_ip_prefix'));
        END;
        IF family(prefix) <> (CASE eth WHEN 'IPv4' THEN 4 ELSE 6 END) THEN
            PERFORM net.fail(400, 'SecurityGroupRuleParameterConflict', format('Conflicting value ethertype %s for CIDR %s', eth, prefix));
        END IF;
    END IF;
    rgid := net.get_text(o, 'remote_group_id', NULL, 64);
    IF rgid IS NOT NULL THEN
        IF prefix IS NOT NULL THEN
            PERFORM net.fail(400, 'SecurityGroupRemoteGroupAndRemoteIpPrefix', 'Only remote_ip_prefix or remote_group_id may be provided.');
        END IF;
        PERFORM net.find_sg(rgid, ctx);
    END IF;
    PERFORM net.lock_project(g.project_id);
    IF EXISTS (SELECT 1 FROM net.security_group_rules x WHERE x.security_group_id = g.id
               AND x.direction = dir AND x.ethertype = eth
               AND x.protocol IS NOT DISTINCT FROM proto
               AND x.port_range_min IS NOT DISTINCT FROM pmin AND x.port_range_max IS NOT DISTINCT FROM pmax
               AND x.remote_ip_prefix IS NOT DISTINCT FROM prefix
               AND x.remote_group_id IS NOT DISTINCT FROM rgid) THEN
        PERFORM net.fail(409, 'SecurityGroupRuleExists', 'Security group rule already exists.');
    END IF;
    PERFORM net.quota_check(g.project_id, 'security_group_rule', 1);
    INSERT INTO net.security_group_rules (id, project_id, security_group_id, direction, ethertype,
        protocol, port_range_min, port_range_max, remote_ip_prefix, remote_group_id, description)
    VALUES (gen_random_uuid()::text, g.project_id, g.id, dir, eth, proto, pmin, pmax, prefix, rgid,
            net.get_text(o, 'description', ''))
    RETURNING * INTO r;
    UPDATE net.security_groups SET revision_number = revision_number + 1, updated_at = now() WHERE id = g.id;
    RETURN jsonb_build_object('status', 201, 'body', jsonb_build_object('security_group_rule', net.rule_json(r)));
END $$;

CREATE FUNCTION net.sgr_delete(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE ctx jsonb := req -> 'ctx'; r net.security_group_rules;
BEGIN
    SELECT * INTO r FROM net.security_group_rules WHERE id = req ->> 'id';
    IF r.id IS NULL OR NOT ((ctx ->> 'admin')::boolean OR r.project_id = ctx ->> 'project_id') THEN
        PERFORM net.fail(404, 'SecurityGroupRuleNotFound', format('Security group rule %s does not exist', req ->> 'id'));
    END IF;
    DELETE FROM net.security_group_rules WHERE id = r.id;
    UPDATE net.security_groups SET revision_number = revision_number + 1, updated_at = now()
    WHERE id = r.security_group_id;
    RETURN jsonb_build_object('status', 204);
END $$;

-- ---------------------------------------------------------------- ports

-- Allocates the lowest free address of subnet 's' (locked by the caller)
-- from its pools, or NULL when the pools are full.
CREATE FUNCTION net.alloc_ip(s net.subnets) RETURNS inet
LANGUAGE plpgsql AS $$
DECLARE p jsonb; ps inet; pe inet; ip inet;
BEGIN
    FOR p IN SELECT * FROM jsonb_array_elements(s.allocation_pools) LOOP
        ps := (p ->> 'start')::inet;
        pe := (p ->> 'end')::inet;
        SELECT c INTO ip FROM (
            SELECT ps AS c
            UNION ALL
            SELECT a.ip_address + 1 FROM net.ip_allocations a
            WHERE a.subnet_id = s.id AND a.ip_address >= ps AND a.ip_address < pe
        ) x
        WHERE x.c <= pe AND NOT EXISTS (SELECT 1 FROM net.ip_allocations b
                                        WHERE b.subnet_id = s.id AND b.ip_address = x.c)
              AND x.c IS DISTINCT FROM s.gateway_ip
        ORDER BY x.c LIMIT 1;
        IF ip IS NOT NULL THEN
            RETURN ip;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- Allocates the fixed IPs asked for in 'want' (NULL: Neutron's default of
-- one address from the first IPv4 subnet with room and one from the first
-- IPv6 subnet) to port 'pid' on network 'n'.
CREATE FUNCTION net.allocate_ips(pid text, n net.networks, want jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb; s net.subnets; ip inet; sid text; ver integer; got boolean;
BEGIN
    IF want IS NULL THEN
        IF NOT EXISTS (SELECT 1 FROM net.subnets WHERE network_id = n.id) THEN
            RETURN;
        END IF;
        FOREACH ver IN ARRAY ARRAY[4, 6] LOOP
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM net.subnets WHERE network_id = n.id AND ip_version = ver);
            got := false;
            FOR s IN SELECT * FROM net.subnets WHERE network_id = n.id AND ip_version = ver
                     ORDER BY created_at, id FOR UPDATE LOOP
                ip := net.alloc_ip(s);
                IF ip IS NOT NULL THEN
                    INSERT INTO net.ip_allocations (subnet_id, ip_address, port_id) VALUES (s.id, ip, pid);
                    got := true;
                    EXIT;
                END IF;
            END LOOP;
            IF NOT got THEN
                PERFORM net.fail(409, 'IpAddressGenerationFailure',
                                 format('No more IP addresses available on network %s.', n.id));
            END IF;
        END LOOP;
        RETURN;
    END IF;
    IF jsonb_typeof(want) <> 'array' OR jsonb_array_length(want) > 16 THEN
        PERFORM net.bad('Invalid input for fixed_ips. Reason: Invalid data format for fixed IP.');
    END IF;
    FOR e IN SELECT * FROM jsonb_array_elements(want) LOOP
        IF jsonb_typeof(e) <> 'object' OR NOT (e ? 'subnet_id' OR e ? 'ip_address')
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(e) k WHERE k NOT IN ('subnet_id', 'ip_address')) THEN
            PERFORM net.bad('Invalid input for fixed_ips. Reason: Invalid data format for fixed IP.');
        END IF;
        ip := CASE WHEN e ? 'ip_address' THEN net.parse_inet(net.get_text(e, 'ip_address', NULL, 64), 'fixed_ips') END;
        sid := net.get_text(e, 'subnet_id', NULL, 64);
        IF sid IS NULL THEN
            SELECT x.id INTO sid FROM net.subnets x WHERE x.network_id = n.id AND ip << x.cidr
            ORDER BY x.created_at LIMIT 1;
            IF sid IS NULL THEN
                PERFORM net.fail(400, 'InvalidInput',
                    format('Invalid input for operation: IP address %s is not a valid IP for any of the subnets on the specified network.', host(ip)));
            END IF;
        END IF;
        SELECT * INTO s FROM net.subnets x WHERE x.id = sid FOR UPDATE;
        IF s.id IS NULL OR s.network_id <> n.id THEN
            PERFORM net.fail(400, 'InvalidInput',
                format('Invalid input for operation: Failed to create port on network %s, because fixed_ips included invalid subnet %s.', n.id, sid));
        END IF;
        IF ip IS NULL THEN
            ip := net.alloc_ip(s);
            IF ip IS NULL THEN
                PERFORM net.fail(409, 'IpAddressGenerationFailure',
                                 format('No more IP addresses available for subnet %s.', s.id));
            END IF;
        ELSIF NOT ip << s.cidr OR (s.ip_version = 4 AND (ip = host(network(s.cidr))::inet
                                   OR ip = host(broadcast(s.cidr))::inet) AND masklen(s.cidr) < 31) THEN
            PERFORM net.fail(400, 'InvalidIpForSubnet',
                format('IP address %s is not a valid IP for the specified subnet.', host(ip)));
        ELSIF EXISTS (SELECT 1 FROM net.ip_allocations WHERE subnet_id = s.id AND ip_address = ip) THEN
            PERFORM net.fail(409, 'IpAddressAlreadyAllocated',
                format('IP address %s already allocated in subnet %s', host(ip), s.id));
        END IF;
        INSERT INTO net.ip_allocations (subnet_id, ip_address, port_id) VALUES (s.id, ip, pid);
    END LOOP;
END $$;

CREATE FUNCTION net.find_port(xid text, ctx jsonb, for_write boolean) RETURNS net.ports
LANGUAGE plpgsql AS $$
DECLARE p net.ports;
BEGIN
    IF for_write THEN
        SELECT * INTO p FROM net.ports WHERE id = xid FOR UPDATE;
    ELSE
        SELECT * INTO p FROM net.ports WHERE id = xid;
    END IF;
    IF p.id IS NULL OR NOT ((ctx ->> 'admin')::boolean OR p.project_id = ctx ->> 'project_id'
            OR EXISTS (SELECT 1 FROM net.networks n WHERE n.id = p.network_id
                       AND n.project_id = ctx ->> 'project_id')) THEN
        PERFORM net.fail(404, 'PortNotFound', format('Port %s could not be found.', xid));
    END IF;
    RETURN p;
END $$;

CREATE FUNCTION net.set_port_sgs(p net.ports, sgs jsonb, ctx jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE e jsonb; g net.security_groups;
BEGIN
    DELETE FROM net.port_security_groups WHERE port_id = p.id;
    IF sgs IS NULL THEN
        IF p.port_security_enabled THEN
            INSERT INTO net.port_security_groups VALUES (p.id, net.default_sg(p.project_id));
        END IF;
        RETURN;
    END IF;
    IF jsonb_typeof(sgs) <> 'array' OR jsonb_array_length(sgs) > 32 THEN
        PERFORM net.bad('Invalid input for security_groups. Reason: expected a list.');
    END IF;
    IF jsonb_array_length(sgs) > 0 AND NOT p.port_security_enabled THEN
        PERFORM net.fail(400, 'PortSecurityAndIPRequiredForSecurityGroups',
                         'Port security must be enabled and port must have an IP address in order to use security groups.');
    END IF;
    FOR e IN SELECT DISTINCT * FROM jsonb_array_elements(sgs) LOOP
        IF jsonb_typeof(e) <> 'string' THEN
            PERFORM net.bad('Invalid input for security_groups.');
        END IF;
        SELECT * INTO g FROM net.security_groups WHERE id = e #>> '{}';
        IF g.id IS NULL OR NOT ((ctx ->> 'admin')::boolean OR g.project_id = p.project_id) THEN
            PERFORM net.fail(404, 'SecurityGroupNotFound', format('Security group %s does not exist', e #>> '{}'));
        END IF;
        INSERT INTO net.port_security_groups VALUES (p.id, g.id);
    END LOOP;
END $$;

CREATE FUNCTION net.check_pairs(v jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE e jsonb; out jsonb := '[]';
BEGIN
    IF jsonb_typeof(v) <> 'array' OR jsonb_array_length(v) > 10 THEN
        PERFORM net.bad('Invalid input for allowed_address_pairs.');
    END IF;
    FOR e IN SELECT * FROM jsonb_array_elements(v) LOOP
        IF jsonb_typeof(e) <> 'object' OR NOT e ? 'ip_address' THEN
            PERFORM net.fail(400, 'AllowedAddressPairsMissingIP', 'AllowedAddressPair must contain ip_address');
        END IF;
        PERFORM net.parse_cidr(CASE WHEN e ->> 'ip_address' LIKE '%/%' THEN e ->> 'ip_address'
                                    ELSE e ->> 'ip_address' || CASE WHEN e ->> 'ip_address' LIKE '%:%' THEN '/128' ELSE '/32' END END,
                               'allowed_address_pairs');
        out := out || jsonb_build_array(jsonb_build_object('ip_address', e ->> 'ip_address',
                                                           'mac_address', e ->> 'mac_address'));
    END LOOP;
    RETURN out;
END $$;

CREATE FUNCTION net.port_create(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    ctx jsonb := req -> 'ctx';
    o jsonb := req -> 'body' -> 'port';
    n net.networks; p net.ports;
    pid text; mac macaddr; tries integer := 0; psec boolean;
BEGIN
    IF o IS NULL OR jsonb_typeof(o) <> 'object' THEN
        PERFORM net.bad('Resource body required');
    END IF;
    PERFORM net.check_keys(o, ARRAY['name', 'description', 'network_id', 'admin_state_up',
        'mac_address', 'fixed_ips', 'device_id', 'device_owner', 'project_id', 'tenant_id',
        'security_groups', 'port_security_enabled', 'allowed_address_pairs',
        'binding:host_id', 'binding:profile', 'binding:vnic_type', 'extra_dhcp_opts',
        'qos_policy_id', 'dns_name'], 'POST');
    IF NOT o ? 'network_id' THEN
        PERFORM net.bad('Failed to parse request. Required attribute ''network_id'' not specified');
    END IF;
    pid := net.owner_of(o, ctx);
    PERFORM net.lock_project(pid);
    n := net.find_network(net.get_text(o, 'network_id', NULL, 64), ctx, false);
    -- KEY SHARE: the network cannot go away under the new port, while
    -- updates of the network row (revision numbers) do not wait.
    PERFORM 1 FROM net.networks WHERE id = n.id FOR KEY SHARE;
    PERFORM net.quota_check(pid, 'port', 1);
    psec := net.get_bool(o, 'port_security_enabled', n.port_security_enabled);

    IF o ? 'mac_address' AND jsonb_typeof(o -> 'mac_address') <> 'null' THEN
        BEGIN
            mac := net.get_text(o, 'mac_address', NULL, 32)::macaddr;
        EXCEPTION WHEN invalid_text_representation THEN
            PERFORM net.bad(format('Invalid input for mac_address. Reason: ''%s'' is not a valid MAC address.', o ->> 'mac_address'));
        END;
        IF EXISTS (SELECT 1 FROM net.ports WHERE mac_address = mac) THEN
            PERFORM net.fail(409, 'MacAddressInUse',
                format('Unable to complete operation for network %s. The mac address %s is in use.', n.id, mac));
        END IF;
    ELSE
        LOOP
            mac := ('fa:16:3e:' || substr(md5(random()::text || clock_timestamp()::text), 1, 2) || ':'
                    || substr(md5(random()::text), 1, 2) || ':' || substr(md5(random()::text), 3, 2))::macaddr;
            EXIT WHEN NOT EXISTS (SELECT 1 FROM net.ports WHERE mac_address = mac);
            tries := tries + 1;
            IF tries > 16 THEN
                PERFORM net.fail(503, 'MacAddressGenerationFailure',
                                 format('Unable to generate unique mac on network %s.', n.id));
            END IF;
        END LOOP;
    END IF;

    INSERT INTO net.ports (id, project_id, network_id, name, description, admin_state_up,
        mac_address, device_id, device_owner, host_id, vnic_type, binding_profile,
        port_security_enabled, allowed_address_pairs)
    VALUES (gen_random_uuid()::text, pid, n.id, net.get_text(o, 'name', ''),
        net.get_text(o, 'description', ''), net.get_bool(o, 'admin_state_up', true), mac,
        net.get_text(o, 'device_id', ''), net.get_text(o, 'device_owner', ''),
        net.get_text(o, 'binding:host_id', ''), net.get_text(o, 'binding:vnic_type', 'normal'),
        coalesce(o -> 'binding:profile', '{}'), psec,
        net.check_pairs(coalesce(o -> 'allowed_address_pairs', '[]')))
    RETURNING * INTO p;
    IF jsonb_typeof(p.binding_profile) <> 'object' THEN
        PERFORM net.bad('Invalid input for binding:profile.');
    END IF;
    PERFORM net.allocate_ips(p.id, n, CASE WHEN jsonb_typeof(o -> 'fixed_ips') IN ('array', 'object', 'string', 'number', 'boolean')
                                           THEN o -> 'fixed_ips' END);
    PERFORM net.set_port_sgs(p, CASE WHEN jsonb_typeof(o -> 'security_groups') <> 'null'
                                     THEN o -> 'security_groups' END, ctx);
    RETURN jsonb_build_object('status', 201, 'body',
        jsonb_build_object('port', net.port_json(p, (ctx ->> 'admin')::boolean)));
END $$;

CREATE FUNCTION net.port_update(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    ctx jsonb := req -> 'ctx';
    o jsonb := req -> 'body' -> 'port';
    p net.ports; n net.networks;
    st text;
BEGIN
    IF o IS NULL OR jsonb_typeof(o) <> 'object' THEN
        PERFORM net.bad('Resource body required');
    END IF;
    PERFORM net.check_keys(o, ARRAY['name', 'description', 'admin_state_up', 'device_id',
        'device_owner', 'security_groups', 'port_security_enabled', 'allowed_address_pairs',
        'fixed_ips', 'binding:host_id', 'binding:profile', 'binding:vnic_type', 'status',
        'extra_dhcp_opts', 'qos_policy_id', 'dns_name'], 'PUT');
    p := net.find_port(req ->> 'id', ctx, true);
    PERFORM net.check_owner(p.project_id, ctx, 'update_port');
    st := net.get_text(o, 'status', p.status);
    IF st NOT IN ('DOWN', 'BUILD', 'ACTIVE', 'ERROR') THEN
        PERFORM net.bad(format('Invalid input for status: %s.', st));
    END IF;
    UPDATE net.ports SET
        name = net.get_text(o, 'name', name),
        description = net.get_text(o, 'description', description),
        admin_state_up = net.get_bool(o, 'admin_state_up', admin_state_up),
        device_id = net.get_text(o, 'device_id', device_id),
        device_owner = net.get_text(o, 'device_owner', device_owner),
        host_id = net.get_text(o, 'binding:host_id', host_id),
        vnic_type = net.get_text(o, 'binding:vnic_type', vnic_type),
        binding_profile = CASE WHEN jsonb_typeof(o -> 'binding:profile') = 'object'
                               THEN o -> 'binding:profile' ELSE binding_profile END,
        port_security_enabled = net.get_bool(o, 'port_security_enabled', port_security_enabled),
        allowed_address_pairs = CASE WHEN o ? 'allowed_address_pairs'
                                     THEN net.check_pairs(coalesce(nullif(o -> 'allowed_address_pairs', 'null'), '[]'))
                                     ELSE allowed_address_pairs END,
        status = st,
        revision_number = revision_number + 1, updated_at = now()
    WHERE id = p.id RETURNING * INTO p;
    IF o ? 'fixed_ips' THEN
        SELECT * INTO n FROM net.networks WHERE id = p.network_id;
        DELETE FROM net.ip_allocations WHERE port_id = p.id;
        PERFORM net.allocate_ips(p.id, n, coalesce(nullif(o -> 'fixed_ips', 'null'), '[]'));
    END IF;
    IF o ? 'security_groups' THEN
        PERFORM net.set_port_sgs(p, coalesce(nullif(o -> 'security_groups', 'null'), '[]'), ctx);
    ELSIF o ? 'port_security_enabled' AND NOT p.port_security_enabled THEN
        IF EXISTS (SELECT 1 FROM net.port_security_groups WHERE port_id = p.id) THEN
            PERFORM net.fail(409, 'PortSecurityPortHasSecurityGroup',
                             'Port has security group associated. Cannot disable port security or IP address until security group is removed.');
        END IF;
    END IF;
    RETURN jsonb_build_object('status', 200, 'body',
        jsonb_build_object('port', net.port_json(p, (ctx ->> 'admin')::boolean)));
END $$;

CREATE FUNCTION net.port_delete(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE ctx jsonb := req -> 'ctx'; p net.ports;
BEGIN
    p := net.find_port(req ->> 'id', ctx, true);
    PERFORM net.check_owner(p.project_id, ctx, 'delete_port');
    DELETE FROM net.ports WHERE id = p.id;
    RETURN jsonb_build_object('status', 204);
END $$;

-- ---------------------------------------------------------------- quotas

CREATE FUNCTION net.quota_update(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE o jsonb := req -> 'body' -> 'quota'; k text; pid text := req ->> 'id';
BEGIN
    IF o IS NULL OR jsonb_typeof(o) <> 'object' THEN
        PERFORM net.bad('Resource body required');
    END IF;
    FOR k IN SELECT jsonb_object_keys(o) LOOP
        IF NOT net.quota_defaults() ? k THEN
            PERFORM net.bad(format('Unrecognized attribute(s) ''%s''', k));
        END IF;
        INSERT INTO net.quotas (project_id, resource, hard_limit)
        VALUES (pid, k, net.get_int(o, k, NULL, -1, 2147483647))
        ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = EXCLUDED.hard_limit;
    END LOOP;
    RETURN jsonb_build_object('status', 200, 'body', jsonb_build_object('quota', net.quota_of(pid)));
END $$;

-- ---------------------------------------------------------------- dispatch

-- List pre-filter: the request's "pre" object maps a few indexed
-- attributes to the values asked for in the query string; rows that
-- cannot match are skipped before their JSON is built (C applies every
-- filter again, so this only has to be a superset).
CREATE FUNCTION net.pre_ok(pre jsonb, k text, v text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT pre IS NULL OR NOT (pre ? k) OR v IN (SELECT jsonb_array_elements_text(pre -> k))
$$;

CREATE FUNCTION net.pre_project(pre jsonb, v text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT net.pre_ok(pre, 'project_id', v) AND net.pre_ok(pre, 'tenant_id', v)
$$;

CREATE FUNCTION net.dispatch(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    ctx jsonb := req -> 'ctx';
    admin boolean := (req -> 'ctx' ->> 'admin')::boolean;
    me text := req -> 'ctx' ->> 'project_id';
    xid text := req ->> 'id';
    pre jsonb := req -> 'pre';
    r jsonb;
BEGIN
    CASE req ->> 'op'
    WHEN 'network_list' THEN
        RETURN jsonb_build_object('status', 200, 'body', coalesce((
            SELECT jsonb_agg(net.network_json(n, admin) ORDER BY n.created_at, n.id)
            FROM net.networks n WHERE net.network_visible(n, ctx)
              AND net.pre_ok(pre, 'id', n.id) AND net.pre_ok(pre, 'name', n.name)
              AND net.pre_project(pre, n.project_id)), '[]'));
    WHEN 'network_show' THEN
        RETURN jsonb_build_object('status', 200, 'body', jsonb_build_object('network',
            net.network_json(net.find_network(xid, ctx, false), admin)));
    WHEN 'network_create' THEN RETURN net.network_create(req);
    WHEN 'network_update' THEN RETURN net.network_update(req);
    WHEN 'network_delete' THEN RETURN net.network_delete(req);
    WHEN 'subnet_list' THEN
        RETURN jsonb_build_object('status', 200, 'body', coalesce((
            SELECT jsonb_agg(net.subnet_json(s) ORDER BY s.created_at, s.id)
            FROM net.subnets s JOIN net.networks n ON n.id = s.network_id
            WHERE (s.project_id = me OR net.network_visible(n, ctx))
              AND net.pre_ok(pre, 'id', s.id) AND net.pre_ok(pre, 'network_id', s.network_id)
              AND net.pre_ok(pre, 'name', s.name) AND net.pre_project(pre, s.project_id)), '[]'));
    WHEN 'subnet_show' THEN
        RETURN jsonb_build_object('status', 200, 'body', jsonb_build_object('subnet',
            net.subnet_json(net.find_subnet(xid, ctx, false))));
    WHEN 'subnet_create' THEN RETURN net.subnet_create(req);
    WHEN 'subnet_update' THEN RETURN net.subnet_update(req);
    WHEN 'subnet_delete' THEN RETURN net.subnet_delete(req);
    WHEN 'port_list' THEN
        RETURN jsonb_build_object('status', 200, 'body', coalesce((
            SELECT jsonb_agg(net.port_json(p, admin) ORDER BY p.created_at, p.id)
            FROM net.ports p
            WHERE (admin OR p.project_id = me
                   OR p.network_id IN (SELECT id FROM net.networks WHERE project_id = me))
              AND net.pre_ok(pre, 'id', p.id) AND net.pre_ok(pre, 'network_id', p.network_id)
              AND net.pre_ok(pre, 'device_id', p.device_id)
              AND net.pre_ok(pre, 'device_owner', p.device_owner)
              AND net.pre_ok(pre, 'binding:host_id', p.host_id)
              AND net.pre_ok(pre, 'name', p.name) AND net.pre_project(pre, p.project_id)), '[]'));
    WHEN 'port_show' THEN
        RETURN jsonb_build_object('status', 200, 'body', jsonb_build_object('port',
            net.port_json(net.find_port(xid, ctx, false), admin)));
    WHEN 'port_create' THEN RETURN net.port_create(req);
    WHEN 'port_update' THEN RETURN net.port_update(req);
    WHEN 'port_delete' THEN RETURN net.port_delete(req);
    WHEN 'sg_list' THEN
        IF me IS NOT NULL AND me <> '' THEN
            PERFORM net.default_sg(me);
        END IF;
        RETURN jsonb_build_object('status', 200, 'body', coalesce((
            SELECT jsonb_agg(net.sg_json(g) ORDER BY g.created_at, g.id)
            FROM net.security_groups g WHERE (admin OR g.project_id = me)
              AND net.pre_ok(pre, 'id', g.id) AND net.pre_ok(pre, 'name', g.name)
              AND net.pre_project(pre, g.project_id)), '[]'));
    WHEN 'sg_show' THEN
        RETURN jsonb_build_object('status', 200, 'body', jsonb_build_object('security_group',
            net.sg_json(net.find_sg(xid, ctx))));
    WHEN 'sg_create' THEN RETURN net.sg_create(req);
    WHEN 'sg_update' THEN RETURN net.sg_update(req);
    WHEN 'sg_delete' THEN RETURN net.sg_delete(req);
    WHEN 'sgr_list' THEN
        IF me IS NOT NULL AND me <> '' THEN
            PERFORM net.default_sg(me);
        END IF;
        RETURN jsonb_build_object('status', 200, 'body', coalesce((
            SELECT jsonb_agg(net.rule_json(x) ORDER BY x.created_at, x.id)
            FROM net.security_group_rules x WHERE (admin OR x.project_id = me)
              AND net.pre_ok(pre, 'id', x.id)
              AND net.pre_ok(pre, 'security_group_id', x.security_group_id)
              AND net.pre_project(pre, x.project_id)), '[]'));
    WHEN 'sgr_show' THEN
        SELECT net.rule_json(x) INTO r FROM net.security_group_rules x
        WHERE x.id = xid AND (admin OR x.project_id = me);
        IF r IS NULL THEN
            PERFORM net.fail(404, 'SecurityGroupRuleNotFound', format('Security group rule %s does not exist', xid));
        END IF;
        RETURN jsonb_build_object('status', 200, 'body', jsonb_build_object('security_group_rule', r));
    WHEN 'sgr_create' THEN RETURN net.sgr_create(req);
    WHEN 'sgr_delete' THEN RETURN net.sgr_delete(req);
    WHEN 'quota_show' THEN
        RETURN jsonb_build_object('status', 200, 'body', jsonb_build_object('quota', net.quota_of(xid)));
    WHEN 'quota_default' THEN
        RETURN jsonb_build_object('status', 200, 'body', jsonb_build_object('quota', net.quota_defaults()));
    WHEN 'quota_update' THEN RETURN net.quota_update(req);
    WHEN 'quota_delete' THEN
        DELETE FROM net.quotas WHERE project_id = xid;
        RETURN jsonb_build_object('status', 204);
    WHEN 'quota_list' THEN
        RETURN jsonb_build_object('status', 200, 'body', jsonb_build_object('quotas', coalesce((
            SELECT jsonb_agg(net.quota_of(q.project_id)
                             || jsonb_build_object('project_id', q.project_id, 'tenant_id', q.project_id)
                             ORDER BY q.project_id)
            FROM (SELECT DISTINCT project_id FROM net.quotas) q), '[]')));
    ELSE
        PERFORM net.fail(404, 'NotFound', 'The resource could not be found.');
    END CASE;
    RETURN NULL;
END $$;

-- The API entry point: never raises for a client error; answers
-- {"status", "body"} or {"status", "type", "message"}.
CREATE FUNCTION net.api(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE msg text; typ text; st text; cname text;
BEGIN
    RETURN net.dispatch(req);
EXCEPTION
    WHEN SQLSTATE 'NX001' THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, typ = PG_EXCEPTION_DETAIL, st = PG_EXCEPTION_HINT;
        RETURN jsonb_build_object('status', st::integer, 'type', typ, 'message', msg);
    WHEN unique_violation THEN
        -- Safety nets behind the explicit checks (concurrent requests).
        GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
        IF cname = 'ip_allocations_pkey' THEN
            RETURN jsonb_build_object('status', 409, 'type', 'IpAddressAlreadyAllocated',
                                      'message', 'The IP address is already allocated.');
        ELSIF cname = 'ports_mac_address_key' THEN
            RETURN jsonb_build_object('status', 409, 'type', 'MacAddressInUse',
                                      'message', 'The mac address is in use.');
        ELSIF cname = 'networks_vxlan_vni' THEN
            RETURN jsonb_build_object('status', 409, 'type', 'TunnelIdInUse',
                                      'message', 'The tunnel ID is in use.');
        END IF;
        RETURN jsonb_build_object('status', 409, 'type', 'Conflict',
                                  'message', 'A resource with these attributes already exists.');
    WHEN foreign_key_violation THEN
        RETURN jsonb_build_object('status', 409, 'type', 'Conflict',
                                  'message', 'The resource is in use or was removed concurrently.');
END $$;
