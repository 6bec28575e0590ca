-- Rescue and unrescue carried out by the agent of the instance's node, as
-- Nova's libvirt driver does them (docs/compute.md): the guest boots from
-- a rescue image (rescue_image_ref, else the instance's own image) on a
-- separate rescue overlay, with the instance's own disk attached as the
-- second disk; unrescue boots the original disk again and the rescue
-- overlay is deleted.  Containers cannot be rescued.
--
-- Functions are wrapped, not rewritten: each is renamed to
-- <name>_pre_rescue_agent and the new one calls it.  This replaces the
-- refusal of migration 0011 (which it wraps and no longer reaches for
-- rescue and unrescue).

-- The image the guest is rescued with, while it is rescued (set by
-- rescue, cleared by unrescue and by a stop of a rescued server).  The
-- desired document carries it as long as it is set, so that an agent
-- that defines the guest again (after a crash, a lost domain) defines it
-- in rescue mode again.
ALTER TABLE instances ADD COLUMN rescue_image_ref text;

ALTER TABLE instances DROP CONSTRAINT instances_agent_action_check,
    ADD CONSTRAINT instances_agent_action_check
        CHECK (agent_action IN ('', 'resize', 'snapshot', 'rebuild', 'migrate', 'rescue', 'unrescue'));

-- ---- Desired state: {"rescue": {"image", "kernel", "ramdisk"}} while
-- the instance is (being) rescued.
ALTER FUNCTION compute_agent_instance_json(instances)
    RENAME TO compute_agent_instance_json_pre_rescue_agent;

CREATE FUNCTION compute_agent_instance_json(i instances) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    j jsonb := compute_agent_instance_json_pre_rescue_agent(i);
    img jsonb;
    r jsonb;
BEGIN
    IF i.rescue_image_ref IS NULL THEN
        RETURN j;
    END IF;
    img := compute_agent_image_json(i.rescue_image_ref, true);
    r := jsonb_build_object('image', img);
    IF img->'properties'->>'kernel_id' IS NOT NULL THEN
        r := r || jsonb_build_object('kernel',
                 compute_agent_image_json(img->'properties'->>'kernel_id', false));
    END IF;
    IF img->'properties'->>'ramdisk_id' IS NOT NULL THEN
        r := r || jsonb_build_object('ramdisk',
                 compute_agent_image_json(img->'properties'->>'ramdisk_id', false));
    END IF;
    RETURN j || jsonb_build_object('rescue', r);
END $$;

-- A change of the rescue image changes the document too.
CREATE FUNCTION compute_rescue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.rescue_image_ref IS DISTINCT FROM NEW.rescue_image_ref
       AND OLD.agent_generation = NEW.agent_generation THEN
        PERFORM compute_agent_bump(NEW.node);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER instances_rescue_desired AFTER UPDATE OF rescue_image_ref ON instances
    FOR EACH ROW EXECUTE FUNCTION compute_rescue_changed();

-- Whether instance 'i' is a container (its image is an OCI image, or its
-- node runs containers): those have no disk to boot another image from.
CREATE FUNCTION compute_instance_is_container(i instances) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM images im WHERE im.id::text = lower(coalesce(i.image_ref, ''))
                      AND im.container_format IN ('docker', 'ociarchive'))
        OR EXISTS (SELECT 1 FROM compute_nodes n WHERE n.hypervisor_hostname = i.node
                      AND upper(n.hypervisor_type) IN ('RUNC', 'OCI'))
$$;

-- The agent's work for the next generation: 'act' ('rescue' or
-- 'unrescue').  The action is cleared first, so that the generation
-- trigger of the actions migration sees it change and keeps it.
CREATE FUNCTION compute_rescue_generation(p_uuid uuid, act text) RETURNS void
LANGUAGE sql AS $$
    UPDATE instances SET agent_action = '', agent_snapshot = NULL
     WHERE uuid = p_uuid AND agent_action <> '';
    UPDATE instances SET agent_action = act, agent_reboot = '', agent_power = 'running',
           agent_generation = agent_generation + 1
     WHERE uuid = p_uuid;
$$;

-- ---- Actions: rescue, unrescue, and a stop of a rescued server.
ALTER FUNCTION compute_server_action(uuid, text, jsonb, jsonb)
    RENAME TO compute_server_action_pre_rescue_agent;

CREATE FUNCTION compute_server_action(p_uuid uuid, p_action text, a jsonb, c jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    i instances;
    err jsonb;
    r jsonb;
    admin boolean := coalesce((c->>'admin')::boolean, false);
    ref text;
BEGIN
    IF p_action = 'os-stop' THEN
        -- Nova stops a rescued server; its next start boots the original
        -- disk.  Here the stop takes the guest out of rescue mode in the
        -- same step (the agent defines it on its own disk again, shut off).
        r := compute_server_action_pre_rescue_agent(p_uuid, p_action, a, c);
        IF (r->>'code')::int = 202 AND EXISTS (SELECT 1 FROM instances WHERE uuid = p_uuid
                                                  AND rescue_image_ref IS NOT NULL) THEN
            UPDATE instances SET rescue_image_ref = NULL, agent_action = 'unrescue'
             WHERE uuid = p_uuid;
        END IF;
        RETURN r;
    END IF;
    IF p_action NOT IN ('rescue', 'unrescue') THEN
        RETURN compute_server_action_pre_rescue_agent(p_uuid, p_action, a, c);
    END IF;
    SELECT x.err INTO err
      FROM compute_action_instance(p_uuid, p_action, c, CASE p_action
               WHEN 'rescue' THEN ARRAY['active', 'stopped', 'error']
               ELSE ARRAY['rescued'] END) x;
    IF err IS NOT NULL THEN
        RETURN err;
    END IF;
    -- Locked FOR UPDATE by compute_action_instance().
    SELECT * INTO i FROM instances WHERE uuid = p_uuid;
    IF p_action = 'rescue' THEN
        IF compute_instance_is_container(i) THEN
            RETURN jsonb_build_object('code', 409, 'message', format(
                'Cannot ''rescue'' instance %s: it is a container, which has no disk to '
                'boot a rescue image from.', p_uuid));
        END IF;
        ref := coalesce(lower(a->>'rescue_image_ref'), i.image_ref);
        -- A disk image the project may boot (Nova: "not supported" for an
        -- image it cannot fetch, 400).
        IF NOT EXISTS (
                SELECT 1 FROM images im
                 WHERE im.id::text = lower(coalesce(ref, '')) AND im.status = 'active'
                   AND im.disk_format NOT IN ('aki', 'ari')
                   AND im.container_format NOT IN ('docker', 'ociarchive')
                   AND (im.visibility IN ('public', 'community') OR im.owner = i.project_id
                        OR admin
                        OR EXISTS (SELECT 1 FROM image_members m WHERE m.image_id = im.id
                                   AND m.member_id = i.project_id AND m.status = 'accepted'))) THEN
            RETURN jsonb_build_object('code', 400, 'message', format(
                'Requested rescue image ''%s'' is not supported', coalesce(ref, '')));
        END IF;
        IF i.node IS NULL THEN
            RETURN jsonb_build_object('code', 409, 'message', format(
                'Cannot ''rescue'' instance %s: it has no host.', p_uuid));
        END IF;
    END IF;
    UPDATE instances SET task_state = CASE p_action WHEN 'rescue' THEN 'rescuing'
                                       ELSE 'unrescuing' END,
           rescue_image_ref = CASE p_action WHEN 'rescue' THEN ref END,
           updated_at = clock_timestamp()
     WHERE uuid = p_uuid;
    PERFORM compute_rescue_generation(p_uuid, p_action);
    PERFORM compute_record_action(p_uuid, p_action, c->>'request_id', c->>'user_id',
                                  c->>'project_id', false);
    -- Nova: 200 with the password for rescue, 202 for unrescue.
    RETURN jsonb_build_object('code', CASE p_action WHEN 'rescue' THEN 200 ELSE 202 END);
END $$;

-- ---- Observed state.  Instances being rescued or unrescued end their
-- task when the agent reports the generation of the action applied
-- (RESCUE, or ACTIVE / SHUTOFF); a rescued instance stays RESCUE whatever
-- power state its rescue guest is in (only the power state follows).
-- Such entries go on to the earlier functions with vm_state 'rescued',
-- which they leave alone except for the console tail; errors go on
-- unchanged (the instance becomes ERROR, the action ends in error).
ALTER FUNCTION compute_agent_observed(text, text, jsonb)
    RENAME TO compute_agent_observed_pre_rescue_agent;

CREATE FUNCTION compute_agent_observed(p_node text, p_token text, d jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
    i instances;
    st text;
    gen numeric;
    rest jsonb := '[]';
BEGIN
    IF compute_agent_auth(p_node, p_token) <> 200 OR jsonb_typeof(d->'instances') <> 'array' THEN
        RETURN compute_agent_observed_pre_rescue_agent(p_node, p_token, d);
    END IF;
    FOR e IN SELECT x FROM jsonb_array_elements(d->'instances') x LOOP
        IF jsonb_typeof(e) <> 'object' OR NOT coalesce(e->>'uuid' ~
               '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$',
               false) THEN
            rest := rest || jsonb_build_array(e);
            CONTINUE;
        END IF;
        SELECT * INTO i FROM instances
         WHERE uuid = (e->>'uuid')::uuid AND node = p_node AND NOT deleted
           AND (task_state IN ('rescuing', 'unrescuing')
                OR (vm_state = 'rescued' AND task_state IS NULL))
           FOR UPDATE;
        st := e->>'vm_state';
        IF NOT FOUND OR st = 'error' THEN
            rest := rest || jsonb_build_array(e);
            CONTINUE;
        END IF;
        gen := CASE WHEN jsonb_typeof(e->'generation') = 'number'
                    THEN (e->>'generation')::numeric ELSE 0 END;
        IF i.task_state IS NOT NULL AND gen >= i.agent_generation
           AND st IN ('active', 'stopped') THEN
            UPDATE instances SET
                   vm_state = CASE WHEN i.task_state = 'rescuing' THEN 'rescued' ELSE st END,
                   task_state = NULL, agent_action = '',
                   power_state = compute_agent_power_code(e->>'power_state'),
                   fault = NULL, updated_at = clock_timestamp()
             WHERE uuid = i.uuid;
            UPDATE instance_action_events v SET result = 'Success',
                   finish_time = clock_timestamp()
              FROM instance_actions ia
             WHERE v.action_id = ia.id AND ia.instance_uuid = i.uuid
               AND ia.finish_time IS NULL AND v.finish_time IS NULL;
            INSERT INTO instance_action_events (action_id, event, result, finish_time)
            SELECT ia.id, CASE WHEN i.task_state = 'rescuing' THEN 'compute_rescue_instance'
                               ELSE 'compute_unrescue_instance' END,
                   'Success', clock_timestamp()
              FROM instance_actions ia
             WHERE ia.instance_uuid = i.uuid AND ia.finish_time IS NULL;
            UPDATE instance_actions SET finish_time = clock_timestamp()
             WHERE instance_uuid = i.uuid AND finish_time IS NULL;
        ELSIF i.task_state IS NULL AND st IN ('active', 'stopped', 'paused', 'suspended') THEN
            UPDATE instances SET power_state = compute_agent_power_code(e->>'power_state')
             WHERE uuid = i.uuid
               AND power_state <> compute_agent_power_code(e->>'power_state');
        END IF;
        rest := rest || jsonb_build_array(e || jsonb_build_object('vm_state', 'rescued'));
    END LOOP;
    RETURN compute_agent_observed_pre_rescue_agent(p_node, p_token,
                                                   d || jsonb_build_object('instances', rest));
END $$;
