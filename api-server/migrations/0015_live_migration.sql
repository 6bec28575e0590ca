-- Live migration (os-migrateLive), carried out by the agents with the
-- provider's migrate_live (docs/compute.md "Moving servers between hosts",
-- docs/compute-agent.md "Live migration").
--
-- Step by step:
--   1. The API claims a destination with compute_move_claim() (the filters
--      of a create), among the nodes whose agent registered a libvirt URI
--      ([hypervisor] migration_uri).  The instance stays on its node
--      (ACTIVE or PAUSED, task_state migrating); the destination holds a
--      copy (move_held_state 'live_dest'), the migration row is
--      'live-migration' / 'preparing'.
--   2. The destination's document has the instance with action "live_in":
--      its agent makes the storage (the base image in its cache, an empty
--      overlay on it at its own path), does not define the guest, and
--      reports the domain definition it would give it
--      (hv_migration_dest_xml: its node name, its paths) and its instance
--      directory in the observed entry ("live_migration").  The row goes
--      'running'; the API keeps them in the row.
--   3. The source's document then has the instance with action "live_out",
--      the destination's libvirt URI, definition and directory, at a new
--      generation: its agent calls migrate_live.  On success the guest is
--      gone from the source (reported "deleted" at the generation; the
--      call returns once the guest runs on the destination): the
--      instance's node is the destination, task_state none, the source's
--      usage given back and its storage deleted (held copy 'delete'), the
--      row 'completed'.  On
--      failure (or a provider without migrate_live) the source reports the
--      guest still running at the generation with the reason as its fault:
--      the destination's claim is given back and its storage deleted, the
--      server stays on the source, the row 'error', the instance action
--      ends in Error with the reason.
--
-- Functions of earlier migrations are wrapped, not rewritten: renamed to
-- <name>_pre_live and called by the new function of the old name.

ALTER TABLE migrations
    -- What the destination reported at step 2, for the source's document.
    ADD COLUMN live_dest_xml text,
    ADD COLUMN live_dest_dir text;

ALTER TABLE instances DROP CONSTRAINT instances_agent_action_check,
    ADD CONSTRAINT instances_agent_action_check
        CHECK (agent_action IN ('', 'resize', 'snapshot', 'rebuild', 'migrate', 'rescue',
                                'unrescue', 'live_migrate'));
ALTER TABLE instances DROP CONSTRAINT instances_move_held_state_check,
    ADD CONSTRAINT instances_move_held_state_check
        CHECK (move_held_state IN ('source', 'delete', 'live_dest'));

-- A live migration that could not be carried out: the destination gives
-- back its claim and deletes what it prepared, the server stays where it
-- is, the row and the instance action end in error with 'reason'.
CREATE FUNCTION compute_live_failed(i instances, m migrations, reason text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF i.move_held_state = 'live_dest' THEN
        PERFORM compute_move_release(i.move_held_node, i.vcpus, i.memory_mb,
                                     i.root_gb + i.ephemeral_gb);
    END IF;
    UPDATE instances SET move_held_state = CASE WHEN move_held_state = 'live_dest'
                                                THEN 'delete' ELSE move_held_state END,
           task_state = NULL, agent_action = '', agent_reboot = '',
           agent_generation = i.agent_generation + 1, updated_at = clock_timestamp()
     WHERE uuid = i.uuid;
    UPDATE migrations SET status = 'error', live_dest_xml = NULL, updated_at = clock_timestamp()
     WHERE id = m.id;
    INSERT INTO instance_action_events (action_id, event, result, traceback, finish_time)
    SELECT ia.id, 'compute_live_migration', 'Error',
           coalesce(left(reason, 1024), 'The live migration failed.'), clock_timestamp()
      FROM instance_actions ia
     WHERE ia.instance_uuid = i.uuid AND ia.finish_time IS NULL;
    UPDATE instance_actions SET finish_time = clock_timestamp(), message = 'Error'
     WHERE instance_uuid = i.uuid AND finish_time IS NULL;
END $$;

-- The guest runs on the destination: the instance is there now, the
-- source's usage is given back and its storage deleted.
CREATE FUNCTION compute_live_done(i instances, m migrations) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM compute_move_release(i.node, i.vcpus, i.memory_mb, i.root_gb + i.ephemeral_gb);
    UPDATE instances SET node = m.dest_node,
           host = coalesce((SELECT host FROM compute_nodes WHERE hypervisor_hostname = m.dest_node),
                           m.dest_compute),
           move_held_node = i.node, move_held_state = 'delete',
           task_state = NULL, agent_action = '', agent_reboot = '',
           agent_generation = i.agent_generation + 1, updated_at = clock_timestamp()
     WHERE uuid = i.uuid;
    UPDATE migrations SET status = 'completed', live_dest_xml = NULL,
           updated_at = clock_timestamp()
     WHERE id = m.id;
    INSERT INTO instance_action_events (action_id, event, result, finish_time)
    SELECT ia.id, 'compute_live_migration', 'Success', clock_timestamp()
      FROM instance_actions ia
     WHERE ia.instance_uuid = i.uuid AND ia.finish_time IS NULL;
    UPDATE instance_actions SET finish_time = clock_timestamp()
     WHERE instance_uuid = i.uuid AND finish_time IS NULL;
END $$;

-- ---- The action.  Nova 2.1's body: {"host": null or a host,
-- "block_migration": bool or "auto", "disk_over_commit": bool}.
-- Instance disks are always on local storage: the overlay is always
-- copied (block migration), whatever block_migration says.
ALTER FUNCTION compute_server_action(uuid, text, jsonb, jsonb)
    RENAME TO compute_server_action_pre_live;

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
        RETURN compute_server_action_pre_live(p_uuid, p_action, a, c);
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
    -- A port's device (its tap) exists only where the port is bound, and a
    -- port has one binding: the destination's network agent would make no
    -- tap for the arriving guest.  Refused at once rather than failing
    -- after the destination waited for taps that never come; cold
    -- migration moves such servers (the binding moves with the claim).
    IF EXISTS (SELECT 1 FROM net.ports p WHERE p.device_id = i.uuid::text) THEN
        RETURN jsonb_build_object('code', 409, 'message', format(
            'Cannot ''os-migrateLive'' instance %s: live migration of a server with ports is '
            'not available in this release of Nimbus (a port is bound to one host at a time); '
            'use cold migration (migrate).', p_uuid));
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

-- ---- Desired documents.  The source: "live_out" with where to, once the
-- destination is prepared.
ALTER FUNCTION compute_agent_instance_json(instances)
    RENAME TO compute_agent_instance_json_pre_live;

CREATE FUNCTION compute_agent_instance_json(i instances) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    j jsonb := compute_agent_instance_json_pre_live(i);
    m migrations;
BEGIN
    IF i.agent_action <> 'live_migrate' THEN
        RETURN j;
    END IF;
    m := compute_move_last(i.uuid);
    RETURN j || jsonb_build_object('action', 'live_out', 'migration', jsonb_build_object(
        'id', m.uuid,
        'dest_uri', (SELECT libvirt_uri FROM agent_nodes WHERE name = m.dest_node),
        'dest_xml', m.live_dest_xml, 'dest_dir', m.live_dest_dir));
END $$;

-- The destination's copy: "live_in" (prepare, do not define).
ALTER FUNCTION compute_agent_held_json(instances) RENAME TO compute_agent_held_json_pre_live;

CREATE FUNCTION compute_agent_held_json(i instances) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF i.move_held_state = 'live_dest' AND NOT i.deleted THEN
        RETURN compute_agent_instance_json_pre_migrate(i)
            || jsonb_build_object('action', 'live_in', 'reboot', '');
    END IF;
    RETURN compute_agent_held_json_pre_live(i);
END $$;

-- ---- Observed state: the steps of a live migration.  The entries of
-- instances being live-migrated are taken here and not passed on (the
-- earlier functions would take the source's report for the end of a
-- task).
ALTER FUNCTION compute_agent_observed(text, text, jsonb) RENAME TO compute_agent_observed_pre_live;

CREATE FUNCTION compute_agent_observed(p_node text, p_token text, d jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
    i instances;
    m migrations;
    r record;
    st text;
    gen bigint;
    taken text[] := '{}';
    lm jsonb;
BEGIN
    IF compute_agent_auth(p_node, p_token) = 200 AND jsonb_typeof(d->'instances') = 'array' THEN
        FOR r IN
            SELECT x AS e, s AS i FROM jsonb_array_elements(d->'instances') x
              JOIN instances s ON s.uuid = CASE WHEN jsonb_typeof(x) = 'object' AND x->>'uuid' ~
                  '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
                  THEN (x->>'uuid')::uuid END
             WHERE s.task_state = 'migrating' AND NOT s.deleted
               AND (s.node = p_node
                    OR (s.move_held_node = p_node AND s.move_held_state = 'live_dest'))
               FOR UPDATE OF s
        LOOP
            e := r.e;
            i := r.i;
            m := compute_move_last(i.uuid);
            CONTINUE WHEN m.migration_type IS DISTINCT FROM 'live-migration';
            taken := taken || (e->>'uuid');
            st := e->>'vm_state';
            gen := CASE WHEN jsonb_typeof(e->'generation') = 'number'
                        THEN (e->>'generation')::numeric::bigint ELSE 0 END;
            IF i.move_held_node = p_node THEN
                -- The destination.
                lm := e->'live_migration';
                IF m.status = 'preparing' AND jsonb_typeof(lm) = 'object'
                   AND jsonb_typeof(lm->'xml') = 'string' AND length(lm->>'xml') <= 65536
                   AND lm->>'xml' LIKE '<%'
                   AND lm->>'inst_dir' ~ '^/[A-Za-z0-9._/-]+$'
                   AND length(lm->>'inst_dir') <= 500 THEN
                    -- Prepared: the source's turn, at a new generation.
                    UPDATE migrations SET status = 'running', live_dest_xml = lm->>'xml',
                           live_dest_dir = lm->>'inst_dir', updated_at = clock_timestamp()
                     WHERE id = m.id;
                    UPDATE instances SET agent_action = '' WHERE uuid = i.uuid
                       AND agent_action <> '';
                    UPDATE instances SET agent_action = 'live_migrate', agent_reboot = '',
                           agent_generation = i.agent_generation + 1,
                           updated_at = clock_timestamp()
                     WHERE uuid = i.uuid;
                -- A guest arriving here is not the end of the move: libvirt
                -- shows it as starting up until the migration ends, which
                -- only the source's report tells (a restarted source that
                -- finds the guest gone reports the same).
                ELSIF st = 'error' THEN
                    PERFORM compute_live_failed(i, m, 'The destination could not prepare: '
                                                || coalesce(e->>'fault', 'error'));
                END IF;
            ELSIF i.agent_action = 'live_migrate' AND gen >= i.agent_generation THEN
                -- The source, after its attempt.
                IF st = 'deleted' THEN
                    PERFORM compute_live_done(i, m);
                ELSIF st IN ('active', 'paused', 'stopped', 'error') THEN
                    PERFORM compute_live_failed(i, m, coalesce(e->>'fault',
                        'The live migration failed on the source.'));
                END IF;
            ELSIF i.agent_action = 'live_migrate' AND st = 'error' THEN
                PERFORM compute_live_failed(i, m, coalesce(e->>'fault',
                    'The live migration failed on the source.'));
            END IF;
        END LOOP;
        IF cardinality(taken) > 0 THEN
            d := jsonb_set(d, '{instances}', coalesce((
                SELECT jsonb_agg(x) FROM jsonb_array_elements(d->'instances') x
                 WHERE NOT (jsonb_typeof(x) = 'object' AND x->>'uuid' IS NOT NULL
                            AND x->>'uuid' = ANY (taken))), '[]'::jsonb));
        END IF;
    END IF;
    RETURN compute_agent_observed_pre_live(p_node, p_token, d);
END $$;

-- ---- A server deleted during a live migration: the destination gives
-- back its claim and deletes what it prepared.
ALTER FUNCTION compute_instance_destroyed(uuid) RENAME TO compute_instance_destroyed_pre_live;

CREATE FUNCTION compute_instance_destroyed(p_uuid uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE i instances;
BEGIN
    SELECT * INTO i FROM instances WHERE uuid = p_uuid AND NOT deleted FOR UPDATE;
    IF FOUND AND i.move_held_state = 'live_dest' THEN
        PERFORM compute_move_release(i.move_held_node, i.vcpus, i.memory_mb,
                                     i.root_gb + i.ephemeral_gb);
        UPDATE instances SET move_held_state = 'delete' WHERE uuid = p_uuid;
        UPDATE migrations SET status = 'error', live_dest_xml = NULL,
               updated_at = clock_timestamp()
         WHERE instance_uuid = p_uuid AND migration_type = 'live-migration'
           AND status IN ('preparing', 'running');
    END IF;
    RETURN compute_instance_destroyed_pre_live(p_uuid);
END $$;

-- ---- The libvirt URI an agent registers: besides 0013's network URIs
-- (qemu+tcp://host/system ...), a local socket path
-- (qemu+unix:///system?socket=/path), for nodes whose libvirtd the others
-- reach on the same machine (tests/agent/libvirt_pair.sh).
ALTER FUNCTION compute_agent_register(text, text, jsonb) RENAME TO compute_agent_register_pre_live;

CREATE FUNCTION compute_agent_register(p_node text, p_token text, d jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE r jsonb := compute_agent_register_pre_live(p_node, p_token, d);
BEGIN
    IF (r->>'code')::int = 200 AND d->>'libvirt_uri' ~
           '^(qemu|xen)\+unix:///system\?socket=/[A-Za-z0-9/._-]+$'
       AND length(d->>'libvirt_uri') <= 300 THEN
        UPDATE agent_nodes SET libvirt_uri = d->>'libvirt_uri' WHERE name = p_node;
    END IF;
    RETURN r;
END $$;
