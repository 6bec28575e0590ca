-- Server actions carried out by the agent of the instance's node
-- (docs/compute.md, docs/agent-channel.md): the console log pushed by the
-- agent, cold resize on the same host, snapshots into nimbus-image, and
-- one-time tokens of the remote-console proxy.
--
-- The functions of the earlier migrations that these actions extend are
-- wrapped, not rewritten: each is renamed to <name>_pre_actions and a function of
-- the old name does the new part and calls it, so that changes other
-- migrations make to the same functions are kept.

-- The agent's work for one generation besides the power state: '' (only
-- the power state), 'resize' (redefine with the flavor of the document,
-- grow the disk) or 'snapshot' (copy the disk to the image in
-- agent_snapshot->>'image_id').
ALTER TABLE instances
    ADD COLUMN agent_action   text NOT NULL DEFAULT ''
        CHECK (agent_action IN ('', 'resize', 'snapshot')),
    ADD COLUMN agent_snapshot jsonb,
    ADD COLUMN console_updated_at timestamptz;

-- Console proxy tokens (POST /servers/{id}/remote-consoles): only the
-- SHA-256 of the token is kept; a token is good once, until it expires.
CREATE TABLE console_tokens (
    token_hash    text PRIMARY KEY,
    instance_uuid uuid NOT NULL REFERENCES instances (uuid) ON DELETE CASCADE,
    node          text NOT NULL,
    protocol      text NOT NULL CHECK (protocol IN ('vnc', 'serial')),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX console_tokens_expires ON console_tokens (expires_at);

-- Largest console tail kept per instance (the agent sends at most this).
CREATE FUNCTION compute_console_max() RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT 65536
$$;

-- ---- Desired state: the action of the generation, and for snapshots the
-- image to upload to.
ALTER FUNCTION compute_agent_instance_json(instances) RENAME TO compute_agent_instance_json_pre_actions;

CREATE FUNCTION compute_agent_instance_json(i instances) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT compute_agent_instance_json_pre_actions(i)
           || jsonb_build_object('action', i.agent_action)
           || CASE WHEN i.agent_action = 'snapshot' AND i.agent_snapshot ? 'image_id'
                   THEN jsonb_build_object('snapshot', jsonb_build_object(
                        'image_id', i.agent_snapshot->>'image_id'))
                   ELSE '{}'::jsonb END
$$;

-- A new generation for the action (the power state stays what it is).
-- Power actions of the earlier migration raise the generation themselves
-- and leave no action behind.
CREATE FUNCTION compute_agent_action_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.agent_generation IS DISTINCT FROM OLD.agent_generation
       AND NEW.agent_action IS NOT DISTINCT FROM OLD.agent_action THEN
        NEW.agent_action := '';
        NEW.agent_snapshot := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER instances_agent_generation_action BEFORE UPDATE ON instances
    FOR EACH ROW EXECUTE FUNCTION compute_agent_action_generation();

-- The desired document changes with the action too.
CREATE FUNCTION compute_agent_action_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.agent_action, OLD.agent_snapshot) IS DISTINCT FROM
       (NEW.agent_action, NEW.agent_snapshot)
       AND OLD.agent_generation = NEW.agent_generation THEN
        PERFORM compute_agent_bump(NEW.node);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER instances_agent_action_desired AFTER UPDATE ON instances
    FOR EACH ROW EXECUTE FUNCTION compute_agent_action_changed();

-- ---- Resource usage of a resize.  While a resize waits for confirmation
-- the host holds the larger of the old and new flavor in each resource
-- (the guest may go back to the old one); confirm keeps the new, revert
-- the old, and a delete gives back what is held.
CREATE FUNCTION compute_resize_extra(i instances) RETURNS TABLE (cpu integer, ram integer, disk integer)
LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest((i.old_flavor->>'vcpus')::int - i.vcpus, 0),
           greatest((i.old_flavor->>'ram')::int - i.memory_mb, 0),
           greatest((i.old_flavor->>'disk')::int + (i.old_flavor->>'ephemeral')::int
                    - (i.root_gb + i.ephemeral_gb), 0)
     WHERE i.old_flavor IS NOT NULL
$$;

ALTER FUNCTION compute_instance_destroyed(uuid) RENAME TO compute_instance_destroyed_pre_actions;

CREATE FUNCTION compute_instance_destroyed(p_uuid uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE i instances;
BEGIN
    SELECT * INTO i FROM instances WHERE uuid = p_uuid AND NOT deleted FOR UPDATE;
    IF FOUND AND i.old_flavor IS NOT NULL AND i.node IS NOT NULL THEN
        UPDATE compute_nodes n SET vcpus_used = greatest(vcpus_used - x.cpu, 0),
               memory_mb_used = greatest(memory_mb_used - x.ram, 0),
               local_gb_used = greatest(local_gb_used - x.disk, 0)
          FROM compute_resize_extra(i) x
         WHERE n.hypervisor_hostname = i.node;
        UPDATE instances SET old_flavor = NULL, new_flavor_id = NULL WHERE uuid = p_uuid;
    END IF;
    RETURN compute_instance_destroyed_pre_actions(p_uuid);
END $$;

-- ---- Actions.  resize, confirmResize, revertResize and createImage are
-- handled here; every other action by the earlier function.
ALTER FUNCTION compute_server_action(uuid, text, jsonb, jsonb) RENAME TO compute_server_action_pre_actions;

CREATE FUNCTION compute_server_action(p_uuid uuid, p_action text, a jsonb, c jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    i instances;
    admin boolean := (c->>'admin')::boolean;
    f flavors;
    ok_vm text[];
    action_name text := p_action;
    d_cpu integer;
    d_ram integer;
    d_disk integer;
    used_cores bigint;
    used_ram bigint;
    lim integer;
    img uuid;
    base_img images;
BEGIN
    IF p_action NOT IN ('resize', 'confirmResize', 'revertResize', 'createImage') THEN
        RETURN compute_server_action_pre_actions(p_uuid, p_action, a, c);
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
    CASE p_action
    WHEN 'resize' THEN ok_vm := ARRAY['active', 'stopped'];
    WHEN 'revertResize' THEN ok_vm := ARRAY['resized'];
    WHEN 'confirmResize' THEN ok_vm := ARRAY['resized'];
    ELSE ok_vm := ARRAY['active', 'stopped', 'paused', 'suspended'];
    END CASE;
    IF p_action IN ('confirmResize', 'revertResize') AND i.vm_state <> 'resized' THEN
        RETURN jsonb_build_object('code', 409, 'message', 'Instance has not been resized.');
    END IF;
    IF NOT (i.vm_state = ANY (ok_vm)) OR i.task_state IS NOT NULL THEN
        RETURN jsonb_build_object('code', 409, 'message', format(
            'Cannot ''%s'' instance %s while it is in vm_state %s', action_name, p_uuid,
            i.vm_state) || CASE WHEN i.task_state IS NOT NULL
                           THEN format(' and task_state %s', i.task_state) ELSE '' END);
    END IF;

    CASE p_action
    WHEN 'resize' THEN
        SELECT * INTO f FROM flavors WHERE id = a->>'flavorRef';
        IF NOT FOUND OR NOT compute_flavor_visible(f, i.project_id, admin) THEN
            RETURN jsonb_build_object('code', 400, 'message',
                format('Flavor %s could not be found.', a->>'flavorRef'));
        END IF;
        IF f.id = i.flavor_id THEN
            RETURN jsonb_build_object('code', 400, 'message',
                'When resizing, instances must change flavor!');
        END IF;
        IF f.disk < i.root_gb THEN
            RETURN jsonb_build_object('code', 400, 'message',
                'Resize error: Unable to resize disk down.');
        END IF;
        IF i.node IS NULL THEN
            RETURN jsonb_build_object('code', 409, 'message', format(
                'Cannot ''resize'' instance %s: it has no host.', p_uuid));
        END IF;
        d_cpu := f.vcpus - i.vcpus;
        d_ram := f.ram - i.memory_mb;
        d_disk := (f.disk + f.ephemeral) - (i.root_gb + i.ephemeral_gb);
        -- Quota for the growth, counted as server create counts it.
        PERFORM pg_advisory_xact_lock(hashtext('nimbus-quota:' || i.project_id));
        SELECT coalesce(sum(vcpus), 0), coalesce(sum(memory_mb), 0) INTO used_cores, used_ram
          FROM instances WHERE project_id = i.project_id AND NOT deleted;
        lim := compute_quota_limit(i.project_id, 'cores');
        IF d_cpu > 0 AND lim >= 0 AND used_cores + d_cpu > lim THEN
            RETURN jsonb_build_object('code', 403, 'message', format(
                'Quota exceeded for cores: Requested %s, but already used %s of %s cores',
                d_cpu, used_cores, lim));
        END IF;
        lim := compute_quota_limit(i.project_id, 'ram');
        IF d_ram > 0 AND lim >= 0 AND used_ram + d_ram > lim THEN
            RETURN jsonb_build_object('code', 403, 'message', format(
                'Quota exceeded for ram: Requested %s, but already used %s of %s ram',
                d_ram, used_ram, lim));
        END IF;
        -- Same-host resize (Nova's allow_resize_to_same_host): the host
        -- claims the growth with the scheduler's rule, so it is never
        -- overbooked.
        UPDATE compute_nodes SET vcpus_used = vcpus_used + greatest(d_cpu, 0),
               memory_mb_used = memory_mb_used + greatest(d_ram, 0),
               local_gb_used = local_gb_used + greatest(d_disk, 0),
               updated_at = clock_timestamp()
         WHERE hypervisor_hostname = i.node
           AND vcpus_used + greatest(d_cpu, 0) <= vcpus * cpu_allocation_ratio
           AND memory_mb_used + greatest(d_ram, 0)
               <= (memory_mb - reserved_host_memory_mb) * ram_allocation_ratio
           AND local_gb_used + greatest(d_disk, 0) <= local_gb * disk_allocation_ratio;
        IF NOT FOUND THEN
            RETURN jsonb_build_object('code', 409, 'message', format(
                'No valid host was found. Host %s has not enough resources for flavor %s.',
                i.host, f.id));
        END IF;
        UPDATE instances SET
               old_flavor = jsonb_build_object('id', i.flavor_id, 'vcpus', i.vcpus,
                   'ram', i.memory_mb, 'disk', i.root_gb, 'ephemeral', i.ephemeral_gb,
                   'swap', i.swap),
               new_flavor_id = f.id, flavor_id = f.id, vcpus = f.vcpus, memory_mb = f.ram,
               root_gb = f.disk, ephemeral_gb = f.ephemeral, swap = f.swap,
               task_state = 'resize_prep', agent_action = 'resize', agent_reboot = '',
               agent_generation = i.agent_generation + 1, updated_at = clock_timestamp()
         WHERE uuid = p_uuid;
    WHEN 'confirmResize' THEN
        UPDATE compute_nodes n SET vcpus_used = greatest(vcpus_used - x.cpu, 0),
               memory_mb_used = greatest(memory_mb_used - x.ram, 0),
               local_gb_used = greatest(local_gb_used - x.disk, 0),
               updated_at = clock_timestamp()
          FROM compute_resize_extra(i) x
         WHERE n.hypervisor_hostname = i.node;
        UPDATE instances SET vm_state = CASE WHEN power_state = 4 THEN 'stopped' ELSE 'active' END,
               task_state = NULL, new_flavor_id = NULL, old_flavor = NULL,
               updated_at = clock_timestamp()
         WHERE uuid = p_uuid;
        PERFORM compute_record_action(p_uuid, 'confirmResize', c->>'request_id',
                                      c->>'user_id', c->>'project_id', true);
        RETURN jsonb_build_object('code', 204);
    WHEN 'revertResize' THEN
        -- The host goes back to the old flavor's usage now; the agent
        -- redefines the guest with it.
        UPDATE compute_nodes n SET
               vcpus_used = greatest(vcpus_used - greatest(i.vcpus - (i.old_flavor->>'vcpus')::int, 0), 0),
               memory_mb_used = greatest(memory_mb_used
                   - greatest(i.memory_mb - (i.old_flavor->>'ram')::int, 0), 0),
               local_gb_used = greatest(local_gb_used - greatest((i.root_gb + i.ephemeral_gb)
                   - ((i.old_flavor->>'disk')::int + (i.old_flavor->>'ephemeral')::int), 0), 0),
               updated_at = clock_timestamp()
         WHERE n.hypervisor_hostname = i.node;
        UPDATE instances SET flavor_id = i.old_flavor->>'id',
               vcpus = (i.old_flavor->>'vcpus')::int, memory_mb = (i.old_flavor->>'ram')::int,
               root_gb = (i.old_flavor->>'disk')::int,
               ephemeral_gb = (i.old_flavor->>'ephemeral')::int,
               swap = (i.old_flavor->>'swap')::int,
               old_flavor = NULL, new_flavor_id = NULL,
               task_state = 'resize_reverting', agent_action = 'resize', agent_reboot = '',
               agent_generation = i.agent_generation + 1, updated_at = clock_timestamp()
         WHERE uuid = p_uuid;
    WHEN 'createImage' THEN
        IF jsonb_typeof(a->'name') <> 'string' OR length(a->>'name') NOT BETWEEN 1 AND 255 THEN
            RETURN jsonb_build_object('code', 400, 'message',
                'Invalid input for field/attribute name.');
        END IF;
        IF a ? 'metadata' AND jsonb_typeof(a->'metadata') <> 'object' THEN
            RETURN jsonb_build_object('code', 400, 'message',
                'Invalid input for field/attribute metadata.');
        END IF;
        IF i.node IS NULL THEN
            RETURN jsonb_build_object('code', 409, 'message', format(
                'Cannot ''createImage'' instance %s: it has no host.', p_uuid));
        END IF;
        IF i.image_ref ~ '^[0-9a-fA-F-]{36}$' THEN
            SELECT * INTO base_img FROM images WHERE id = i.image_ref::uuid;
        END IF;
        img := gen_random_uuid();
        -- The snapshot is the instance's overlay flattened to qcow2.  An
        -- image booted with a kernel and ramdisk (ami) stays an ami with
        -- the same kernel_id, ramdisk_id and command line, so that it
        -- boots the same way; others become qcow2 in a bare container.
        -- Nova's properties win over the user's metadata.
        INSERT INTO images (id, name, owner, status, visibility, disk_format,
                            container_format, min_disk, min_ram, properties)
        VALUES (img, a->>'name', i.project_id, 'queued', 'private',
                CASE WHEN base_img.disk_format = 'ami' THEN 'ami' ELSE 'qcow2' END,
                CASE WHEN base_img.disk_format = 'ami' THEN 'ami' ELSE 'bare' END,
                greatest(i.root_gb, coalesce(base_img.min_disk, 0)),
                coalesce(base_img.min_ram, 0),
                (SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM jsonb_each_text(
                     coalesce(a->'metadata', '{}')) AS m(k, v)
                  WHERE length(k) <= 255 AND length(v) <= 255)
                || CASE WHEN base_img.disk_format = 'ami' THEN jsonb_strip_nulls(
                       jsonb_build_object('kernel_id', base_img.properties->>'kernel_id',
                           'ramdisk_id', base_img.properties->>'ramdisk_id',
                           'os_command_line', base_img.properties->>'os_command_line'))
                   ELSE '{}'::jsonb END
                || jsonb_build_object('image_type', 'snapshot', 'instance_uuid', i.uuid::text,
                                      'base_image_ref', i.image_ref, 'user_id', c->>'user_id'));
        UPDATE instances SET task_state = 'image_snapshot', agent_action = 'snapshot',
               agent_snapshot = jsonb_build_object('image_id', img), agent_reboot = '',
               agent_generation = i.agent_generation + 1, updated_at = clock_timestamp()
         WHERE uuid = p_uuid;
    END CASE;
    PERFORM compute_record_action(p_uuid, action_name, c->>'request_id', c->>'user_id',
                                  c->>'project_id', false);
    RETURN jsonb_build_object('code', 202) || CASE WHEN img IS NOT NULL
        THEN jsonb_build_object('image_id', img) ELSE '{}'::jsonb END;
END $$;

-- ---- Observed state: console tails, and the end of the actions above.
-- Entries of instances in those actions (or waiting in VERIFY_RESIZE) are
-- handled here and not passed on, except errors; the rest goes to the
-- earlier function unchanged.
ALTER FUNCTION compute_agent_observed(text, text, jsonb) RENAME TO compute_agent_observed_pre_actions;

CREATE FUNCTION compute_agent_observed(p_node text, p_token text, d jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    code integer := compute_agent_auth(p_node, p_token);
    e jsonb;
    i instances;
    gen bigint;
    rest jsonb := '[]';
    st text;
BEGIN
    IF code <> 200 THEN RETURN compute_agent_denied(code); END IF;
    IF jsonb_typeof(d->'instances') <> 'array' THEN
        RETURN jsonb_build_object('code', 400, 'message', 'Expected {"instances": [...]}.');
    END IF;
    FOR e IN SELECT x FROM jsonb_array_elements(d->'instances') x LOOP
        IF jsonb_typeof(e) <> 'object' OR NOT (e->>'uuid' ~
               '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$') THEN
            CONTINUE;
        END IF;
        SELECT * INTO i FROM instances
         WHERE uuid = (e->>'uuid')::uuid AND node = p_node AND NOT deleted FOR UPDATE;
        IF NOT FOUND THEN CONTINUE; END IF;
        IF jsonb_typeof(e->'console') = 'string' THEN
            -- The tail of the guest's console log, sent when it changed.
            UPDATE instances SET console_output = replace(right(e->>'console',
                       compute_console_max()), chr(13), ''),
                   console_updated_at = clock_timestamp()
             WHERE uuid = i.uuid;
        END IF;
        st := e->>'vm_state';
        gen := CASE WHEN jsonb_typeof(e->'generation') = 'number'
                    THEN (e->>'generation')::numeric::bigint ELSE 0 END;
        IF i.task_state IN ('resize_prep', 'resize_reverting', 'image_snapshot') THEN
            IF st = 'error' THEN
                IF i.task_state = 'image_snapshot' THEN
                    -- A failed snapshot leaves the server as it was (Nova's
                    -- rule); the image is killed and the agent told to stop
                    -- trying with a new generation.
                    UPDATE images SET status = 'killed', updated_at = now()
                     WHERE id = (i.agent_snapshot->>'image_id')::uuid AND status <> 'active';
                    UPDATE instances SET task_state = NULL, agent_action = '',
                           agent_snapshot = NULL, agent_generation = agent_generation + 1,
                           updated_at = clock_timestamp()
                     WHERE uuid = i.uuid;
                    UPDATE instance_actions SET finish_time = clock_timestamp(),
                           message = 'Error'
                     WHERE instance_uuid = i.uuid AND finish_time IS NULL;
                    CONTINUE;
                END IF;
                rest := rest || jsonb_build_array(e);
                CONTINUE;
            END IF;
            CONTINUE WHEN gen < i.agent_generation
                          OR st NOT IN ('active', 'stopped', 'paused', 'suspended');
            UPDATE instances SET
                   vm_state = CASE WHEN i.task_state = 'resize_prep' THEN 'resized'
                                   WHEN i.task_state = 'resize_reverting' THEN
                                       CASE WHEN st = 'stopped' THEN 'stopped' ELSE 'active' END
                                   ELSE st END,
                   task_state = NULL, agent_action = '', agent_snapshot = NULL,
                   power_state = compute_agent_power_code(e->>'power_state'),
                   updated_at = clock_timestamp()
             WHERE uuid = i.uuid;
            UPDATE instance_actions SET finish_time = clock_timestamp()
             WHERE instance_uuid = i.uuid AND finish_time IS NULL;
            CONTINUE;
        END IF;
        IF i.vm_state = 'resized' AND i.task_state IS NULL AND st <> 'error' THEN
            -- Waiting for confirmResize or revertResize: only the power state.
            UPDATE instances SET power_state = compute_agent_power_code(e->>'power_state')
             WHERE uuid = i.uuid
               AND power_state <> compute_agent_power_code(e->>'power_state');
            CONTINUE;
        END IF;
        rest := rest || jsonb_build_array(e - 'console');
    END LOOP;
    RETURN compute_agent_observed_pre_actions(p_node, p_token,
                                       d || jsonb_build_object('instances', rest));
END $$;

-- ---- Remote consoles (docs/compute.md).  Each node's agent runs the
-- console proxy and says at registration where clients reach it.
ALTER TABLE agent_nodes ADD COLUMN console_url text;

ALTER FUNCTION compute_agent_register(text, text, jsonb) RENAME TO compute_agent_register_pre_actions;

CREATE FUNCTION compute_agent_register(p_node text, p_token text, d jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE r jsonb := compute_agent_register_pre_actions(p_node, p_token, d);
BEGIN
    IF (r->>'code')::int = 200 THEN
        UPDATE agent_nodes SET console_url = CASE
            WHEN d->>'console_url' ~ '^https?://[]A-Za-z0-9.:[-]{1,200}(/[A-Za-z0-9._~/-]{0,50})?$'
            THEN rtrim(d->>'console_url', '/') END
         WHERE name = p_node;
    END IF;
    RETURN r;
END $$;

-- A one-time token for the console of an instance, good for 10 minutes:
-- {"code": 200, "url": ...} or an error.  'p_protocol' is 'vnc' or
-- 'serial'.  Only the token's SHA-256 is stored.
CREATE FUNCTION compute_console_token(p_uuid uuid, p_protocol text, c jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    i instances;
    admin boolean := (c->>'admin')::boolean;
    tok text := replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
    base text;
BEGIN
    SELECT * INTO i FROM instances WHERE uuid = p_uuid AND NOT deleted;
    IF NOT FOUND OR (NOT admin AND i.project_id <> c->>'project_id') THEN
        RETURN jsonb_build_object('code', 404, 'message',
                                  format('Instance %s could not be found.', p_uuid));
    END IF;
    IF i.vm_state <> 'active' OR i.node IS NULL OR i.power_state <> 1 THEN
        RETURN jsonb_build_object('code', 409, 'message',
            format('Instance %s is not ready.', p_uuid));
    END IF;
    SELECT console_url INTO base FROM agent_nodes WHERE name = i.node;
    IF base IS NULL THEN
        RETURN jsonb_build_object('code', 409, 'message', format(
            'The console proxy of host %s is not available.', i.host));
    END IF;
    DELETE FROM console_tokens WHERE expires_at < clock_timestamp() - interval '1 hour';
    INSERT INTO console_tokens (token_hash, instance_uuid, node, protocol, expires_at)
    VALUES (encode(sha256(convert_to(tok, 'UTF8')), 'hex'), p_uuid, i.node, p_protocol,
            clock_timestamp() + interval '10 minutes');
    RETURN jsonb_build_object('code', 200, 'url', CASE WHEN p_protocol = 'serial'
        THEN regexp_replace(base, '^http', 'ws') ELSE base END || '/?token=' || tok);
END $$;

-- The proxy of node 'p_node' checks a token ({"token": ...}) and uses it
-- up: {"code": 200, "body": {"instance_uuid", "protocol"}} once; 404 for
-- an unknown, used, expired or other node's token; 401/403 for a bad node
-- credential.
CREATE FUNCTION compute_agent_console_token(p_node text, p_cred text, d jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    code integer := compute_agent_auth(p_node, p_cred);
    t console_tokens;
BEGIN
    IF code <> 200 THEN RETURN compute_agent_denied(code); END IF;
    UPDATE console_tokens SET used_at = clock_timestamp()
     WHERE token_hash = encode(sha256(convert_to(coalesce(d->>'token', ''), 'UTF8')), 'hex')
       AND node = p_node AND used_at IS NULL AND expires_at > clock_timestamp()
     RETURNING * INTO t;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('code', 404, 'message', 'The console token is not valid.');
    END IF;
    RETURN jsonb_build_object('code', 200, 'body', jsonb_build_object(
        'instance_uuid', t.instance_uuid, 'protocol', t.protocol));
END $$;
