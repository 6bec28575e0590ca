-- Servers get real ports (Nova with Neutron): the ports of a server are
-- created (or taken over, when the user passed them) in the same transaction
-- as the instance rows, bound to the node when the scheduler claims one,
-- and removed (or released) when the server is gone.  Addresses in the
-- compute API and the ports of the agent's desired document come from them.
--
-- The functions compute_server_create, compute_server_json and
-- compute_agent_instance_json of the compute and agent migrations are kept
-- under a *_base/_rows name and wrapped, so that their bodies are not
-- repeated here.

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
CREATE FUNCTION compute_server_addresses(p_uuid uuid, extended boolean) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(jsonb_object_agg(x.label, x.addrs), '{}'::jsonb) FROM (
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
         GROUP BY n.name) x);
END $$;

ALTER FUNCTION compute_server_json(instances, text, boolean, boolean)
    RENAME TO compute_server_json_base;

CREATE FUNCTION compute_server_json(i instances, base text, admin boolean, detail boolean)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE s jsonb := compute_server_json_base(i, base, admin, detail);
BEGIN
    IF detail THEN
        s := s || jsonb_build_object('addresses', compute_server_addresses(i.uuid, true));
    END IF;
    RETURN s;
END $$;

-- ---- The agent's desired document: each instance's ports (docs/agent-channel.md).
CREATE FUNCTION compute_agent_instance_ports(p_uuid uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object(
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
         WHERE ip.instance_uuid = p_uuid);
END $$;

ALTER FUNCTION compute_agent_instance_json(instances) RENAME TO compute_agent_instance_json_base;

CREATE FUNCTION compute_agent_instance_json(i instances) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN compute_agent_instance_json_base(i)
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
    -- Security groups by name (or id) in the project, for the new ports.
    FOR g IN SELECT * FROM jsonb_array_elements(coalesce(r->'security_groups',
                                                         '[{"name": "default"}]')) LOOP
        nm := g->>'name';
        IF nm = 'default' THEN
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
