-- No server left in a task nothing carries out (docs/compute.md):
-- rebuild is carried out by the agent of the instance's node (a new disk
-- from the new image, the guest defined and started as it was); migrate,
-- os-migrateLive and evacuate are refused, since the agents cannot move
-- guests between nodes yet, and leave no task_state behind.
--
-- As in the actions migration, functions are wrapped, not rewritten: the
-- current one is renamed to <name>_pre_rebuild and the new one calls it.

ALTER TABLE instances DROP CONSTRAINT instances_agent_action_check,
    ADD CONSTRAINT instances_agent_action_check
        CHECK (agent_action IN ('', 'resize', 'snapshot', 'rebuild'));

ALTER FUNCTION compute_server_action(uuid, text, jsonb, jsonb)
    RENAME TO compute_server_action_pre_rebuild;

CREATE FUNCTION compute_server_action(p_uuid uuid, p_action text, a jsonb, c jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    i instances;
    admin boolean := (c->>'admin')::boolean;
    r jsonb;
    ok_vm text[];
    action_name text := p_action;
    aid bigint;
BEGIN
    IF p_action NOT IN ('rebuild', 'migrate', 'os-migrateLive', 'evacuate') THEN
        RETURN compute_server_action_pre_rebuild(p_uuid, p_action, a, c);
    END IF;
    SELECT * INTO i FROM instances WHERE uuid = p_uuid AND NOT deleted FOR UPDATE;
    IF NOT FOUND OR (NOT admin AND i.project_id <> c->>'project_id') THEN
        RETURN jsonb_build_object('code', 404, 'message',
                                  format('Instance %s could not be found.', p_uuid));
    END IF;
    IF i.locked AND NOT admin THEN
        RETURN jsonb_build_object('code', 409, 'message',
                                  format('Instance %s is locked', p_uuid));
    END IF;

    IF p_action = 'rebuild' THEN
        -- The new image must be one the project may boot, as for a create.
        IF NOT EXISTS (
                SELECT 1 FROM images im
                 WHERE im.id::text = lower(a->>'imageRef') AND im.status = 'active'
                   AND (im.visibility IN ('public', 'community') OR im.owner = i.project_id
                        OR admin
                        OR EXISTS (SELECT 1 FROM image_members m WHERE m.image_id = im.id
                                   AND m.member_id = i.project_id AND m.status = 'accepted'))) THEN
            RETURN jsonb_build_object('code', 400, 'message',
                format('Image %s could not be found.', a->>'imageRef'));
        END IF;
        IF i.node IS NULL AND i.vm_state IN ('active', 'stopped', 'error')
           AND i.task_state IS NULL THEN
            RETURN jsonb_build_object('code', 409, 'message', format(
                'Cannot ''rebuild'' instance %s: it has no host.', p_uuid));
        END IF;
        r := compute_server_action_pre_rebuild(p_uuid, p_action, a, c);
        IF (r->>'code')::int = 202 THEN
            -- The agent's work: a new disk from the image (the document
            -- carries the instance's image_ref, now the new one), the
            -- guest defined and started as it was.
            UPDATE instances SET agent_action = 'rebuild', agent_reboot = '',
                   agent_snapshot = NULL, agent_generation = agent_generation + 1
             WHERE uuid = p_uuid;
        END IF;
        RETURN r;
    END IF;

    -- migrate, os-migrateLive, evacuate: the same state rules as before,
    -- then refused.
    CASE p_action
    WHEN 'migrate' THEN ok_vm := ARRAY['active', 'stopped'];
    WHEN 'os-migrateLive' THEN ok_vm := ARRAY['active', 'paused']; action_name := 'live-migration';
    ELSE ok_vm := ARRAY['active', 'stopped', 'error'];
    END CASE;
    IF p_action = 'evacuate' AND i.host IS NOT NULL AND EXISTS (
           SELECT 1 FROM compute_nodes WHERE host = i.host AND NOT forced_down
              AND last_heartbeat > clock_timestamp() - interval '60 seconds') THEN
        RETURN jsonb_build_object('code', 409, 'message', format(
            'Compute service of %s is still in use.', i.host));
    END IF;
    IF NOT (i.vm_state = ANY (ok_vm)) OR i.task_state IS NOT NULL THEN
        RETURN jsonb_build_object('code', 409, 'message', format(
            'Cannot ''%s'' instance %s while it is in vm_state %s', action_name, p_uuid,
            i.vm_state) || CASE WHEN i.task_state IS NOT NULL
                           THEN format(' and task_state %s', i.task_state) ELSE '' END);
    END IF;
    -- Another enabled, alive host (not forced down, heard from in the
    -- last minute) where the flavor fits with the allocation ratios?
    IF NOT EXISTS (
            SELECT 1 FROM compute_nodes n
             WHERE n.host IS DISTINCT FROM i.host AND NOT n.disabled AND NOT n.forced_down
               AND n.last_heartbeat > clock_timestamp() - interval '60 seconds'
               AND (a->>'host' IS NULL OR n.host = a->>'host'
                    OR n.hypervisor_hostname = a->>'host')
               AND n.vcpus_used + i.vcpus <= n.vcpus * n.cpu_allocation_ratio
               AND n.memory_mb_used + i.memory_mb
                   <= (n.memory_mb - n.reserved_host_memory_mb) * n.ram_allocation_ratio
               AND n.local_gb_used + i.root_gb + i.ephemeral_gb
                   <= n.local_gb * n.disk_allocation_ratio) THEN
        -- Nova's answer when the scheduler finds no host: 400, and the
        -- server stays as it was; the attempt is an instance action that
        -- ended in error.
        INSERT INTO instance_actions (instance_uuid, action, request_id, user_id, project_id,
                                      message, finish_time)
        VALUES (p_uuid, CASE WHEN p_action = 'migrate' THEN 'migrate' ELSE action_name END,
                c->>'request_id', c->>'user_id', c->>'project_id', 'Error', clock_timestamp())
        RETURNING id INTO aid;
        INSERT INTO instance_action_events (action_id, event, result, traceback, finish_time)
        VALUES (aid, 'conductor_' || CASE p_action WHEN 'migrate' THEN 'migrate_server'
                                     WHEN 'evacuate' THEN 'rebuild_server'
                                     ELSE 'live_migrate_instance' END,
                'Error', 'No valid host was found.', clock_timestamp());
        RETURN jsonb_build_object('code', 400, 'message', format(
            'No valid host was found. There are not enough hosts available for instance %s.',
            p_uuid));
    END IF;
    RETURN jsonb_build_object('code', 409, 'message', format(
        'Cannot ''%s'' instance %s: moving servers between hosts is not available in this '
        'release of Nimbus.', action_name, p_uuid));
END $$;

-- ---- Observed state: the end of a rebuild.  The instance takes the state
-- the agent reports at the rebuild's generation (ACTIVE, or SHUTOFF when
-- it was stopped); the report then goes on to the earlier function, which
-- keeps the console tail and finds nothing else to change.  An error goes
-- on unchanged (the instance becomes ERROR, the action ends in error).
ALTER FUNCTION compute_agent_observed(text, text, jsonb)
    RENAME TO compute_agent_observed_pre_rebuild;

CREATE FUNCTION compute_agent_observed(p_node text, p_token text, d jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
    i instances;
    st text;
BEGIN
    IF compute_agent_auth(p_node, p_token) = 200 AND jsonb_typeof(d->'instances') = 'array' THEN
        FOR e IN SELECT x FROM jsonb_array_elements(d->'instances') x LOOP
            CONTINUE WHEN jsonb_typeof(e) <> 'object' OR jsonb_typeof(e->'generation') <> 'number'
                OR NOT (e->>'uuid' ~
                    '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$');
            st := e->>'vm_state';
            CONTINUE WHEN st IS NULL OR st NOT IN ('active', 'stopped');
            SELECT * INTO i FROM instances
             WHERE uuid = (e->>'uuid')::uuid AND node = p_node AND NOT deleted
               AND task_state = 'rebuilding' AND agent_action = 'rebuild' FOR UPDATE;
            CONTINUE WHEN NOT FOUND
                OR (e->>'generation')::numeric < i.agent_generation;
            UPDATE instances SET vm_state = st, task_state = NULL, agent_action = '',
                   power_state = compute_agent_power_code(e->>'power_state'),
                   fault = NULL, updated_at = clock_timestamp()
             WHERE uuid = i.uuid;
            UPDATE instance_action_events v SET result = 'Success',
                   finish_time = clock_timestamp()
              FROM instance_actions ia
             WHERE v.action_id = ia.id AND ia.instance_uuid = i.uuid
               AND ia.finish_time IS NULL AND v.finish_time IS NULL;
            INSERT INTO instance_action_events (action_id, event, result, finish_time)
            SELECT ia.id, 'compute_rebuild_instance', 'Success', clock_timestamp()
              FROM instance_actions ia
             WHERE ia.instance_uuid = i.uuid AND ia.finish_time IS NULL;
            UPDATE instance_actions SET finish_time = clock_timestamp()
             WHERE instance_uuid = i.uuid AND finish_time IS NULL;
        END LOOP;
    END IF;
    RETURN compute_agent_observed_pre_rebuild(p_node, p_token, d);
END $$;
