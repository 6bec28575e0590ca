-- Moving servers between hosts (docs/compute.md "Moving servers between
-- hosts"): cold migration, resize to another host and evacuate, with a
-- row per move in 'migrations' (Nova's table) served by GET /os-migrations.
-- Live migration stays refused (see the docs for its design).
--
-- A cold move, step by step:
--   1. The API picks a destination (compute_move_claim: the filters of a
--      create, another host than the current one) and claims the flavor
--      there with the scheduler's conditional UPDATE, so no host is ever
--      overbooked.  The instance's node becomes the destination (its ports
--      are bound there by the trigger of 0006), its former node is kept in
--      'move_held_node' (state 'source'), task_state resize_migrating.
--   2. The source agent finds the instance in its document as a held copy
--      (action "migrate_out"): it stops the guest and serves its overlay on
--      its HTTP listener, to whoever shows the one-time secret of the
--      migration (the source document carries its SHA-256 only).  When the
--      source reports the copy stopped: task_state resize_migrated.
--   3. The destination agent finds the instance with action "migrate_in",
--      the source's URL and the secret: it pulls the overlay, checks its
--      size and hash, points it at its own cached base and defines the
--      guest, started when it ran before.  Its report at the generation:
--      VERIFY_RESIZE (vm_state resized), migration 'finished'.
--   4. confirmResize: the source's usage is given back and its copy deleted
--      (the held copy becomes "deleted" in its document until the source
--      reports it gone).  revertResize: the instance goes back to the
--      source (node, ports, old flavor), the destination's usage is given
--      back and its copy deleted the same way, the source starts the guest
--      again when it ran before.
-- Evacuate claims a destination, gives the dead source's usage back and has
-- the destination build the instance afresh from its image (agent action
-- "rebuild" on a node that has no copy: a create); the source's copy, if
-- that host ever comes back, is no longer desired there and its agent
-- deletes it after its grace period.
--
-- Functions of earlier migrations are wrapped, not rewritten: renamed to
-- <name>_pre_migrate and called by the new function of the old name.

CREATE TABLE migrations (
    id                  bigserial PRIMARY KEY,
    uuid                uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    instance_uuid       uuid NOT NULL REFERENCES instances (uuid) ON DELETE CASCADE,
    project_id          text NOT NULL,
    user_id             text NOT NULL,
    migration_type      text NOT NULL
        CHECK (migration_type IN ('migration', 'resize', 'evacuation', 'live-migration')),
    status              text NOT NULL,
    source_compute      text,
    source_node         text,
    dest_compute        text,
    dest_node           text,
    dest_host           text,
    old_instance_type_id text,
    new_instance_type_id text,
    -- The one-time secret with which the destination agent pulls the disk
    -- from the source agent: put in the desired documents of the two nodes
    -- (the source's gets its SHA-256 only) while the disk moves, cleared
    -- once the move finished or failed.  Never logged.
    disk_secret         text,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX migrations_instance ON migrations (instance_uuid, id DESC);
CREATE INDEX migrations_created ON migrations (created_at DESC, id DESC);

-- The node that still holds a copy of the instance besides its own node:
-- the source of a move until confirm or revert ('source'), then, until its
-- agent reports the copy gone, a node that must delete it ('delete').
ALTER TABLE instances
    ADD COLUMN move_held_node  text,
    ADD COLUMN move_held_state text CHECK (move_held_state IN ('source', 'delete'));
CREATE INDEX instances_move_held ON instances (move_held_node) WHERE move_held_node IS NOT NULL;

ALTER TABLE instances DROP CONSTRAINT instances_agent_action_check,
    ADD CONSTRAINT instances_agent_action_check
        CHECK (agent_action IN ('', 'resize', 'snapshot', 'rebuild', 'migrate'));

-- A held copy that changes changes the document of the node holding it.
CREATE FUNCTION compute_move_held_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM compute_agent_bump(NEW.move_held_node);
    IF OLD.move_held_node IS DISTINCT FROM NEW.move_held_node THEN
        PERFORM compute_agent_bump(OLD.move_held_node);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER instances_move_held_desired AFTER UPDATE OF move_held_node, move_held_state
    ON instances FOR EACH ROW
    WHEN ((OLD.move_held_node, OLD.move_held_state) IS DISTINCT FROM
          (NEW.move_held_node, NEW.move_held_state))
    EXECUTE FUNCTION compute_move_held_changed();

-- The latest migration of an instance.
CREATE FUNCTION compute_move_last(p_uuid uuid) RETURNS migrations
LANGUAGE sql STABLE AS $$
    SELECT * FROM migrations WHERE instance_uuid = p_uuid ORDER BY id DESC LIMIT 1
$$;

-- ---- Choosing and claiming a destination.  The filters of a create
-- (scheduler/sched_filters.c): enabled, alive (heard from in the last
-- minute, not forced down), the instance's availability zone, the same
-- hypervisor type as the node it is on (and the image's hypervisor_type
-- property when set), the flavor fits with the allocation ratios, and the
-- server group's policy (no other member on the host for anti-affinity;
-- every other member there for affinity).  Hosts with the least RAM in use
-- first.  Each candidate is claimed with the scheduler's conditional
-- UPDATE; the first that succeeds is the destination.  'p_host' restricts
-- to one host (evacuate's and os-migrateLive's 'host').  NULL when no host
-- fits.  With 'p_claim' false nothing is claimed: the first host that
-- would fit is returned.
CREATE FUNCTION compute_move_claim(i instances, p_vcpus integer, p_ram integer, p_disk integer,
                                   p_host text, p_claim boolean DEFAULT true)
RETURNS compute_nodes
LANGUAGE plpgsql AS $$
DECLARE
    n compute_nodes;
    won compute_nodes;
    src_type text := (SELECT upper(hypervisor_type) FROM compute_nodes
                       WHERE hypervisor_hostname = i.node);
    img_type text := (SELECT upper(properties->>'hypervisor_type') FROM images
                       WHERE i.image_ref ~ '^[0-9a-fA-F-]{36}$' AND id = i.image_ref::uuid);
    pol text := (SELECT policy FROM server_groups WHERE uuid = i.server_group);
BEGIN
    FOR n IN
        SELECT * FROM compute_nodes c
         WHERE c.hypervisor_hostname IS DISTINCT FROM i.node
           AND c.host IS DISTINCT FROM i.host
           AND NOT c.disabled AND NOT c.forced_down
           AND c.last_heartbeat > clock_timestamp() - interval '60 seconds'
           AND (p_host IS NULL OR c.host = p_host OR c.hypervisor_hostname = p_host)
           AND (i.availability_zone IS NULL OR c.availability_zone = i.availability_zone)
           AND (src_type IS NULL OR upper(c.hypervisor_type) = src_type)
           AND (img_type IS NULL OR upper(c.hypervisor_type) = img_type)
           AND (pol IS DISTINCT FROM 'anti-affinity' OR NOT EXISTS (
                SELECT 1 FROM instances o WHERE o.server_group = i.server_group
                   AND o.uuid <> i.uuid AND NOT o.deleted
                   AND (o.node = c.hypervisor_hostname OR o.move_held_node = c.hypervisor_hostname)))
           AND (pol IS DISTINCT FROM 'affinity' OR NOT EXISTS (
                SELECT 1 FROM instances o WHERE o.server_group = i.server_group
                   AND o.uuid <> i.uuid AND NOT o.deleted
                   AND o.node IS DISTINCT FROM c.hypervisor_hostname))
         ORDER BY c.memory_mb_used::float8 / greatest(c.memory_mb, 1), c.id
    LOOP
        IF NOT p_claim THEN
            CONTINUE WHEN NOT (n.vcpus_used + p_vcpus <= n.vcpus * n.cpu_allocation_ratio
                AND n.memory_mb_used + p_ram
                    <= (n.memory_mb - n.reserved_host_memory_mb) * n.ram_allocation_ratio
                AND n.local_gb_used + p_disk <= n.local_gb * n.disk_allocation_ratio);
            RETURN n;
        END IF;
        UPDATE compute_nodes SET vcpus_used = vcpus_used + p_vcpus,
               memory_mb_used = memory_mb_used + p_ram,
               local_gb_used = local_gb_used + p_disk,
               running_vms = running_vms + 1, updated_at = clock_timestamp()
         WHERE id = n.id
           AND vcpus_used + p_vcpus <= vcpus * cpu_allocation_ratio
           AND memory_mb_used + p_ram
               <= (memory_mb - reserved_host_memory_mb) * ram_allocation_ratio
           AND local_gb_used + p_disk <= local_gb * disk_allocation_ratio
        RETURNING * INTO won;
        IF FOUND THEN RETURN won; END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- Gives back what an instance of this size used on 'p_node'.
CREATE FUNCTION compute_move_release(p_node text, p_vcpus integer, p_ram integer,
                                     p_disk integer) RETURNS void
LANGUAGE sql AS $$
    UPDATE compute_nodes SET vcpus_used = greatest(vcpus_used - p_vcpus, 0),
           memory_mb_used = greatest(memory_mb_used - p_ram, 0),
           local_gb_used = greatest(local_gb_used - p_disk, 0),
           running_vms = greatest(running_vms - 1, 0), updated_at = clock_timestamp()
     WHERE hypervisor_hostname = p_node
$$;

-- Nova's answer when no host is found: 400, the server as it was, and the
-- attempt recorded as an instance action that ended in error.
CREATE FUNCTION compute_move_no_host(p_uuid uuid, p_action text, p_event text, c jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE aid bigint;
BEGIN
    INSERT INTO instance_actions (instance_uuid, action, request_id, user_id, project_id,
                                  message, finish_time)
    VALUES (p_uuid, p_action, c->>'request_id', c->>'user_id', c->>'project_id', 'Error',
            clock_timestamp())
    RETURNING id INTO aid;
    INSERT INTO instance_action_events (action_id, event, result, traceback, finish_time)
    VALUES (aid, p_event, 'Error', 'No valid host was found.', clock_timestamp());
    RETURN jsonb_build_object('code', 400, 'message', format(
        'No valid host was found. There are not enough hosts available for instance %s.',
        p_uuid));
END $$;

-- A cold move needs the source's agent to serve the disk: its console
-- proxy's listener (docs/compute-agent.md); containers (runc nodes) have
-- no disk to move.  NULL when it can, else the 409 to answer.
CREATE FUNCTION compute_move_source_check(i instances, p_action text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN (SELECT upper(hypervisor_type) FROM compute_nodes
               WHERE hypervisor_hostname = i.node) = 'RUNC'
        THEN jsonb_build_object('code', 409, 'message', format(
            'Cannot ''%s'' instance %s: containers cannot move between hosts.',
            p_action, i.uuid))
        WHEN (SELECT console_url FROM agent_nodes WHERE name = i.node) IS NULL
        THEN jsonb_build_object('code', 409, 'message', format(
            'Cannot ''%s'' instance %s: the agent of host %s does not serve disks to other '
            'hosts (it runs no [console] listener).', p_action, i.uuid, i.host)) END
$$;

-- Starts a cold move of 'i' (locked by the caller) to a claimed node 'dst'
-- with flavor 'f' (the current one for a migration): the migration row,
-- the instance on its new node with the source held, the disk secret.
CREATE FUNCTION compute_move_start(i instances, dst compute_nodes, f flavors, p_type text,
                                   c jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO migrations (instance_uuid, project_id, user_id, migration_type, status,
                            source_compute, source_node, dest_compute, dest_node, dest_host,
                            old_instance_type_id, new_instance_type_id, disk_secret)
    VALUES (i.uuid, i.project_id, c->>'user_id', p_type, 'migrating', i.host, i.node,
            dst.host, dst.hypervisor_hostname, dst.host_ip, i.flavor_id, f.id,
            replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
    UPDATE instances SET
           old_flavor = jsonb_build_object('id', i.flavor_id, 'vcpus', i.vcpus,
               'ram', i.memory_mb, 'disk', i.root_gb, 'ephemeral', i.ephemeral_gb,
               'swap', i.swap),
           new_flavor_id = f.id, flavor_id = f.id, vcpus = f.vcpus, memory_mb = f.ram,
           root_gb = f.disk, ephemeral_gb = f.ephemeral, swap = f.swap,
           host = dst.host, node = dst.hypervisor_hostname,
           move_held_node = i.node, move_held_state = 'source',
           task_state = 'resize_migrating', agent_action = 'migrate', agent_reboot = '',
           agent_generation = i.agent_generation + 1, updated_at = clock_timestamp()
     WHERE uuid = i.uuid;
    PERFORM compute_record_action(i.uuid, CASE p_type WHEN 'resize' THEN 'resize'
                                  ELSE 'migrate' END,
                                  c->>'request_id', c->>'user_id', c->>'project_id', false);
END $$;

-- ---- Actions: migrate, resize to another host, confirm/revert of a move,
-- evacuate.
ALTER FUNCTION compute_server_action(uuid, text, jsonb, jsonb)
    RENAME TO compute_server_action_pre_migrate;

CREATE FUNCTION compute_server_action(p_uuid uuid, p_action text, a jsonb, c jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    i instances;
    err jsonb;
    r jsonb;
    f flavors;
    dst compute_nodes;
    m migrations;
    src_host text;
    ok_vm text[];
    ai record;
BEGIN
    -- os-migrateLive goes on to 0010's refusal (docs/compute.md).
    IF p_action NOT IN ('migrate', 'resize', 'confirmResize', 'revertResize', 'evacuate') THEN
        RETURN compute_server_action_pre_migrate(p_uuid, p_action, a, c);
    END IF;

    IF p_action = 'resize' THEN
        -- The same-host resize of 0007 first; when the host cannot fit the
        -- new flavor, the resize goes to another host the way a migration
        -- does.
        r := compute_server_action_pre_migrate(p_uuid, p_action, a, c);
        IF (r->>'code')::int <> 409 OR r->>'message' NOT LIKE 'No valid host was found.%' THEN
            RETURN r;
        END IF;
        SELECT * INTO i FROM instances WHERE uuid = p_uuid FOR UPDATE;
        SELECT * INTO f FROM flavors WHERE id = a->>'flavorRef';
        err := compute_move_source_check(i, 'resize');
        IF err IS NOT NULL THEN RETURN err; END IF;
        dst := compute_move_claim(i, f.vcpus, f.ram, f.disk + f.ephemeral, NULL);
        IF dst.id IS NULL THEN
            RETURN compute_move_no_host(p_uuid, 'resize', 'conductor_migrate_server', c);
        END IF;
        PERFORM compute_move_start(i, dst, f, 'resize', c);
        RETURN jsonb_build_object('code', 202);
    END IF;

    IF p_action IN ('confirmResize', 'revertResize') THEN
        SELECT * INTO i FROM instances WHERE uuid = p_uuid AND NOT deleted;
        IF NOT FOUND OR i.move_held_node IS NULL OR i.move_held_state <> 'source' THEN
            -- A resize on the same host (0007).
            RETURN compute_server_action_pre_migrate(p_uuid, p_action, a, c);
        END IF;
        ai := compute_action_instance(p_uuid, p_action, c, ARRAY['resized']);
        i := ai.i; err := ai.err;
        IF i.uuid IS NULL THEN RETURN err; END IF;
        IF i.vm_state <> 'resized' THEN
            RETURN jsonb_build_object('code', 409, 'message', 'Instance has not been resized.');
        END IF;
        IF err IS NOT NULL THEN RETURN err; END IF;
        m := compute_move_last(p_uuid);
        IF p_action = 'confirmResize' THEN
            -- The source gives back the old flavor and deletes its copy.
            PERFORM compute_move_release(i.move_held_node, (i.old_flavor->>'vcpus')::int,
                (i.old_flavor->>'ram')::int,
                (i.old_flavor->>'disk')::int + (i.old_flavor->>'ephemeral')::int);
            UPDATE instances SET vm_state = CASE WHEN power_state = 4 THEN 'stopped'
                                                 ELSE 'active' END,
                   task_state = NULL, new_flavor_id = NULL, old_flavor = NULL,
                   move_held_state = 'delete', updated_at = clock_timestamp()
             WHERE uuid = p_uuid;
            UPDATE migrations SET status = 'confirmed', disk_secret = NULL,
                   updated_at = clock_timestamp()
             WHERE id = m.id;
            PERFORM compute_record_action(p_uuid, 'confirmResize', c->>'request_id',
                                          c->>'user_id', c->>'project_id', true);
            RETURN jsonb_build_object('code', 204);
        END IF;
        -- Revert: back to the source with the old flavor; the destination
        -- gives back what it claimed and deletes its copy.
        PERFORM compute_move_release(i.node, i.vcpus, i.memory_mb, i.root_gb + i.ephemeral_gb);
        SELECT host INTO src_host FROM compute_nodes WHERE hypervisor_hostname = i.move_held_node;
        UPDATE instances SET flavor_id = i.old_flavor->>'id',
               vcpus = (i.old_flavor->>'vcpus')::int, memory_mb = (i.old_flavor->>'ram')::int,
               root_gb = (i.old_flavor->>'disk')::int,
               ephemeral_gb = (i.old_flavor->>'ephemeral')::int,
               swap = (i.old_flavor->>'swap')::int,
               old_flavor = NULL, new_flavor_id = NULL,
               node = i.move_held_node, host = coalesce(src_host, m.source_compute),
               move_held_node = i.node, move_held_state = 'delete',
               task_state = 'resize_reverting', agent_action = '', agent_reboot = '',
               agent_generation = i.agent_generation + 1, updated_at = clock_timestamp()
         WHERE uuid = p_uuid;
        UPDATE migrations SET status = 'reverting', disk_secret = NULL,
               updated_at = clock_timestamp()
         WHERE id = m.id;
        PERFORM compute_record_action(p_uuid, 'revertResize', c->>'request_id', c->>'user_id',
                                      c->>'project_id', false);
        RETURN jsonb_build_object('code', 202);
    END IF;

    -- migrate, evacuate.
    ok_vm := CASE p_action WHEN 'migrate' THEN ARRAY['active', 'stopped']
                           ELSE ARRAY['active', 'stopped', 'error'] END;
    ai := compute_action_instance(p_uuid, p_action, c, NULL);
    i := ai.i; err := ai.err;
    IF i.uuid IS NULL THEN RETURN err; END IF;
    IF err IS NOT NULL THEN RETURN err; END IF;
    IF p_action = 'evacuate' THEN
        IF i.host IS NOT NULL AND EXISTS (
               SELECT 1 FROM compute_nodes WHERE host = i.host AND NOT forced_down
                  AND last_heartbeat > clock_timestamp() - interval '60 seconds') THEN
            RETURN jsonb_build_object('code', 409, 'message', format(
                'Compute service of %s is still in use.', i.host));
        END IF;
        IF coalesce((a->>'onSharedStorage')::boolean, false) THEN
            -- Nimbus nodes keep instance disks on local storage only.
            RETURN jsonb_build_object('code', 400, 'message',
                'Invalid state of instance files on shared storage: Nimbus compute nodes '
                'have no shared instance storage; evacuate with onSharedStorage false.');
        END IF;
        IF a->>'host' IS NOT NULL AND (a->>'host' = i.host OR a->>'host' = i.node) THEN
            RETURN jsonb_build_object('code', 400, 'message',
                'The target host can''t be the same one.');
        END IF;
    END IF;
    IF NOT (i.vm_state = ANY (ok_vm)) OR i.task_state IS NOT NULL THEN
        RETURN jsonb_build_object('code', 409, 'message', format(
            'Cannot ''%s'' instance %s while it is in vm_state %s', p_action, p_uuid,
            i.vm_state) || CASE WHEN i.task_state IS NOT NULL
                           THEN format(' and task_state %s', i.task_state) ELSE '' END);
    END IF;
    dst := compute_move_claim(i, i.vcpus, i.memory_mb, i.root_gb + i.ephemeral_gb,
                              CASE WHEN p_action = 'evacuate' THEN a->>'host' END,
                              i.node IS NOT NULL);
    IF dst.id IS NOT NULL AND i.node IS NULL THEN
        -- No node (an instance placed by hand): nothing to move from.
        RETURN jsonb_build_object('code', 409, 'message', format(
            'Cannot ''%s'' instance %s: it has no host.', p_action, p_uuid));
    END IF;
    IF dst.id IS NULL THEN
        RETURN compute_move_no_host(p_uuid, p_action, CASE p_action
            WHEN 'migrate' THEN 'conductor_migrate_server' ELSE 'conductor_rebuild_server' END, c);
    END IF;
    IF p_action = 'migrate' THEN
        err := compute_move_source_check(i, 'migrate');
        IF err IS NOT NULL THEN
            -- Give the claim back: nothing changes.
            PERFORM compute_move_release(dst.hypervisor_hostname, i.vcpus, i.memory_mb,
                                         i.root_gb + i.ephemeral_gb);
            RETURN err;
        END IF;
        f.id := i.flavor_id; f.vcpus := i.vcpus; f.ram := i.memory_mb; f.disk := i.root_gb;
        f.ephemeral := i.ephemeral_gb; f.swap := i.swap;
        PERFORM compute_move_start(i, dst, f, 'migration', c);
        RETURN jsonb_build_object('code', 202);
    END IF;
    -- Evacuate: the dead source gives its usage back now; the destination
    -- builds the instance from its image.  A copy left on the source is
    -- deleted by its agent when that host comes back (not desired there).
    PERFORM compute_move_release(i.node, i.vcpus, i.memory_mb, i.root_gb + i.ephemeral_gb);
    INSERT INTO migrations (instance_uuid, project_id, user_id, migration_type, status,
                            source_compute, source_node, dest_compute, dest_node, dest_host,
                            old_instance_type_id, new_instance_type_id)
    VALUES (i.uuid, i.project_id, c->>'user_id', 'evacuation', 'accepted', i.host, i.node,
            dst.host, dst.hypervisor_hostname, dst.host_ip, i.flavor_id, i.flavor_id);
    UPDATE instances SET host = dst.host, node = dst.hypervisor_hostname,
           move_held_node = NULL, move_held_state = NULL,
           vm_state = CASE WHEN vm_state = 'error' THEN 'active' ELSE vm_state END,
           task_state = 'rebuilding', agent_action = 'rebuild', agent_reboot = '',
           agent_snapshot = NULL, fault = NULL,
           agent_generation = i.agent_generation + 1, updated_at = clock_timestamp()
     WHERE uuid = p_uuid;
    PERFORM compute_record_action(p_uuid, 'evacuate', c->>'request_id', c->>'user_id',
                                  c->>'project_id', false);
    -- Nova 2.1 answers evacuate with 200 and the admin password.
    RETURN jsonb_build_object('code', 200);
END $$;

-- ---- Desired documents.  The instance on its own node: during a move,
-- action "migrate_in" with where to pull the disk from and the secret.
ALTER FUNCTION compute_agent_instance_json(instances)
    RENAME TO compute_agent_instance_json_pre_migrate;

CREATE FUNCTION compute_agent_instance_json(i instances) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    j jsonb := compute_agent_instance_json_pre_migrate(i);
    m migrations;
    url text;
BEGIN
    IF i.agent_action = 'migrate' THEN
        m := compute_move_last(i.uuid);
        SELECT console_url INTO url FROM agent_nodes WHERE name = m.source_node;
        j := j || jsonb_build_object('action', 'migrate_in', 'migration', jsonb_strip_nulls(
                 jsonb_build_object('id', m.uuid,
                     'source_url', url || '/migration/' || i.uuid::text || '/disk',
                     'secret', m.disk_secret)));
    END IF;
    RETURN j;
END $$;

-- The copy a node holds for a move: the source's (stopped, its disk
-- served for the migration, "migrate_out" with the secret's SHA-256) or
-- one to delete.
CREATE FUNCTION compute_agent_held_json(i instances) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE m migrations;
BEGIN
    IF i.move_held_state = 'delete' OR i.deleted THEN
        RETURN jsonb_build_object('uuid', i.uuid, 'name', left(i.name, 30), 'deleted', true);
    END IF;
    m := compute_move_last(i.uuid);
    RETURN compute_agent_instance_json_pre_migrate(i)
        || jsonb_build_object('power_state', 'shutoff', 'action', 'migrate_out',
               'reboot', '',
               'migration', jsonb_strip_nulls(jsonb_build_object('id', m.uuid,
                   'secret_sha256', encode(sha256(convert_to(m.disk_secret, 'UTF8')), 'hex'))));
END $$;

ALTER FUNCTION compute_agent_desired(text, text, bigint) RENAME TO compute_agent_desired_pre_migrate;

CREATE FUNCTION compute_agent_desired(p_node text, p_token text, p_since bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r jsonb := compute_agent_desired_pre_migrate(p_node, p_token, p_since);
    held jsonb;
BEGIN
    IF (r->>'code')::int <> 200 THEN RETURN r; END IF;
    SELECT jsonb_agg(compute_agent_held_json(i) ORDER BY i.id) INTO held
      FROM instances i WHERE i.move_held_node = p_node;
    IF held IS NULL THEN RETURN r; END IF;
    RETURN jsonb_set(r, '{body,instances}', (r->'body'->'instances') || held);
END $$;

-- ---- Observed state: the steps of a move.
ALTER FUNCTION compute_agent_observed(text, text, jsonb) RENAME TO compute_agent_observed_pre_migrate;

CREATE FUNCTION compute_agent_observed(p_node text, p_token text, d jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
    i instances;
    m migrations;
    r record;
    st text;
    gen bigint;
BEGIN
    IF compute_agent_auth(p_node, p_token) = 200 AND jsonb_typeof(d->'instances') = 'array' THEN
        -- Only the entries of instances in a move (or held here): the
        -- others go on untouched, with no extra lookups.
        FOR r IN
            SELECT x AS e, s AS i FROM jsonb_array_elements(d->'instances') x
              JOIN instances s ON s.uuid = CASE WHEN jsonb_typeof(x) = 'object' AND x->>'uuid' ~
                  '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
                  THEN (x->>'uuid')::uuid END
             WHERE s.move_held_node = p_node
                OR (s.node = p_node AND NOT s.deleted
                    AND (s.agent_action = 'migrate'
                         OR s.task_state IN ('resize_reverting', 'rebuilding')))
               FOR UPDATE OF s
        LOOP
            e := r.e;
            i := r.i;
            st := e->>'vm_state';
            gen := CASE WHEN jsonb_typeof(e->'generation') = 'number'
                        THEN (e->>'generation')::numeric::bigint ELSE 0 END;
            m := compute_move_last(i.uuid);
            IF i.move_held_node = p_node THEN
                -- The held copy: stopped and served, or gone.
                IF i.move_held_state = 'delete' AND st = 'deleted' THEN
                    UPDATE instances SET move_held_node = NULL, move_held_state = NULL
                     WHERE uuid = i.uuid;
                ELSIF i.move_held_state = 'source' AND i.task_state = 'resize_migrating'
                      AND st = 'stopped' AND gen >= i.agent_generation THEN
                    UPDATE instances SET task_state = 'resize_migrated',
                           updated_at = clock_timestamp()
                     WHERE uuid = i.uuid;
                    UPDATE migrations SET status = 'post-migrating',
                           updated_at = clock_timestamp()
                     WHERE id = m.id AND status = 'migrating';
                ELSIF i.move_held_state = 'source' AND i.task_state = 'resize_migrating'
                      AND st = 'error' THEN
                    -- The source could not stop or export the guest: the
                    -- move is undone (Nova's rollback before the disk
                    -- moved): back on the source with its old flavor and
                    -- power, the destination's claim given back, the
                    -- migration and the instance action in error.
                    PERFORM compute_move_release(i.node, i.vcpus, i.memory_mb,
                                                 i.root_gb + i.ephemeral_gb);
                    UPDATE instances SET node = p_node,
                           host = coalesce((SELECT host FROM compute_nodes
                                             WHERE hypervisor_hostname = p_node), m.source_compute),
                           move_held_node = NULL, move_held_state = NULL,
                           flavor_id = i.old_flavor->>'id',
                           vcpus = (i.old_flavor->>'vcpus')::int,
                           memory_mb = (i.old_flavor->>'ram')::int,
                           root_gb = (i.old_flavor->>'disk')::int,
                           ephemeral_gb = (i.old_flavor->>'ephemeral')::int,
                           swap = (i.old_flavor->>'swap')::int,
                           old_flavor = NULL, new_flavor_id = NULL,
                           task_state = NULL, agent_action = '', agent_reboot = '',
                           agent_generation = i.agent_generation + 1,
                           updated_at = clock_timestamp()
                     WHERE uuid = i.uuid;
                    UPDATE migrations SET status = 'error', disk_secret = NULL,
                           updated_at = clock_timestamp()
                     WHERE id = m.id;
                    INSERT INTO instance_action_events (action_id, event, result, traceback,
                                                        finish_time)
                    SELECT ia.id, 'compute_resize_instance', 'Error',
                           coalesce(left(e->>'fault', 1024), 'The source could not give up the guest.'),
                           clock_timestamp()
                      FROM instance_actions ia
                     WHERE ia.instance_uuid = i.uuid AND ia.finish_time IS NULL;
                    UPDATE instance_actions SET finish_time = clock_timestamp(), message = 'Error'
                     WHERE instance_uuid = i.uuid AND finish_time IS NULL;
                END IF;
                CONTINUE;
            END IF;
            CONTINUE WHEN i.deleted OR i.node IS DISTINCT FROM p_node;
            IF i.agent_action = 'migrate' AND st IN ('active', 'stopped')
               AND gen >= i.agent_generation
               AND i.task_state IN ('resize_migrating', 'resize_migrated') THEN
                -- The destination runs the guest: VERIFY_RESIZE.
                UPDATE instances SET vm_state = 'resized', task_state = NULL,
                       agent_action = '', power_state = compute_agent_power_code(e->>'power_state'),
                       updated_at = clock_timestamp()
                 WHERE uuid = i.uuid;
                UPDATE migrations SET status = 'finished', disk_secret = NULL,
                       updated_at = clock_timestamp()
                 WHERE id = m.id;
                INSERT INTO instance_action_events (action_id, event, result, finish_time)
                SELECT ia.id, 'compute_finish_resize', 'Success', clock_timestamp()
                  FROM instance_actions ia
                 WHERE ia.instance_uuid = i.uuid AND ia.finish_time IS NULL;
                UPDATE instance_actions SET finish_time = clock_timestamp()
                 WHERE instance_uuid = i.uuid AND finish_time IS NULL;
            ELSIF i.agent_action = 'migrate' AND st = 'error' THEN
                UPDATE migrations SET status = 'error', disk_secret = NULL,
                       updated_at = clock_timestamp()
                 WHERE id = m.id;
            ELSIF i.task_state = 'resize_reverting' AND m.status = 'reverting'
                  AND st IN ('active', 'stopped') AND gen >= i.agent_generation THEN
                UPDATE migrations SET status = 'reverted', updated_at = clock_timestamp()
                 WHERE id = m.id;
            ELSIF i.task_state = 'rebuilding' AND m.migration_type = 'evacuation'
                  AND m.status = 'accepted' AND m.dest_node = p_node THEN
                IF st IN ('active', 'stopped') AND gen >= i.agent_generation THEN
                    UPDATE migrations SET status = 'done', updated_at = clock_timestamp()
                     WHERE id = m.id;
                ELSIF st = 'error' THEN
                    UPDATE migrations SET status = 'error', updated_at = clock_timestamp()
                     WHERE id = m.id;
                END IF;
            END IF;
        END LOOP;
    END IF;
    RETURN compute_agent_observed_pre_migrate(p_node, p_token, d);
END $$;

-- ---- A deleted instance: what a held source still holds is given back
-- and its copy deleted.
ALTER FUNCTION compute_instance_destroyed(uuid) RENAME TO compute_instance_destroyed_pre_migrate;

CREATE FUNCTION compute_instance_destroyed(p_uuid uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE i instances;
BEGIN
    SELECT * INTO i FROM instances WHERE uuid = p_uuid AND NOT deleted FOR UPDATE;
    IF FOUND AND i.move_held_node IS NOT NULL AND i.move_held_state = 'source' THEN
        PERFORM compute_move_release(i.move_held_node, (i.old_flavor->>'vcpus')::int,
            (i.old_flavor->>'ram')::int,
            (i.old_flavor->>'disk')::int + (i.old_flavor->>'ephemeral')::int);
        -- The held copy is deleted too; the extra of a same-host resize
        -- (0007) does not apply.
        UPDATE instances SET move_held_state = 'delete', old_flavor = NULL,
               new_flavor_id = NULL
         WHERE uuid = p_uuid;
        UPDATE migrations SET status = 'error', disk_secret = NULL,
               updated_at = clock_timestamp()
         WHERE instance_uuid = p_uuid AND status IN ('migrating', 'post-migrating', 'finished');
    END IF;
    RETURN compute_instance_destroyed_pre_migrate(p_uuid);
END $$;

-- ---- GET /os-migrations (admin): Nova 2.1's fields, newest first;
-- filters host (source or destination compute), status, instance_uuid.
CREATE FUNCTION compute_migrations_json(p_host text, p_status text, p_instance text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('migrations', coalesce(jsonb_agg(jsonb_build_object(
            'id', m.id, 'status', m.status, 'instance_uuid', m.instance_uuid,
            'source_compute', m.source_compute, 'dest_compute', m.dest_compute,
            'source_node', m.source_node, 'dest_node', m.dest_node,
            'dest_host', m.dest_host, 'source_region', 'RegionOne',
            'dest_region', 'RegionOne',
            -- Nova's flavor ids here are integers: a numeric flavor id as
            -- such, NULL for others.
            'old_instance_type_id', CASE WHEN m.old_instance_type_id ~ '^[0-9]{1,9}$'
                                         THEN m.old_instance_type_id::int END,
            'new_instance_type_id', CASE WHEN m.new_instance_type_id ~ '^[0-9]{1,9}$'
                                         THEN m.new_instance_type_id::int END,
            'created_at', compute_ts_usec(m.created_at),
            'updated_at', compute_ts_usec(m.updated_at))
        ORDER BY m.created_at DESC, m.id DESC), '[]'::jsonb))
      FROM migrations m
     WHERE (p_host IS NULL OR m.source_compute = p_host OR m.dest_compute = p_host)
       AND (p_status IS NULL OR m.status = p_status)
       AND (p_instance IS NULL OR m.instance_uuid::text = lower(p_instance))
$$;

-- ---- Live migration (not carried out yet; docs/compute.md): each node's
-- libvirt URI as the other nodes reach it, registered by its agent
-- ([hypervisor] migration_uri), like console_url.
ALTER TABLE agent_nodes ADD COLUMN libvirt_uri text;

ALTER FUNCTION compute_agent_register(text, text, jsonb) RENAME TO compute_agent_register_pre_migrate;

CREATE FUNCTION compute_agent_register(p_node text, p_token text, d jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE r jsonb := compute_agent_register_pre_migrate(p_node, p_token, d);
BEGIN
    IF (r->>'code')::int = 200 THEN
        UPDATE agent_nodes SET libvirt_uri = CASE
            WHEN d->>'libvirt_uri' ~
                 '^(qemu|xen)(\+(tcp|tls|ssh))?://[]A-Za-z0-9.:@_[-]{1,200}/system(\?[A-Za-z0-9=&/._-]{0,200})?$'
            THEN d->>'libvirt_uri' END
         WHERE name = p_node;
    END IF;
    RETURN r;
END $$;
