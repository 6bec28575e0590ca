-- Live migration of servers with ports (docs/compute.md "Moving servers
-- between hosts", docs/network.md "Ports moving live"), as Nova and
-- Neutron's ML2 do it: while the guest moves, each port of the server
-- carries its destination in binding:profile as "migrating_to"; the
-- destination's network agent wires such ports too (it lists them with
-- the Nimbus list filter binding:profile.migrating_to=<its host>), so
-- that the device the arriving guest opens exists before libvirt on the
-- destination needs it, and the destination's compute agent reports
-- itself prepared only once they exist.  The binding itself
-- (binding:host_id) stays on the source until the source reports the
-- guest gone (the trigger of 0006 then moves it with instances.node);
-- a failed move or a delete during the move only drops migrating_to.
--
-- Functions of earlier migrations are wrapped, not rewritten: renamed to
-- <name>_pre_lp and called by the new function of the old name.  This
-- replaces 0015's os-migrateLive (which refused servers with ports with
-- 409); the other actions still go to it.

-- The node a port's instance is moving live to; NULL otherwise.  Kept
-- apart from binding_profile (which agents and admins write) so that no
-- PUT of binding:profile can set or keep it: the API alone owns it.
ALTER TABLE net.ports ADD COLUMN migrating_to text;

-- ---- Shown in binding:profile (admins only, like every binding field).
ALTER FUNCTION net.port_json(net.ports, boolean) RENAME TO port_json_pre_lp;

CREATE FUNCTION net.port_json(p net.ports, admin boolean) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE j jsonb := net.port_json_pre_lp(p, admin);
BEGIN
    IF admin AND p.migrating_to IS NOT NULL THEN
        j := jsonb_set(j, '{binding:profile}', coalesce(j -> 'binding:profile', '{}'::jsonb)
                       || jsonb_build_object('migrating_to', p.migrating_to));
    END IF;
    RETURN j;
END $$;

-- A "migrating_to" in a binding:profile written through the port API is
-- dropped: a network agent writes back the profile it read (with its
-- vtep_ip), which may still carry the key after the move ended.
CREATE FUNCTION net.profile_without_migrating_to(req jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(req #> '{body,port,binding:profile}') = 'object'
                THEN jsonb_set(req, '{body,port,binding:profile}',
                               (req #> '{body,port,binding:profile}') - 'migrating_to')
                ELSE req END
$$;

ALTER FUNCTION net.port_create(jsonb) RENAME TO port_create_pre_lp;

CREATE FUNCTION net.port_create(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN net.port_create_pre_lp(net.profile_without_migrating_to(req));
END $$;

ALTER FUNCTION net.port_update(jsonb) RENAME TO port_update_pre_lp;

CREATE FUNCTION net.port_update(req jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN net.port_update_pre_lp(net.profile_without_migrating_to(req));
END $$;

-- ---- migrating_to follows the instance: set to the destination while
-- it moves live (task_state migrating with a 'live_dest' copy held),
-- dropped when that ends in any way: the move done (0015's
-- compute_live_done, in the same statement that moves instances.node and
-- with it binding:host_id), failed (compute_live_failed), the server
-- deleted (compute_instance_destroyed gives up the copy) or its state
-- reset by an admin.
CREATE FUNCTION compute_instance_ports_migrating() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    dest text := CASE WHEN NEW.task_state = 'migrating' AND NEW.move_held_state = 'live_dest'
                           AND NOT NEW.deleted THEN NEW.move_held_node END;
BEGIN
    UPDATE net.ports p SET migrating_to = dest,
           revision_number = p.revision_number + 1, updated_at = now()
      FROM instance_ports ip
     WHERE ip.instance_uuid = NEW.uuid AND p.id = ip.port_id
       AND p.migrating_to IS DISTINCT FROM dest;
    RETURN NULL;
END $$;
CREATE TRIGGER instances_ports_migrating
    AFTER UPDATE OF task_state, move_held_state, move_held_node, deleted ON instances
    FOR EACH ROW WHEN (
        (CASE WHEN NEW.task_state = 'migrating' AND NEW.move_held_state = 'live_dest'
                   AND NOT NEW.deleted THEN NEW.move_held_node END)
        IS DISTINCT FROM
        (CASE WHEN OLD.task_state = 'migrating' AND OLD.move_held_state = 'live_dest'
                   AND NOT OLD.deleted THEN OLD.move_held_node END))
    EXECUTE FUNCTION compute_instance_ports_migrating();

-- ---- os-migrateLive: 0015's checks and claim, servers with ports
-- included.
ALTER FUNCTION compute_server_action(uuid, text, jsonb, jsonb)
    RENAME TO compute_server_action_pre_lp;

CREATE FUNCTION compute_server_action(p_uuid uuid, p_action text, a jsonb, c jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    i instances;
    err jsonb;
    ai record;
    n record;
    dst compute_nodes;
    k text;
BEGIN
    IF p_action <> 'os-migrateLive' THEN
        RETURN compute_server_action_pre_lp(p_uuid, p_action, a, c);
    END IF;
    IF jsonb_typeof(a) <> 'object' OR NOT (a ? 'block_migration') OR NOT (a ? 'host') THEN
        RETURN jsonb_build_object('code', 400, 'message',
            'Invalid input for field/attribute os-migrateLive: block_migration and host '
            'are required.');
    END IF;
    FOR k IN SELECT jsonb_object_keys(a) LOOP
        IF k NOT IN ('host', 'block_migration', 'disk_over_commit') THEN
            RETURN jsonb_build_object('code', 400, 'message', format(
                'Invalid input for field/attribute os-migrateLive. Additional properties are '
                'not allowed (%s was unexpected)', left(k, 64)));
        END IF;
    END LOOP;
    IF NOT (jsonb_typeof(a->'block_migration') = 'boolean'
            OR (jsonb_typeof(a->'block_migration') = 'string'
                AND lower(a->>'block_migration') IN ('auto', 'true', 'false', '1', '0', 'yes',
                                                      'no', 'on', 'off'))) THEN
        RETURN jsonb_build_object('code', 400, 'message',
            'Invalid input for field/attribute block_migration.');
    END IF;
    IF a ? 'disk_over_commit' AND NOT (jsonb_typeof(a->'disk_over_commit') = 'boolean'
            OR (jsonb_typeof(a->'disk_over_commit') = 'string'
                AND lower(a->>'disk_over_commit') IN ('true', 'false', '1', '0', 'yes', 'no',
                                                       'on', 'off'))) THEN
        RETURN jsonb_build_object('code', 400, 'message',
            'Invalid input for field/attribute disk_over_commit.');
    END IF;
    ai := compute_action_instance(p_uuid, 'os-migrateLive', c, ARRAY['active', 'paused']);
    i := ai.i; err := ai.err;
    IF i.uuid IS NULL OR err IS NOT NULL THEN RETURN err; END IF;
    IF compute_instance_is_container(i) THEN
        RETURN jsonb_build_object('code', 409, 'message', format(
            'Cannot ''os-migrateLive'' instance %s: containers cannot move live between hosts.',
            p_uuid));
    END IF;
    IF a->>'host' IS NOT NULL AND (a->>'host' = i.host OR a->>'host' = i.node) THEN
        RETURN jsonb_build_object('code', 400, 'message', format(
            'Unable to migrate instance (%s) to current host (%s).', p_uuid, i.host));
    END IF;
    -- Only nodes another libvirtd can reach are candidates; among them the
    -- filters and the claim of a cold move.
    FOR n IN
        SELECT c2.hypervisor_hostname FROM compute_nodes c2
          JOIN agent_nodes an ON an.name = c2.hypervisor_hostname
         WHERE an.libvirt_uri IS NOT NULL AND c2.hypervisor_hostname IS DISTINCT FROM i.node
           AND (a->>'host' IS NULL OR c2.host = a->>'host'
                OR c2.hypervisor_hostname = a->>'host')
         ORDER BY c2.memory_mb_used::float8 / greatest(c2.memory_mb, 1), c2.id
    LOOP
        dst := compute_move_claim(i, i.vcpus, i.memory_mb, i.root_gb + i.ephemeral_gb,
                                  n.hypervisor_hostname, i.node IS NOT NULL);
        EXIT WHEN dst.id IS NOT NULL;
    END LOOP;
    IF dst.id IS NULL THEN
        RETURN compute_move_no_host(p_uuid, 'live-migration', 'conductor_live_migrate_instance',
                                    c);
    END IF;
    IF i.node IS NULL THEN
        -- No node (an instance placed by hand): nothing to move from.
        RETURN jsonb_build_object('code', 409, 'message', format(
            'Cannot ''os-migrateLive'' instance %s: it has no host.', p_uuid));
    END IF;
    INSERT INTO migrations (instance_uuid, project_id, user_id, migration_type, status,
                            source_compute, source_node, dest_compute, dest_node, dest_host,
                            old_instance_type_id, new_instance_type_id)
    VALUES (i.uuid, i.project_id, c->>'user_id', 'live-migration', 'preparing', i.host, i.node,
            dst.host, dst.hypervisor_hostname, dst.host_ip, i.flavor_id, i.flavor_id);
    UPDATE instances SET task_state = 'migrating', move_held_node = dst.hypervisor_hostname,
           move_held_state = 'live_dest', updated_at = clock_timestamp()
     WHERE uuid = p_uuid;
    PERFORM compute_record_action(p_uuid, 'live-migration', c->>'request_id', c->>'user_id',
                                  c->>'project_id', false);
    RETURN jsonb_build_object('code', 202);
END $$;

