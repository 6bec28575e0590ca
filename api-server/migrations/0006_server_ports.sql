-- Servers get real ports (Nova with Neutron): the ports of a server are
-- created (or taken over, when the user passed them) in the same transaction
-- as the instance rows, bound to the node when the scheduler claims one,
-- and removed (or released) when the server is gone.  Addresses in the
-- compute API and the ports of the agent's desired document come from them.
--
-- The functions compute_server_create, compute_server_json and
-- compute_agent_instance_json of the compute and agent migrations are kept
-- under names of their own (compute_server_create_rows,
-- compute_server_json_without_addresses,
-- compute_agent_instance_json_without_ports) and wrapped, so that their
-- bodies are not repeated here; a later migration may wrap the wrappers the
-- same way (the *_base names are left to it).

-- The ports of each instance, in the order the guest sees its NICs.
-- 'created': made by the server create (deleted with the server); otherwise
-- passed by the user (released with the server: device_id and host emptied).
CREATE TABLE instance_ports (
    port_id       text PRIMARY KEY REFERENCES net.ports (id) ON DELETE CASCADE,
    instance_uuid uuid NOT NULL REFERENCES instances (uuid) ON DELETE CASCADE,
    position      integer NOT NULL,
    created       boolean NOT NULL
);
CREATE INDEX instance_ports_instance ON instance_ports (instance_uuid, position);

-- ---- Addresses, as Nova shows them: {"<network name>": [{"version", "addr"}
-- (+ "OS-EXT-IPS:type", "OS-EXT-IPS-MAC:mac_addr" when 'extended')]}.  A
-- port without an address still names its network (with an empty list).
-- SQL rather than plpgsql: called once per server of a list, its plan is
-- made once per statement, where plpgsql planned this join on every call.
CREATE FUNCTION compute_server_addresses(p_uuid uuid, extended boolean) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_object_agg(x.label, x.addrs), '{}'::jsonb) FROM (
        SELECT n.name AS label, coalesce(jsonb_agg(
                   jsonb_build_object('version', family(a.ip_address), 'addr', host(a.ip_address))
                   || CASE WHEN extended THEN jsonb_build_object(
                          'OS-EXT-IPS:type', 'fixed',
                          'OS-EXT-IPS-MAC:mac_addr', p.mac_address::text)
                      ELSE '{}'::jsonb END
                   ORDER BY ip.position, family(a.ip_address), a.ip_address)
                   FILTER (WHERE a.ip_address IS NOT NULL), '[]'::jsonb) AS addrs
          FROM instance_ports ip
          JOIN net.ports p ON p.id = ip.port_id
          JOIN net.networks n ON n.id = p.network_id
          LEFT JOIN net.ip_allocations a ON a.port_id = p.id
         WHERE ip.instance_uuid = p_uuid
         GROUP BY n.name) x
$$;

ALTER FUNCTION compute_server_json(instances, text, boolean, boolean)
    RENAME TO compute_server_json_without_addresses;

CREATE FUNCTION compute_server_json(i instances, base text, admin boolean, detail boolean)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE s jsonb := compute_server_json_without_addresses(i, base, admin, detail);
BEGIN
    IF detail THEN
        s := s || jsonb_build_object('addresses', compute_server_addresses(i.uuid, true));
    END IF;
    RETURN s;
END $$;

-- ---- The agent's desired document: each instance's ports (docs/agent-channel.md).
CREATE FUNCTION compute_agent_instance_ports(p_uuid uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
            'id', p.id, 'mac', p.mac_address::text,
            'tap', 'tap' || left(replace(p.id, '-', ''), 11),
            'kind', CASE WHEN p.device_owner LIKE 'compute:container%' THEN 'veth' ELSE 'tap' END,
            'network_id', p.network_id, 'mtu', n.mtu,
            'fixed_ips', coalesce((
                SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                           'ip_address', host(a.ip_address), 'prefixlen', masklen(s.cidr),
                           'gateway', host(s.gateway_ip)))
                       ORDER BY family(a.ip_address), a.ip_address)
                  FROM net.ip_allocations a JOIN net.subnets s ON s.id = a.subnet_id
                 WHERE a.port_id = p.id), '[]'::jsonb))
            ORDER BY ip.position), '[]'::jsonb)
          FROM instance_ports ip
          JOIN net.ports p ON p.id = ip.port_id
          JOIN net.networks n ON n.id = p.network_id
         WHERE ip.instance_uuid = p_uuid
$$;

ALTER FUNCTION compute_agent_instance_json(instances)
    RENAME TO compute_agent_instance_json_without_ports;

CREATE FUNCTION compute_agent_instance_json(i instances) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN compute_agent_instance_json_without_ports(i)
           || jsonb_build_object('ports', compute_agent_instance_ports(i.uuid));
END $$;

-- A port added to or removed from an instance changes its node's document.
CREATE FUNCTION compute_instance_ports_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE u uuid;
BEGIN
    IF TG_OP = 'DELETE' THEN u := OLD.instance_uuid; ELSE u := NEW.instance_uuid; END IF;
    PERFORM compute_agent_bump((SELECT node FROM instances WHERE uuid = u AND NOT deleted));
    RETURN NULL;
END $$;
CREATE TRIGGER instance_ports_desired AFTER INSERT OR DELETE ON instance_ports
    FOR EACH ROW EXECUTE FUNCTION compute_instance_ports_changed();

-- An address of an instance's port changed through the network API
-- (PUT /v2.0/ports/{id} fixed_ips): the node's document changes too.
CREATE FUNCTION compute_port_addresses_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE pid text;
BEGIN
    IF TG_OP = 'DELETE' THEN pid := OLD.port_id; ELSE pid := NEW.port_id; END IF;
    PERFORM compute_agent_bump((SELECT i.node FROM instance_ports ip
                                  JOIN instances i ON i.uuid = ip.instance_uuid
                                 WHERE ip.port_id = pid AND NOT i.deleted));
    RETURN NULL;
END $$;
CREATE TRIGGER ip_allocations_desired AFTER INSERT OR DELETE ON net.ip_allocations
    FOR EACH ROW EXECUTE FUNCTION compute_port_addresses_changed();

-- ---- Binding.  When the scheduler claims a node (instances.node set),
-- the instance's ports get binding:host_id = the node, so that the
-- network agent there wires them before the compute agent starts the
-- guest; a reschedule (node cleared or changed) moves or clears it.  When
-- the instance is gone (deleted), the ports it created are deleted and
-- the ports the user passed are released.
CREATE FUNCTION compute_instance_ports_bind() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted AND NOT OLD.deleted THEN
        DELETE FROM net.ports p USING instance_ports ip
         WHERE ip.instance_uuid = NEW.uuid AND ip.created AND p.id = ip.port_id;
        UPDATE net.ports p SET device_id = '', device_owner = '', host_id = '', status = 'DOWN',
               revision_number = p.revision_number + 1, updated_at = now()
          FROM instance_ports ip
         WHERE ip.instance_uuid = NEW.uuid AND NOT ip.created AND p.id = ip.port_id
           AND p.device_id = NEW.uuid::text;
        DELETE FROM instance_ports WHERE instance_uuid = NEW.uuid;
    ELSIF NEW.node IS DISTINCT FROM OLD.node AND NOT NEW.deleted THEN
        UPDATE net.ports p SET host_id = coalesce(NEW.node, ''),
               status = CASE WHEN NEW.node IS NULL THEN 'DOWN' ELSE p.status END,
               revision_number = p.revision_number + 1, updated_at = now()
          FROM instance_ports ip
         WHERE ip.instance_uuid = NEW.uuid AND p.id = ip.port_id
           AND p.host_id IS DISTINCT FROM coalesce(NEW.node, '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER instances_ports_binding AFTER UPDATE OF node, deleted ON instances
    FOR EACH ROW WHEN (NEW.node IS DISTINCT FROM OLD.node OR NEW.deleted <> OLD.deleted)
    EXECUTE FUNCTION compute_instance_ports_bind();

-- ---- Server creation with ports.

-- A failure of the network module (net.fail: SQLSTATE NX001, DETAIL the
-- Neutron type, HINT the status) as Nova answers it.
CREATE FUNCTION compute_port_error(st integer, typ text, msg text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('code', CASE
            WHEN typ = 'OverQuota' THEN 403
            WHEN typ = 'IpAddressGenerationFailure' THEN 409
            WHEN typ IN ('PortInUse', 'MacAddressInUse') THEN 409
            WHEN st IN (400, 404, 409) THEN 400
            ELSE st END,
        'message', CASE WHEN typ = 'OverQuota' THEN 'Maximum number of ports exceeded'
                        ELSE msg END)
$$;

-- The port of one requested network ('e': {"uuid", "fixed_ip"}) for
-- instance 'i'; returns its id.
CREATE FUNCTION compute_create_port(i instances, e jsonb, owner text, sgs jsonb, admin boolean)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    o jsonb := jsonb_build_object('network_id', e->>'uuid', 'device_id', i.uuid::text,
                                  'device_owner', owner);
    res jsonb;
BEGIN
    IF e->>'fixed_ip' IS NOT NULL THEN
        o := o || jsonb_build_object('fixed_ips', jsonb_build_array(
                      jsonb_build_object('ip_address', e->>'fixed_ip')));
    END IF;
    IF (SELECT port_security_enabled FROM net.networks WHERE id = e->>'uuid') THEN
        o := o || jsonb_build_object('security_groups', sgs);
    END IF;
    res := net.port_create(jsonb_build_object(
        'ctx', jsonb_build_object('project_id', i.project_id, 'admin', admin),
        'body', jsonb_build_object('port', o)));
    RETURN res->'body'->'port'->>'id';
END $$;

ALTER FUNCTION compute_server_create(jsonb) RENAME TO compute_server_create_rows;

-- 'r' as for compute_server_create_rows, plus "auto_network": true when the
-- request named no networks (Nova's rule: the one network the project can
-- use, if there is exactly one).  Each element of "networks" is
-- {"uuid"[, "fixed_ip"]} (a new port) or {"port"} (the user's port).
-- Returns as compute_server_create_rows does; nothing is written on error.
CREATE FUNCTION compute_server_create(r jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    proj text := r->>'project_id';
    admin boolean := coalesce((r->>'admin')::boolean, false);
    nets jsonb := CASE WHEN jsonb_typeof(r->'networks') = 'array' THEN r->'networks'
                       ELSE '[]'::jsonb END;
    want_max integer := coalesce((r->>'max_count')::int, (r->>'min_count')::int, 1);
    e jsonb; g jsonb; p net.ports; res jsonb; i instances;
    n_nets integer; net_id text; gid text; nm text;
    sgs jsonb := '[]'; owner text; pos integer; pid text;
    msg text; typ text; st text; cname text;
BEGIN
    IF coalesce((r->>'auto_network')::boolean, false) AND jsonb_array_length(nets) = 0 THEN
        SELECT count(*), min(id) INTO n_nets, net_id FROM net.networks
         WHERE project_id = proj OR shared;
        IF n_nets > 1 THEN
            RETURN jsonb_build_object('code', 409, 'message',
                'Multiple possible networks found, use a Network ID to be more specific.');
        ELSIF n_nets = 1 THEN
            nets := jsonb_build_array(jsonb_build_object('uuid', net_id));
            r := r || jsonb_build_object('networks', nets);
        END IF;
    END IF;
    -- Security groups by name (or id) in the project, for the new ports
    -- (unknown names fail even without ports, as in Nova).
    FOR g IN SELECT * FROM jsonb_array_elements(coalesce(r->'security_groups',
                                                         '[{"name": "default"}]')) LOOP
        nm := g->>'name';
        IF nm = 'default' THEN
            -- Created on first use, so only when a port will have it.
            CONTINUE WHEN jsonb_array_length(nets) = 0;
            gid := net.default_sg(proj);
        ELSE
            SELECT count(*), min(id) INTO n_nets, gid FROM net.security_groups
             WHERE project_id = proj AND (name = nm OR id = nm);
            IF n_nets = 0 THEN
                RETURN jsonb_build_object('code', 400, 'message',
                    format('Security group %s not found.', nm));
            ELSIF n_nets > 1 THEN
                RETURN jsonb_build_object('code', 409, 'message', format(
                    'Multiple security groups found matching ''%s''. Use an ID to be more '
                    'specific.', nm));
            END IF;
        END IF;
        IF NOT sgs ? gid THEN
            sgs := sgs || to_jsonb(gid);
        END IF;
    END LOOP;
    IF jsonb_array_length(nets) = 0 THEN
        RETURN compute_server_create_rows(r);
    END IF;

    IF want_max > 1 AND EXISTS (SELECT 1 FROM jsonb_array_elements(nets) x
                                WHERE x->>'port' IS NOT NULL) THEN
        RETURN jsonb_build_object('code', 400, 'message',
            'Unable to launch multiple instances with a single configured port ID. Please '
            'launch your instance one by one with different ports.');
    END IF;
    IF want_max > 1 AND EXISTS (SELECT 1 FROM jsonb_array_elements(nets) x
                                WHERE x->>'fixed_ip' IS NOT NULL) THEN
        RETURN jsonb_build_object('code', 400, 'message',
            'max_count cannot be greater than 1 if an fixed_ip is specified.');
    END IF;
    IF (SELECT count(*) <> count(DISTINCT x->>'port') FROM jsonb_array_elements(nets) x
         WHERE x->>'port' IS NOT NULL) THEN
        RETURN jsonb_build_object('code', 400, 'message',
            'The same port is requested more than once.');
    END IF;
    -- The user's ports: visible to the project (else 400, as Nova's
    -- PortNotFound) and not in use by another device (409).
    FOR e IN SELECT x FROM jsonb_array_elements(nets) x WHERE x->>'port' IS NOT NULL LOOP
        SELECT * INTO p FROM net.ports WHERE id = e->>'port' FOR UPDATE;
        IF p.id IS NULL OR NOT (admin OR p.project_id = proj) THEN
            RETURN jsonb_build_object('code', 400, 'message',
                format('Port id %s could not be found.', e->>'port'));
        END IF;
        IF p.device_id <> '' THEN
            RETURN jsonb_build_object('code', 409, 'message',
                format('Port %s is still in use.', p.id));
        END IF;
    END LOOP;
    owner := CASE WHEN EXISTS (SELECT 1 FROM images im
                               WHERE im.id::text = lower(coalesce(r->>'image_ref', ''))
                                 AND im.container_format IN ('docker', 'ociarchive'))
                  THEN 'compute:container' ELSE 'compute:nova' END;

    -- The rows and the ports together: a failed port undoes the rows.
    BEGIN
        res := compute_server_create_rows(r);
        IF (res->>'code')::int <> 202 THEN
            RETURN res;
        END IF;
        FOR i IN SELECT * FROM instances WHERE project_id = proj AND NOT deleted
                    AND reservation_id = res->>'reservation_id' ORDER BY launch_index LOOP
            pos := 0;
            FOR e IN SELECT * FROM jsonb_array_elements(nets) LOOP
                IF e->>'port' IS NOT NULL THEN
                    UPDATE net.ports SET device_id = i.uuid::text, device_owner = owner,
                           revision_number = revision_number + 1, updated_at = now()
                     WHERE id = e->>'port' RETURNING id INTO pid;
                    INSERT INTO instance_ports VALUES (pid, i.uuid, pos, false);
                ELSE
                    pid := compute_create_port(i, e, owner, sgs, admin);
                    INSERT INTO instance_ports VALUES (pid, i.uuid, pos, true);
                END IF;
                pos := pos + 1;
            END LOOP;
        END LOOP;
        RETURN res;
    EXCEPTION
        WHEN SQLSTATE 'NX001' THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, typ = PG_EXCEPTION_DETAIL,
                                    st = PG_EXCEPTION_HINT;
            RETURN compute_port_error(st::integer, typ, msg);
        WHEN unique_violation THEN
            GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
            RETURN jsonb_build_object('code', 409, 'message', CASE cname
                WHEN 'instance_ports_pkey' THEN 'A requested port is already in use.'
                WHEN 'ip_allocations_pkey' THEN 'The requested fixed IP is already in use.'
                ELSE 'A port could not be created; try again.' END);
    END;
END $$;

-- ---- os-interface: the ports of a server as interfaceAttachments.
CREATE FUNCTION compute_interface_json(p net.ports) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN jsonb_build_object(
        'port_state', p.status, 'port_id', p.id, 'net_id', p.network_id,
        'mac_addr', p.mac_address::text,
        'fixed_ips', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                   'subnet_id', a.subnet_id, 'ip_address', host(a.ip_address))
                                   ORDER BY family(a.ip_address), a.ip_address)
                               FROM net.ip_allocations a WHERE a.port_id = p.id), '[]'::jsonb));
END $$;

CREATE FUNCTION compute_interfaces_json(p_uuid uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(compute_interface_json(p) ORDER BY ip.position), '[]'::jsonb)
      FROM instance_ports ip JOIN net.ports p ON p.id = ip.port_id
     WHERE ip.instance_uuid = p_uuid
$$;

-- Locks instance 'p_uuid' into 'i' for an interface change by the caller
-- 'c' ({user_id, project_id, request_id, admin}); returns an error answer,
-- or NULL when the change may go ahead.
CREATE FUNCTION compute_interface_instance(p_uuid uuid, c jsonb, verb text, INOUT i instances,
                                           OUT err jsonb)
LANGUAGE plpgsql AS $$
DECLARE admin boolean := coalesce((c->>'admin')::boolean, false);
BEGIN
    -- The node's row first: the order of agent reports (no deadlock).
    PERFORM 1 FROM agent_nodes WHERE name = (SELECT node FROM instances WHERE uuid = p_uuid)
        FOR UPDATE;
    SELECT * INTO i FROM instances WHERE uuid = p_uuid AND NOT deleted
       AND (admin OR project_id = c->>'project_id') FOR UPDATE;
    IF NOT FOUND THEN
        err := jsonb_build_object('code', 404, 'message',
                                  format('Instance %s could not be found.', p_uuid));
    ELSIF i.locked AND NOT admin THEN
        err := jsonb_build_object('code', 409, 'message', format('Instance %s is locked', p_uuid));
    ELSIF i.vm_state NOT IN ('active', 'paused', 'stopped') OR i.task_state IS NOT NULL THEN
        err := jsonb_build_object('code', 409, 'message', format(
            'Cannot ''%s'' instance %s while it is in %s %s', verb, p_uuid,
            CASE WHEN i.task_state IS NOT NULL THEN 'task_state' ELSE 'vm_state' END,
            coalesce(i.task_state, i.vm_state)));
    END IF;
END $$;

-- POST /servers/{id}/os-interface: 'a' is the checked interfaceAttachment
-- ({"port_id"} or {"net_id"[, "fixed_ips": [{"ip_address"}]]} or {}: the
-- one network the project can use).  Returns {"code", "body"|"message"}.
CREATE FUNCTION compute_interface_attach(p_uuid uuid, a jsonb, c jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    admin boolean := coalesce((c->>'admin')::boolean, false);
    i instances; err jsonb; p net.ports; n_nets integer; x record;
    net_id text := a->>'net_id'; pid text; pos integer; owner text; made boolean;
    msg text; typ text; st text;
BEGIN
    SELECT * INTO x FROM compute_interface_instance(p_uuid, c, 'attach_interface', NULL);
    i := x.i;
    err := x.err;
    IF err IS NOT NULL THEN RETURN err; END IF;
    SELECT coalesce(max(position) + 1, 0) INTO pos FROM instance_ports WHERE instance_uuid = i.uuid;
    IF pos >= 8 THEN
        RETURN jsonb_build_object('code', 403, 'message',
                                  'Maximum number of interfaces (8) per server reached.');
    END IF;
    owner := CASE WHEN EXISTS (SELECT 1 FROM images im WHERE im.id::text = lower(i.image_ref)
                                  AND im.container_format IN ('docker', 'ociarchive'))
                  THEN 'compute:container' ELSE 'compute:nova' END;
    BEGIN
        IF a->>'port_id' IS NOT NULL THEN
            SELECT * INTO p FROM net.ports WHERE id = a->>'port_id' FOR UPDATE;
            IF p.id IS NULL OR NOT (admin OR p.project_id = i.project_id) THEN
                RETURN jsonb_build_object('code', 404, 'message',
                    format('Port id %s could not be found.', a->>'port_id'));
            END IF;
            IF p.device_id <> '' THEN
                RETURN jsonb_build_object('code', 409, 'message',
                    format('Port %s is still in use.', p.id));
            END IF;
            pid := p.id;
            made := false;
            UPDATE net.ports SET device_id = i.uuid::text, device_owner = owner,
                   revision_number = revision_number + 1, updated_at = now()
             WHERE id = pid;
        ELSE
            IF net_id IS NULL THEN
                SELECT count(*), min(id) INTO n_nets, net_id FROM net.networks
                 WHERE project_id = i.project_id OR shared;
                IF n_nets > 1 THEN
                    RETURN jsonb_build_object('code', 409, 'message',
                        'Multiple possible networks found, use a Network ID to be more specific.');
                ELSIF n_nets = 0 THEN
                    RETURN jsonb_build_object('code', 400, 'message',
                                              'No network is available to attach.');
                END IF;
            ELSIF NOT EXISTS (SELECT 1 FROM net.networks n WHERE n.id = net_id
                              AND (n.project_id = i.project_id OR n.shared OR admin)) THEN
                RETURN jsonb_build_object('code', 404, 'message',
                    format('Network %s could not be found.', net_id));
            END IF;
            pid := compute_create_port(i, jsonb_strip_nulls(jsonb_build_object(
                       'uuid', net_id, 'fixed_ip', a->'fixed_ips'->0->>'ip_address')),
                   owner, jsonb_build_array(net.default_sg(i.project_id)), admin);
            made := true;
        END IF;
        UPDATE net.ports SET host_id = coalesce(i.node, '') WHERE id = pid;
        INSERT INTO instance_ports VALUES (pid, i.uuid, pos, made);
    EXCEPTION
        WHEN SQLSTATE 'NX001' THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, typ = PG_EXCEPTION_DETAIL,
                                    st = PG_EXCEPTION_HINT;
            RETURN compute_port_error(st::integer, typ, msg);
        WHEN unique_violation THEN
            RETURN jsonb_build_object('code', 409, 'message', 'The port is already in use.');
    END;
    PERFORM compute_record_action(i.uuid, 'attach_interface', c->>'request_id', c->>'user_id',
                                  c->>'project_id', true);
    SELECT * INTO p FROM net.ports WHERE id = pid;
    RETURN jsonb_build_object('code', 200, 'body',
                              jsonb_build_object('interfaceAttachment', compute_interface_json(p)));
END $$;

-- DELETE /servers/{id}/os-interface/{port_id}: the port is deleted when the
-- server created it, released when the user passed it.
CREATE FUNCTION compute_interface_detach(p_uuid uuid, p_port text, c jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE i instances; err jsonb; ip instance_ports; x record;
BEGIN
    SELECT * INTO x FROM compute_interface_instance(p_uuid, c, 'detach_interface', NULL);
    i := x.i;
    err := x.err;
    IF err IS NOT NULL THEN RETURN err; END IF;
    SELECT * INTO ip FROM instance_ports WHERE port_id = p_port AND instance_uuid = i.uuid;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('code', 404, 'message',
                                  format('Port id %s could not be found.', p_port));
    END IF;
    IF ip.created THEN
        DELETE FROM net.ports WHERE id = p_port;
    ELSE
        UPDATE net.ports SET device_id = '', device_owner = '', host_id = '', status = 'DOWN',
               revision_number = revision_number + 1, updated_at = now()
         WHERE id = p_port;
        DELETE FROM instance_ports WHERE port_id = p_port;
    END IF;
    PERFORM compute_record_action(i.uuid, 'detach_interface', c->>'request_id', c->>'user_id',
                                  c->>'project_id', true);
    RETURN jsonb_build_object('code', 202);
END $$;
