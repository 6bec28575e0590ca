-- The agent channel (docs/agent-channel.md): node credentials, the
-- per-node desired-state version, what each instance's agent must apply
-- (power state and generation), and the events agents report.
--
-- As for the Compute API, the rules live here: each endpoint is one
-- function that checks the node credential and does its work in one
-- statement; nimbus-api's handlers (api-server/compute/compute_agent.c)
-- wrap them and hold long polls.

-- One row per compute node allowed to speak the channel.  The credential is
-- a 256-bit random secret shown once by `nimbus-manage node add`; only its
-- SHA-256 is kept (a slow hash adds nothing for a secret of that entropy).
CREATE TABLE agent_nodes (
    name             text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 255),
    secret_hash      text NOT NULL UNIQUE,
    revoked          boolean NOT NULL DEFAULT false,
    boot_id          text,
    agent_version    text,
    -- Raised (from agent_desired_seq, so monotonic across restarts and
    -- re-creations) on every change to the desired state of the node.
    desired_version  bigint NOT NULL DEFAULT 0,
    observed_version bigint NOT NULL DEFAULT 0,
    registered_at    timestamptz,
    last_seen        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE agent_desired_seq;

-- What the agent applies: the power state the user wants, raised
-- generation on every power action, and the reboot kind of that action.
ALTER TABLE instances
    ADD COLUMN agent_power      text NOT NULL DEFAULT 'running'
        CHECK (agent_power IN ('running', 'shutoff', 'paused', 'suspended')),
    ADD COLUMN agent_generation bigint NOT NULL DEFAULT 1,
    ADD COLUMN agent_reboot     text NOT NULL DEFAULT ''
        CHECK (agent_reboot IN ('', 'soft', 'hard'));

-- Events reported by agents; 'id' (chosen by the agent) makes retried
-- batches harmless.  Values are kept as text: an event is a record of what
-- a peer said, never a reason to reject the batch.
CREATE TABLE agent_events (
    id            text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    node          text NOT NULL,
    instance_uuid text,
    event         text NOT NULL,
    detail        text,
    event_time    text,
    received_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX agent_events_instance ON agent_events (instance_uuid, received_at);
CREATE INDEX agent_events_received ON agent_events (received_at);

-- ---- Generations: a power action (a new task_state set by
-- compute_server_action) raises the generation and sets the power state
-- the agent applies once.
CREATE FUNCTION compute_agent_generation() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    want text;
    rb text := '';
BEGIN
    IF NEW.task_state IS NOT DISTINCT FROM OLD.task_state THEN
        RETURN NEW;
    END IF;
    CASE NEW.task_state
    WHEN 'powering-off' THEN want := 'shutoff';
    WHEN 'powering-on' THEN want := 'running';
    WHEN 'rebooting' THEN want := 'running'; rb := 'soft';
    WHEN 'rebooting_hard' THEN want := 'running'; rb := 'hard';
    WHEN 'pausing' THEN want := 'paused';
    WHEN 'unpausing' THEN want := 'running';
    WHEN 'suspending' THEN want := 'suspended';
    WHEN 'resuming' THEN want := 'running';
    ELSE RETURN NEW;
    END CASE;
    NEW.agent_power := want;
    NEW.agent_reboot := rb;
    NEW.agent_generation := OLD.agent_generation + 1;
    RETURN NEW;
END $$;
CREATE TRIGGER instances_agent_generation BEFORE UPDATE OF task_state ON instances
    FOR EACH ROW EXECUTE FUNCTION compute_agent_generation();

-- ---- Desired-state versions: any change to what the document of a node
-- says raises the node's version and wakes its long polls
-- ('nimbus_agent_desired', payload the node name).
CREATE FUNCTION compute_agent_bump(p_node text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_node IS NULL THEN RETURN; END IF;
    UPDATE agent_nodes SET desired_version = nextval('agent_desired_seq') WHERE name = p_node;
    IF FOUND THEN
        PERFORM pg_notify('nimbus_agent_desired', p_node);
    END IF;
END $$;

CREATE FUNCTION compute_agent_instance_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM compute_agent_bump(NEW.node);
    ELSIF (OLD.node, OLD.deleted, OLD.task_state = 'deleting', OLD.agent_power,
           OLD.agent_generation, OLD.agent_reboot, OLD.name, OLD.image_ref, OLD.vcpus,
           OLD.memory_mb, OLD.root_gb)
          IS DISTINCT FROM
          (NEW.node, NEW.deleted, NEW.task_state = 'deleting', NEW.agent_power,
           NEW.agent_generation, NEW.agent_reboot, NEW.name, NEW.image_ref, NEW.vcpus,
           NEW.memory_mb, NEW.root_gb) THEN
        PERFORM compute_agent_bump(NEW.node);
        IF OLD.node IS DISTINCT FROM NEW.node THEN
            PERFORM compute_agent_bump(OLD.node);
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER instances_agent_desired AFTER INSERT OR UPDATE ON instances
    FOR EACH ROW EXECUTE FUNCTION compute_agent_instance_changed();

-- ---- Credentials.  200 when 'p_token' is the credential of 'p_node', 403
-- when it is another node's, 401 otherwise.
CREATE FUNCTION compute_agent_auth(p_node text, p_token text) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT CASE WHEN name = p_node THEN 200 ELSE 403 END FROM agent_nodes
                      WHERE secret_hash = encode(sha256(convert_to(p_token, 'UTF8')), 'hex')
                        AND NOT revoked), 401)
$$;

CREATE FUNCTION compute_agent_denied(code integer) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('code', code, 'message', CASE code
        WHEN 401 THEN 'The node credential is not valid.'
        ELSE 'This credential belongs to another node.' END)
$$;

-- A non-negative integer member of an agent document, clamped to integer;
-- 0 when absent or not a number.
CREATE FUNCTION compute_agent_int(d jsonb, k text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(d->k) = 'number'
                THEN least(greatest((d->>k)::numeric, 0), 2147483647)::integer ELSE 0 END
$$;

-- ---- 1. Register: upserts the compute node the scheduler sees.
CREATE FUNCTION compute_agent_register(p_node text, p_token text, d jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    code integer := compute_agent_auth(p_node, p_token);
    v bigint;
BEGIN
    IF code <> 200 THEN RETURN compute_agent_denied(code); END IF;
    INSERT INTO compute_nodes (host, hypervisor_hostname, hypervisor_type, vcpus, memory_mb,
                               local_gb, last_heartbeat)
    VALUES (p_node, p_node, upper(left(coalesce(d->>'hypervisor_type', 'qemu'), 32)),
            compute_agent_int(d, 'vcpus'), compute_agent_int(d, 'ram_mb'),
            compute_agent_int(d, 'disk_gb'), clock_timestamp())
    ON CONFLICT (hypervisor_hostname) DO UPDATE SET
        hypervisor_type = EXCLUDED.hypervisor_type, vcpus = EXCLUDED.vcpus,
        memory_mb = EXCLUDED.memory_mb, local_gb = EXCLUDED.local_gb,
        last_heartbeat = EXCLUDED.last_heartbeat, updated_at = clock_timestamp();
    UPDATE agent_nodes SET boot_id = left(d->>'boot_id', 64),
           agent_version = left(d->>'agent_version', 64), registered_at = clock_timestamp(),
           last_seen = clock_timestamp(),
           desired_version = CASE WHEN desired_version = 0
                                  THEN nextval('agent_desired_seq') ELSE desired_version END
     WHERE name = p_node RETURNING desired_version INTO v;
    RETURN jsonb_build_object('code', 200, 'body',
                              jsonb_build_object('heartbeat_interval', 5, 'desired_version', v));
END $$;

-- ---- 2. Inventory: heartbeat and resources.  404 when the node has not
-- registered (the agent registers again).
CREATE FUNCTION compute_agent_inventory(p_node text, p_token text, d jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE code integer := compute_agent_auth(p_node, p_token);
BEGIN
    IF code <> 200 THEN RETURN compute_agent_denied(code); END IF;
    UPDATE compute_nodes SET vcpus = compute_agent_int(d, 'vcpus'),
           memory_mb = compute_agent_int(d, 'ram_mb'), local_gb = compute_agent_int(d, 'disk_gb'),
           load = CASE WHEN jsonb_typeof(d->'load'->0) = 'number'
                       THEN (d->'load'->>0)::double precision ELSE load END,
           last_heartbeat = clock_timestamp()
     WHERE hypervisor_hostname = p_node;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('code', 404, 'message', 'Register first.');
    END IF;
    UPDATE agent_nodes SET last_seen = clock_timestamp() WHERE name = p_node;
    RETURN jsonb_build_object('code', 204);
END $$;

-- ---- 3. Desired state.
-- An id the agent accepts ([A-Za-z0-9._:-], shorter than 64 bytes), else
-- NULL: one odd image property must not make a node's whole document
-- unreadable.
CREATE FUNCTION compute_agent_token(s text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN s ~ '^[A-Za-z0-9._:-]{1,63}$' THEN s END
$$;

CREATE FUNCTION compute_agent_image_json(p_id text, with_props boolean) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce((
        SELECT jsonb_strip_nulls(jsonb_build_object(
            'id', im.id,
            'disk_format', compute_agent_token(left(im.disk_format, 15)),
            'container_format', compute_agent_token(left(im.container_format, 15)),
            'sha512', CASE WHEN im.os_hash_algo = 'sha512' AND im.os_hash_value ~ '^[0-9a-f]{128}$'
                           THEN im.os_hash_value END,
            'size', im.size,
            'properties', CASE WHEN with_props THEN jsonb_strip_nulls(jsonb_build_object(
                'kernel_id', compute_agent_token(im.properties->>'kernel_id'),
                'ramdisk_id', compute_agent_token(im.properties->>'ramdisk_id'),
                'os_command_line', CASE WHEN octet_length(im.properties->>'os_command_line') < 256
                                        THEN im.properties->>'os_command_line' END)) END))
          FROM images im
         WHERE p_id ~ '^[0-9a-fA-F-]{36}$' AND im.id = p_id::uuid),
        jsonb_build_object('id', coalesce(compute_agent_token(p_id), '')))
$$;

CREATE FUNCTION compute_agent_instance_json(i instances) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    img jsonb := compute_agent_image_json(i.image_ref, true);
    j jsonb;
BEGIN
    j := jsonb_build_object(
        'uuid', i.uuid,
        -- The agent keeps names shorter than 128 bytes: 30 characters fit.
        'name', left(i.name, 30),
        'flavor', jsonb_build_object('vcpus', i.vcpus, 'ram_mb', i.memory_mb,
                                     'disk_gb', i.root_gb),
        'image', img,
        'ports', '[]'::jsonb,
        'power_state', i.agent_power,
        'generation', i.agent_generation,
        'reboot', i.agent_reboot,
        'deleted', i.task_state = 'deleting');
    IF img->'properties'->>'kernel_id' IS NOT NULL THEN
        j := j || jsonb_build_object('kernel',
                 compute_agent_image_json(img->'properties'->>'kernel_id', false));
    END IF;
    IF img->'properties'->>'ramdisk_id' IS NOT NULL THEN
        j := j || jsonb_build_object('ramdisk',
                 compute_agent_image_json(img->'properties'->>'ramdisk_id', false));
    END IF;
    RETURN j;
END $$;

-- {"code": 200, "version": V, "body": document} when the node's version is
-- not 'p_since'; {"code": 304, "version": V} when it is.
CREATE FUNCTION compute_agent_desired(p_node text, p_token text, p_since bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    code integer := compute_agent_auth(p_node, p_token);
    v bigint;
BEGIN
    IF code <> 200 THEN RETURN compute_agent_denied(code); END IF;
    SELECT desired_version INTO v FROM agent_nodes WHERE name = p_node;
    IF v = p_since AND p_since <> 0 THEN
        RETURN jsonb_build_object('code', 304, 'version', v);
    END IF;
    RETURN jsonb_build_object('code', 200, 'version', v, 'body', jsonb_build_object(
        'version', v,
        'instances', coalesce((SELECT jsonb_agg(compute_agent_instance_json(i) ORDER BY i.id)
                                 FROM instances i WHERE i.node = p_node AND NOT i.deleted),
                              '[]'::jsonb)));
END $$;

-- ---- 4. Observed state: finishes tasks.  A reported state is applied when
-- the agent has applied the generation the API asked for; builds become
-- ACTIVE (or SHUTOFF), power actions reach their final vm_state, a guest
-- that powered itself off becomes SHUTOFF and stays so, deletions finish
-- with compute_instance_destroyed, and failures become ERROR with a fault.
CREATE FUNCTION compute_agent_power_code(p text) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p WHEN 'running' THEN 1 WHEN 'paused' THEN 3 WHEN 'shutoff' THEN 4
                  WHEN 'crashed' THEN 6 WHEN 'suspended' THEN 7 ELSE 0 END
$$;

CREATE FUNCTION compute_agent_observed(p_node text, p_token text, d jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    code integer := compute_agent_auth(p_node, p_token);
    x record;
    i instances;
    power_tasks text[] := ARRAY['spawning', 'powering-off', 'powering-on', 'rebooting',
                                'rebooting_hard', 'pausing', 'unpausing', 'suspending',
                                'resuming'];
BEGIN
    IF code <> 200 THEN RETURN compute_agent_denied(code); END IF;
    IF jsonb_typeof(d->'instances') <> 'array' THEN
        RETURN jsonb_build_object('code', 400, 'message', 'Expected {"instances": [...]}.');
    END IF;
    UPDATE agent_nodes SET last_seen = clock_timestamp(),
           observed_version = CASE WHEN jsonb_typeof(d->'desired_version') = 'number'
                                   THEN (d->>'desired_version')::numeric::bigint
                                   ELSE observed_version END
     WHERE name = p_node;
    FOR x IN SELECT e->>'uuid' AS uuid, e->>'vm_state' AS vm_state,
                    e->>'power_state' AS power,
                    CASE WHEN jsonb_typeof(e->'generation') = 'number'
                         THEN (e->>'generation')::numeric::bigint ELSE 0 END AS generation,
                    left(e->>'fault', 1024) AS fault
               FROM jsonb_array_elements(d->'instances') e
              WHERE jsonb_typeof(e) = 'object'
                AND e->>'uuid' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
    LOOP
        SELECT * INTO i FROM instances
         WHERE uuid = x.uuid::uuid AND node = p_node AND NOT deleted FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        IF i.task_state = 'deleting' THEN
            IF x.vm_state = 'deleted' THEN
                PERFORM compute_instance_destroyed(i.uuid);
                UPDATE instance_actions SET finish_time = clock_timestamp()
                 WHERE instance_uuid = i.uuid AND finish_time IS NULL;
            END IF;
            CONTINUE;
        END IF;
        IF x.vm_state = 'error' THEN
            IF i.vm_state <> 'error' OR i.task_state IS NOT NULL THEN
                UPDATE instances SET vm_state = 'error', task_state = NULL,
                       power_state = compute_agent_power_code(x.power),
                       fault = jsonb_build_object('code', 500,
                           'message', coalesce(x.fault, 'The agent reported an error.'),
                           'details', '', 'created', compute_ts(clock_timestamp())),
                       updated_at = clock_timestamp()
                 WHERE uuid = i.uuid;
                UPDATE instance_actions SET finish_time = clock_timestamp(),
                       message = 'Error'
                 WHERE instance_uuid = i.uuid AND finish_time IS NULL;
            END IF;
            CONTINUE;
        END IF;
        CONTINUE WHEN x.vm_state NOT IN ('active', 'stopped', 'paused', 'suspended');
        -- Not yet at the generation the API asked for, or in a task the
        -- agent does not carry out (resize, rebuild, migrations): wait.
        CONTINUE WHEN x.generation < i.agent_generation;
        CONTINUE WHEN i.task_state IS NOT NULL AND NOT (i.task_state = ANY (power_tasks));
        CONTINUE WHEN i.vm_state = x.vm_state AND i.task_state IS NULL
                      AND i.power_state = compute_agent_power_code(x.power);
        UPDATE instances SET vm_state = x.vm_state, task_state = NULL,
               power_state = compute_agent_power_code(x.power),
               launched_at = CASE WHEN i.vm_state = 'building' THEN clock_timestamp()
                             ELSE launched_at END,
               fault = CASE WHEN i.vm_state = 'error' THEN NULL ELSE fault END,
               -- A guest that stopped by itself stays stopped (Nova's rule).
               agent_power = CASE WHEN x.vm_state = 'stopped' AND i.task_state IS NULL
                                  THEN 'shutoff' ELSE agent_power END,
               updated_at = clock_timestamp()
         WHERE uuid = i.uuid;
        IF i.task_state IS NOT NULL THEN
            UPDATE instance_actions SET finish_time = clock_timestamp()
             WHERE instance_uuid = i.uuid AND finish_time IS NULL;
        END IF;
    END LOOP;
    RETURN jsonb_build_object('code', 204);
END $$;

-- ---- 5. Events, idempotent by id; a week of them is kept.
CREATE FUNCTION compute_agent_events(p_node text, p_token text, d jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE code integer := compute_agent_auth(p_node, p_token);
BEGIN
    IF code <> 200 THEN RETURN compute_agent_denied(code); END IF;
    IF jsonb_typeof(d->'events') <> 'array' THEN
        RETURN jsonb_build_object('code', 400, 'message', 'Expected {"events": [...]}.');
    END IF;
    INSERT INTO agent_events (id, node, instance_uuid, event, detail, event_time)
    SELECT e->>'id', p_node, left(e->>'uuid', 64), left(e->>'event', 64),
           left(e->>'detail', 1024), left(e->>'time', 64)
      FROM jsonb_array_elements(d->'events') e
     WHERE jsonb_typeof(e) = 'object' AND length(e->>'id') BETWEEN 1 AND 64
       AND e->>'event' IS NOT NULL
    ON CONFLICT (id) DO NOTHING;
    DELETE FROM agent_events WHERE received_at < clock_timestamp() - interval '7 days';
    RETURN jsonb_build_object('code', 204);
END $$;
