-- Compute (Nova v2.1 compatible): flavors, key pairs, instances, build
-- requests, instance actions, quotas, compute nodes, server groups.
--
-- The rules that must hold under concurrency live here, next to the data:
-- server creation (rows, build requests, quota check) is one function
-- called in one statement, so it is one transaction; the state machine of
-- server actions is one function that checks and changes the state in the
-- same statement.  The API wraps these functions; the scheduler claims
-- host resources with one conditional UPDATE of compute_nodes.

CREATE TABLE flavors (
    id          text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    vcpus       integer NOT NULL CHECK (vcpus > 0),
    ram         integer NOT NULL CHECK (ram > 0),
    disk        integer NOT NULL DEFAULT 0 CHECK (disk >= 0),
    ephemeral   integer NOT NULL DEFAULT 0 CHECK (ephemeral >= 0),
    swap        integer NOT NULL DEFAULT 0 CHECK (swap >= 0),
    rxtx_factor double precision NOT NULL DEFAULT 1.0 CHECK (rxtx_factor > 0),
    is_public   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE flavor_extra_specs (
    flavor_id text NOT NULL REFERENCES flavors (id) ON DELETE CASCADE,
    key       text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    value     text NOT NULL CHECK (length(value) <= 255),
    PRIMARY KEY (flavor_id, key)
);

-- Projects that may use a private flavor.
CREATE TABLE flavor_projects (
    flavor_id  text NOT NULL REFERENCES flavors (id) ON DELETE CASCADE,
    project_id text NOT NULL,
    PRIMARY KEY (flavor_id, project_id)
);

INSERT INTO flavors (id, name, vcpus, ram, disk) VALUES
    ('1', 'm1.tiny', 1, 512, 1),
    ('2', 'm1.small', 1, 2048, 20),
    ('3', 'm1.medium', 2, 4096, 40),
    ('4', 'm1.large', 4, 8192, 80),
    ('5', 'm1.xlarge', 8, 16384, 160);

CREATE TABLE keypairs (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    user_id     text NOT NULL,
    public_key  text NOT NULL,
    fingerprint text NOT NULL,
    type        text NOT NULL DEFAULT 'ssh',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

-- Hypervisor hosts.  Agents (or tests) write the totals, state and
-- heartbeat; schedulers add to the used_* columns with one conditional
-- UPDATE per claim; the API subtracts when an instance is deleted.
CREATE TABLE compute_nodes (
    id                    bigserial PRIMARY KEY,
    uuid                  uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    host                  text NOT NULL,
    hypervisor_hostname   text NOT NULL UNIQUE,
    hypervisor_type       text NOT NULL DEFAULT 'QEMU',
    hypervisor_version    integer NOT NULL DEFAULT 7002000,
    architecture          text NOT NULL DEFAULT 'x86_64',
    host_ip               text NOT NULL DEFAULT '127.0.0.1',
    vcpus                 integer NOT NULL CHECK (vcpus >= 0),
    memory_mb             integer NOT NULL CHECK (memory_mb >= 0),
    local_gb              integer NOT NULL CHECK (local_gb >= 0),
    vcpus_used            integer NOT NULL DEFAULT 0,
    memory_mb_used        integer NOT NULL DEFAULT 0,
    local_gb_used         integer NOT NULL DEFAULT 0,
    running_vms           integer NOT NULL DEFAULT 0,
    cpu_allocation_ratio  double precision NOT NULL DEFAULT 16.0,
    ram_allocation_ratio  double precision NOT NULL DEFAULT 1.5,
    disk_allocation_ratio double precision NOT NULL DEFAULT 1.0,
    reserved_host_memory_mb integer NOT NULL DEFAULT 0,
    load                  double precision NOT NULL DEFAULT 0,
    build_failures        integer NOT NULL DEFAULT 0,
    availability_zone     text NOT NULL DEFAULT 'nova',
    disabled              boolean NOT NULL DEFAULT false,
    disabled_reason       text,
    forced_down           boolean NOT NULL DEFAULT false,
    last_heartbeat        timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX compute_nodes_host ON compute_nodes (host);

-- Scheduler processes register and heart-beat here (os-services lists them
-- as nova-scheduler).
CREATE TABLE scheduler_services (
    id             bigserial PRIMARY KEY,
    host           text NOT NULL UNIQUE,
    disabled       boolean NOT NULL DEFAULT false,
    disabled_reason text,
    forced_down    boolean NOT NULL DEFAULT false,
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE server_groups (
    uuid       uuid PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    policy     text NOT NULL CHECK (policy IN ('affinity', 'anti-affinity',
                                               'soft-affinity', 'soft-anti-affinity')),
    project_id text NOT NULL,
    user_id    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX server_groups_project ON server_groups (project_id);

CREATE TABLE instances (
    id                bigserial UNIQUE,
    uuid              uuid PRIMARY KEY,
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    project_id        text NOT NULL,
    user_id           text NOT NULL,
    image_ref         text NOT NULL DEFAULT '',
    flavor_id         text NOT NULL,
    vcpus             integer NOT NULL,
    memory_mb         integer NOT NULL,
    root_gb           integer NOT NULL,
    ephemeral_gb      integer NOT NULL DEFAULT 0,
    swap              integer NOT NULL DEFAULT 0,
    new_flavor_id     text,            -- resize target until confirmed/reverted
    old_flavor        jsonb,           -- flavor before a resize
    vm_state          text NOT NULL DEFAULT 'building',
    task_state        text DEFAULT 'scheduling',
    power_state       integer NOT NULL DEFAULT 0,
    host              text,
    node              text,
    availability_zone text,
    metadata          jsonb NOT NULL DEFAULT '{}',
    key_name          text,
    key_data          text,
    security_groups   jsonb NOT NULL DEFAULT '[{"name": "default"}]',
    networks          jsonb NOT NULL DEFAULT '[]',  -- as requested; ports come with the network service
    user_data         text,
    config_drive      text NOT NULL DEFAULT '',
    access_ip_v4      text NOT NULL DEFAULT '',
    access_ip_v6      text NOT NULL DEFAULT '',
    progress          integer NOT NULL DEFAULT 0,
    reservation_id    text NOT NULL,
    launch_index      integer NOT NULL DEFAULT 0,
    server_group      uuid REFERENCES server_groups (uuid) ON DELETE SET NULL,
    scheduler_hints   jsonb NOT NULL DEFAULT '{}',
    locked            boolean NOT NULL DEFAULT false,
    locked_by         text,            -- 'admin' or 'owner'
    fault             jsonb,           -- {code, message, details, created}
    console_output    text NOT NULL DEFAULT '',
    intent            jsonb,           -- admin move intents (migrate, live migrate, evacuate)
    reschedules       integer NOT NULL DEFAULT 0,  -- builds moved off a dead host
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    launched_at       timestamptz,
    terminated_at     timestamptz,
    deleted           boolean NOT NULL DEFAULT false,
    deleted_at        timestamptz
);
CREATE INDEX instances_project ON instances (project_id, created_at DESC, uuid DESC) WHERE NOT deleted;
CREATE INDEX instances_created ON instances (created_at DESC, uuid DESC);
CREATE INDEX instances_host ON instances (host) WHERE NOT deleted;
CREATE INDEX instances_group ON instances (server_group) WHERE server_group IS NOT NULL;

-- Work for the schedulers: one row per instance waiting for a host.
CREATE TABLE build_requests (
    instance_uuid uuid PRIMARY KEY REFERENCES instances (uuid) ON DELETE CASCADE,
    project_id    text NOT NULL,
    spec          jsonb NOT NULL,      -- vcpus, memory_mb, root_gb, az, group, hints, image props
    attempts      integer NOT NULL DEFAULT 0,
    -- A scheduler leases requests for a short time (claimed_by, claimed_until)
    -- so that each claim can be its own short transaction; a lease left by a
    -- scheduler that died expires and another scheduler takes the request.
    claimed_by    text,
    claimed_until timestamptz,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX build_requests_created ON build_requests (created_at);

CREATE TABLE instance_actions (
    id            bigserial PRIMARY KEY,
    instance_uuid uuid NOT NULL REFERENCES instances (uuid) ON DELETE CASCADE,
    action        text NOT NULL,
    request_id    text NOT NULL,
    user_id       text NOT NULL,
    project_id    text NOT NULL,
    message       text,
    start_time    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finish_time   timestamptz
);
CREATE INDEX instance_actions_instance ON instance_actions (instance_uuid, start_time);

CREATE TABLE instance_action_events (
    id          bigserial PRIMARY KEY,
    action_id   bigint NOT NULL REFERENCES instance_actions (id) ON DELETE CASCADE,
    event       text NOT NULL,
    result      text,
    traceback   text,
    start_time  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finish_time timestamptz
);

-- Quotas: defaults for every project, overrides per project.  Usage is
-- counted from the live rows inside the creating transaction (under a
-- per-project advisory lock), so it can never drift from the truth.
CREATE TABLE quota_defaults (
    resource   text PRIMARY KEY,
    hard_limit integer NOT NULL CHECK (hard_limit >= -1)
);
INSERT INTO quota_defaults VALUES
    ('instances', 10), ('cores', 20), ('ram', 51200), ('key_pairs', 100),
    ('server_groups', 10), ('server_group_members', 10), ('metadata_items', 128),
    ('injected_files', 5), ('injected_file_content_bytes', 10240),
    ('injected_file_path_bytes', 255), ('fixed_ips', -1), ('floating_ips', -1),
    ('security_groups', 10), ('security_group_rules', 20);

CREATE TABLE quotas (
    project_id text NOT NULL,
    resource   text NOT NULL REFERENCES quota_defaults (resource),
    hard_limit integer NOT NULL CHECK (hard_limit >= -1),
    PRIMARY KEY (project_id, resource)
);

CREATE VIEW quota_usage AS
    SELECT project_id, count(*)::integer AS instances,
           sum(vcpus)::integer AS cores, sum(memory_mb)::integer AS ram
      FROM instances WHERE NOT deleted GROUP BY project_id;

CREATE FUNCTION compute_quota_limit(p_project text, p_resource text)
RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT hard_limit FROM quotas
                      WHERE project_id = p_project AND resource = p_resource),
                    (SELECT hard_limit FROM quota_defaults WHERE resource = p_resource),
                    -1)
$$;

-- ---- Notifications for the schedulers.
CREATE FUNCTION compute_notify_build_request() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nimbus_build_requests', '');
    RETURN NULL;
END $$;
CREATE TRIGGER build_requests_notify AFTER INSERT ON build_requests
    FOR EACH STATEMENT EXECUTE FUNCTION compute_notify_build_request();

CREATE FUNCTION compute_notify_node() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('nimbus_compute_nodes', OLD.id::text);
    ELSE
        PERFORM pg_notify('nimbus_compute_nodes', NEW.id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER compute_nodes_notify AFTER INSERT OR UPDATE OR DELETE ON compute_nodes
    FOR EACH ROW EXECUTE FUNCTION compute_notify_node();

-- ---- Nova's status mapping (nova/api/openstack/common.py).
CREATE FUNCTION compute_status(vm text, task text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE vm
        WHEN 'active' THEN CASE task
            WHEN 'rebooting' THEN 'REBOOT' WHEN 'reboot_pending' THEN 'REBOOT'
            WHEN 'reboot_started' THEN 'REBOOT'
            WHEN 'rebooting_hard' THEN 'HARD_REBOOT' WHEN 'reboot_pending_hard' THEN 'HARD_REBOOT'
            WHEN 'reboot_started_hard' THEN 'HARD_REBOOT'
            WHEN 'rebuilding' THEN 'REBUILD' WHEN 'rebuild_block_device_mapping' THEN 'REBUILD'
            WHEN 'rebuild_spawning' THEN 'REBUILD'
            WHEN 'migrating' THEN 'MIGRATING'
            WHEN 'resize_prep' THEN 'RESIZE' WHEN 'resize_migrating' THEN 'RESIZE'
            WHEN 'resize_migrated' THEN 'RESIZE' WHEN 'resize_finish' THEN 'RESIZE'
            WHEN 'password' THEN 'PASSWORD'
            ELSE 'ACTIVE' END
        WHEN 'building' THEN 'BUILD'
        WHEN 'stopped' THEN CASE task
            WHEN 'resize_prep' THEN 'RESIZE' WHEN 'resize_migrating' THEN 'RESIZE'
            WHEN 'resize_migrated' THEN 'RESIZE' WHEN 'resize_finish' THEN 'RESIZE'
            WHEN 'rebuilding' THEN 'REBUILD'
            ELSE 'SHUTOFF' END
        WHEN 'resized' THEN CASE task WHEN 'resize_reverting' THEN 'REVERT_RESIZE'
            ELSE 'VERIFY_RESIZE' END
        WHEN 'paused' THEN CASE task WHEN 'migrating' THEN 'MIGRATING' ELSE 'PAUSED' END
        WHEN 'suspended' THEN 'SUSPENDED'
        WHEN 'rescued' THEN 'RESCUE'
        WHEN 'error' THEN CASE task WHEN 'rebuilding' THEN 'REBUILD' ELSE 'ERROR' END
        WHEN 'deleted' THEN 'DELETED'
        WHEN 'soft-delete' THEN 'SOFT_DELETED'
        WHEN 'shelved' THEN 'SHELVED'
        WHEN 'shelved_offloaded' THEN 'SHELVED_OFFLOADED'
        ELSE 'UNKNOWN' END
$$;

-- The vm_states a status filter selects (the inverse mapping, coarse, as
-- Nova's).
CREATE FUNCTION compute_status_vm_states(status text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE upper(status)
        WHEN 'ACTIVE' THEN ARRAY['active'] WHEN 'BUILD' THEN ARRAY['building']
        WHEN 'SHUTOFF' THEN ARRAY['stopped'] WHEN 'PAUSED' THEN ARRAY['paused']
        WHEN 'SUSPENDED' THEN ARRAY['suspended'] WHEN 'ERROR' THEN ARRAY['error']
        WHEN 'DELETED' THEN ARRAY['deleted'] WHEN 'RESCUE' THEN ARRAY['rescued']
        WHEN 'VERIFY_RESIZE' THEN ARRAY['resized'] WHEN 'SOFT_DELETED' THEN ARRAY['soft-delete']
        WHEN 'SHELVED' THEN ARRAY['shelved'] WHEN 'SHELVED_OFFLOADED' THEN ARRAY['shelved_offloaded']
        WHEN 'REBOOT' THEN ARRAY['active'] WHEN 'HARD_REBOOT' THEN ARRAY['active']
        WHEN 'RESIZE' THEN ARRAY['active', 'stopped'] WHEN 'MIGRATING' THEN ARRAY['active', 'paused']
        WHEN 'REBUILD' THEN ARRAY['active', 'stopped', 'error']
        ELSE NULL END
$$;

CREATE FUNCTION compute_ts(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;
CREATE FUNCTION compute_ts_usec(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
$$;

-- ---- JSON views, exactly the 2.1 fields.

CREATE FUNCTION compute_flavor_json(f flavors, base text, detail boolean) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN detail THEN jsonb_build_object(
        'id', f.id, 'name', f.name, 'ram', f.ram, 'vcpus', f.vcpus, 'disk', f.disk,
        'OS-FLV-EXT-DATA:ephemeral', f.ephemeral,
        'swap', CASE WHEN f.swap = 0 THEN to_jsonb(''::text) ELSE to_jsonb(f.swap) END,
        'rxtx_factor', f.rxtx_factor, 'os-flavor-access:is_public', f.is_public,
        'OS-FLV-DISABLED:disabled', false,
        'links', jsonb_build_array(
            jsonb_build_object('rel', 'self', 'href', base || '/v2.1/flavors/' || f.id),
            jsonb_build_object('rel', 'bookmark', 'href', base || '/flavors/' || f.id)))
    ELSE jsonb_build_object('id', f.id, 'name', f.name,
        'links', jsonb_build_array(
            jsonb_build_object('rel', 'self', 'href', base || '/v2.1/flavors/' || f.id),
            jsonb_build_object('rel', 'bookmark', 'href', base || '/flavors/' || f.id)))
    END
$$;

-- A flavor is visible to admins, and to others when public or shared with
-- their project.
CREATE FUNCTION compute_flavor_visible(f flavors, project text, admin boolean) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT admin OR f.is_public OR EXISTS (SELECT 1 FROM flavor_projects fp
                                            WHERE fp.flavor_id = f.id AND fp.project_id = project)
$$;

CREATE FUNCTION compute_server_json(i instances, base text, admin boolean, detail boolean)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    links jsonb := jsonb_build_array(
        jsonb_build_object('rel', 'self', 'href', base || '/v2.1/servers/' || i.uuid),
        jsonb_build_object('rel', 'bookmark', 'href', base || '/servers/' || i.uuid));
    status text := compute_status(i.vm_state, i.task_state);
    s jsonb;
BEGIN
    IF NOT detail THEN
        RETURN jsonb_build_object('id', i.uuid, 'name', i.name, 'links', links);
    END IF;
    s := jsonb_build_object(
        'id', i.uuid, 'name', i.name, 'status', status,
        'tenant_id', i.project_id, 'user_id', i.user_id, 'metadata', i.metadata,
        'hostId', CASE WHEN i.host IS NULL THEN ''
                  ELSE encode(sha224(convert_to(i.project_id || i.host, 'UTF8')), 'hex') END,
        'image', CASE WHEN i.image_ref = '' THEN to_jsonb(''::text) ELSE jsonb_build_object(
            'id', i.image_ref, 'links', jsonb_build_array(jsonb_build_object(
                'rel', 'bookmark', 'href', base || '/images/' || i.image_ref))) END,
        'flavor', jsonb_build_object('id', i.flavor_id, 'links', jsonb_build_array(
            jsonb_build_object('rel', 'bookmark', 'href', base || '/flavors/' || i.flavor_id))),
        'created', compute_ts(i.created_at), 'updated', compute_ts(i.updated_at),
        'addresses', '{}'::jsonb,
        'accessIPv4', i.access_ip_v4, 'accessIPv6', i.access_ip_v6,
        'links', links,
        'OS-DCF:diskConfig', 'MANUAL',
        'OS-EXT-AZ:availability_zone', coalesce(i.availability_zone, ''),
        'config_drive', i.config_drive,
        'key_name', i.key_name,
        'OS-SRV-USG:launched_at', compute_ts_usec(i.launched_at),
        'OS-SRV-USG:terminated_at', compute_ts_usec(i.terminated_at),
        'OS-EXT-STS:task_state', i.task_state,
        'OS-EXT-STS:vm_state', i.vm_state,
        'OS-EXT-STS:power_state', i.power_state,
        'os-extended-volumes:volumes_attached', '[]'::jsonb,
        'security_groups', i.security_groups);
    IF status IN ('ACTIVE', 'BUILD', 'REBUILD', 'RESIZE', 'VERIFY_RESIZE', 'MIGRATING') THEN
        s := s || jsonb_build_object('progress', i.progress);
    END IF;
    IF admin THEN
        s := s || jsonb_build_object(
            'OS-EXT-SRV-ATTR:host', i.host,
            'OS-EXT-SRV-ATTR:instance_name', 'instance-' || lpad(to_hex(i.id), 8, '0'),
            'OS-EXT-SRV-ATTR:hypervisor_hostname', i.node);
    END IF;
    IF i.fault IS NOT NULL AND i.vm_state IN ('error', 'deleted') THEN
        IF admin OR (i.fault->>'code')::int <> 500 THEN
            s := s || jsonb_build_object('fault', i.fault);
        ELSE
            s := s || jsonb_build_object('fault', i.fault - 'details');
        END IF;
    END IF;
    RETURN s;
END $$;

-- Records an instance action (and its first event) for os-instance-actions.
CREATE FUNCTION compute_record_action(p_uuid uuid, p_action text, p_req text,
                                      p_user text, p_project text, p_finished boolean)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE aid bigint;
BEGIN
    INSERT INTO instance_actions (instance_uuid, action, request_id, user_id, project_id,
                                  finish_time)
        VALUES (p_uuid, p_action, p_req, p_user, p_project,
                CASE WHEN p_finished THEN clock_timestamp() END)
        RETURNING id INTO aid;
    INSERT INTO instance_action_events (action_id, event, result, finish_time)
        VALUES (aid, 'api_' || p_action, CASE WHEN p_finished THEN 'Success' END,
                CASE WHEN p_finished THEN clock_timestamp() END);
END $$;

-- ---- Server creation: validation, quota and every row in one statement.
-- 'r' carries: project_id, user_id, name, image_ref, flavor_ref, key_name,
-- metadata, security_groups, networks, user_data, availability_zone,
-- min_count, max_count, group, hints, request_id, admin.
-- Returns {"code": 202, "id": ..., "reservation_id": ...} or
-- {"code": 4xx, "message": ...}.
CREATE FUNCTION compute_server_create(r jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    f flavors;
    proj text := r->>'project_id';
    kp keypairs;
    grp server_groups;
    want_min integer := coalesce((r->>'min_count')::int, 1);
    want_max integer := coalesce((r->>'max_count')::int, want_min);
    used_inst integer; used_cores integer; used_ram integer;
    lim_inst integer; lim_cores integer; lim_ram integer;
    fit integer; n integer;
    resv text := 'r-' || substr(md5(random()::text), 1, 8);
    first_id uuid;
    new_id uuid;
    az text := nullif(r->>'availability_zone', '');
    k integer;
    nm text;
BEGIN
    SELECT * INTO f FROM flavors WHERE id = r->>'flavor_ref';
    IF NOT FOUND OR NOT compute_flavor_visible(f, proj, (r->>'admin')::boolean) THEN
        RETURN jsonb_build_object('code', 400, 'message',
            format('Flavor %s could not be found.', r->>'flavor_ref'));
    END IF;
    -- The image must be one the project may boot (nimbus-image's table).
    IF coalesce(r->>'image_ref', '') <> '' AND NOT EXISTS (
            SELECT 1 FROM images im
            WHERE im.id::text = lower(r->>'image_ref') AND im.status = 'active'
              AND (im.visibility IN ('public', 'community') OR im.owner = proj
                   OR (r->>'admin')::boolean
                   OR EXISTS (SELECT 1 FROM image_members m WHERE m.image_id = im.id
                              AND m.member_id = proj AND m.status = 'accepted'))) THEN
        RETURN jsonb_build_object('code', 400, 'message',
            format('Image %s could not be found.', r->>'image_ref'));
    END IF;
    -- Networks given by uuid must exist and be the project's or shared.
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(r->'networks', '[]'::jsonb)) x
               WHERE jsonb_typeof(x) = 'object' AND x ? 'uuid'
                 AND NOT EXISTS (SELECT 1 FROM net.networks n WHERE n.id = x->>'uuid'
                                 AND (n.project_id = proj OR n.shared
                                      OR (r->>'admin')::boolean))) THEN
        RETURN jsonb_build_object('code', 400, 'message', format(
            'Network %s could not be found.',
            (SELECT x->>'uuid' FROM jsonb_array_elements(r->'networks') x
             WHERE jsonb_typeof(x) = 'object' AND x ? 'uuid'
               AND NOT EXISTS (SELECT 1 FROM net.networks n WHERE n.id = x->>'uuid')
             LIMIT 1)));
    END IF;
    IF r->>'key_name' IS NOT NULL THEN
        SELECT * INTO kp FROM keypairs WHERE user_id = r->>'user_id' AND name = r->>'key_name';
        IF NOT FOUND THEN
            RETURN jsonb_build_object('code', 400, 'message', 'Invalid key_name provided.');
        END IF;
    END IF;
    IF az IS NOT NULL AND NOT EXISTS (SELECT 1 FROM compute_nodes
                                       WHERE availability_zone = az) THEN
        RETURN jsonb_build_object('code', 400, 'message',
            format('The requested availability zone is not available'));
    END IF;
    IF r->>'group' IS NOT NULL THEN
        SELECT * INTO grp FROM server_groups WHERE uuid = (r->>'group')::uuid
            AND (project_id = proj OR (r->>'admin')::boolean) FOR UPDATE;
        IF NOT FOUND THEN
            RETURN jsonb_build_object('code', 400, 'message',
                format('Invalid input for field/attribute group. Server group %s not found.',
                       r->>'group'));
        END IF;
    END IF;

    -- Quota: serialise the creates of one project, then count.
    PERFORM pg_advisory_xact_lock(hashtext('nimbus-quota:' || proj));
    SELECT coalesce(count(*), 0), coalesce(sum(vcpus), 0), coalesce(sum(memory_mb), 0)
      INTO used_inst, used_cores, used_ram
      FROM instances WHERE project_id = proj AND NOT deleted;
    lim_inst := compute_quota_limit(proj, 'instances');
    lim_cores := compute_quota_limit(proj, 'cores');
    lim_ram := compute_quota_limit(proj, 'ram');
    fit := want_max;
    IF lim_inst >= 0 THEN fit := least(fit, lim_inst - used_inst); END IF;
    IF lim_cores >= 0 THEN fit := least(fit, (lim_cores - used_cores) / f.vcpus); END IF;
    IF lim_ram >= 0 THEN fit := least(fit, (lim_ram - used_ram) / f.ram); END IF;
    IF fit < want_min THEN
        IF lim_inst >= 0 AND used_inst + want_min > lim_inst THEN
            RETURN jsonb_build_object('code', 403, 'message', format(
                'Quota exceeded for instances: Requested %s, but already used %s of %s instances',
                want_min, used_inst, lim_inst));
        ELSIF lim_cores >= 0 AND used_cores + want_min * f.vcpus > lim_cores THEN
            RETURN jsonb_build_object('code', 403, 'message', format(
                'Quota exceeded for cores: Requested %s, but already used %s of %s cores',
                want_min * f.vcpus, used_cores, lim_cores));
        ELSE
            RETURN jsonb_build_object('code', 403, 'message', format(
                'Quota exceeded for ram: Requested %s, but already used %s of %s ram',
                want_min * f.ram, used_ram, lim_ram));
        END IF;
    END IF;
    IF grp.uuid IS NOT NULL THEN
        IF (SELECT count(*) FROM instances WHERE server_group = grp.uuid AND NOT deleted) + fit
           > compute_quota_limit(proj, 'server_group_members')
           AND compute_quota_limit(proj, 'server_group_members') >= 0 THEN
            RETURN jsonb_build_object('code', 403, 'message',
                'Quota exceeded, too many servers in group');
        END IF;
    END IF;
    n := fit;

    FOR k IN 0 .. n - 1 LOOP
        new_id := gen_random_uuid();
        IF first_id IS NULL THEN first_id := new_id; END IF;
        nm := r->>'name';
        IF n > 1 THEN nm := nm || '-' || (k + 1); END IF;
        INSERT INTO instances (uuid, name, project_id, user_id, image_ref, flavor_id, vcpus,
                               memory_mb, root_gb, ephemeral_gb, swap, availability_zone,
                               metadata, key_name, key_data, security_groups, networks,
                               user_data, reservation_id, launch_index, server_group,
                               scheduler_hints, config_drive)
        VALUES (new_id, nm, proj, r->>'user_id', coalesce(r->>'image_ref', ''), f.id, f.vcpus,
                f.ram, f.disk, f.ephemeral, f.swap, az,
                coalesce(r->'metadata', '{}'), kp.name, kp.public_key,
                coalesce(r->'security_groups', '[{"name": "default"}]'),
                coalesce(r->'networks', '[]'), r->>'user_data', resv, k, grp.uuid,
                coalesce(r->'hints', '{}'), coalesce(r->>'config_drive', ''));
        INSERT INTO build_requests (instance_uuid, project_id, spec)
        VALUES (new_id, proj, jsonb_build_object(
            'vcpus', f.vcpus, 'memory_mb', f.ram, 'root_gb', f.disk + f.ephemeral + f.swap / 1024,
            'availability_zone', az, 'group', grp.uuid, 'group_policy', grp.policy,
            'hints', coalesce(r->'hints', '{}'), 'image_ref', r->>'image_ref',
            'force_host', r->>'force_host',
            'image_properties', coalesce(r->'image_properties', '{}'),
            'extra_specs', coalesce((SELECT jsonb_object_agg(key, value)
                                       FROM flavor_extra_specs WHERE flavor_id = f.id), '{}')));
        PERFORM compute_record_action(new_id, 'create', r->>'request_id', r->>'user_id', proj,
                                      false);
    END LOOP;
    RETURN jsonb_build_object('code', 202, 'id', first_id, 'reservation_id', resv);
END $$;

-- Marks an instance deleted and gives its host's resources back.  Called by
-- the API for instances that never reached a host (or whose host is
-- forced down), and by the agent path once the guest is gone.
CREATE FUNCTION compute_instance_destroyed(p_uuid uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE i instances;
BEGIN
    UPDATE instances SET deleted = true, deleted_at = clock_timestamp(),
           terminated_at = clock_timestamp(), updated_at = clock_timestamp(),
           vm_state = 'deleted', task_state = NULL, power_state = 0
     WHERE uuid = p_uuid AND NOT deleted RETURNING * INTO i;
    IF NOT FOUND THEN RETURN false; END IF;
    DELETE FROM build_requests WHERE instance_uuid = p_uuid;
    IF i.node IS NOT NULL THEN
        UPDATE compute_nodes SET vcpus_used = greatest(vcpus_used - i.vcpus, 0),
               memory_mb_used = greatest(memory_mb_used - i.memory_mb, 0),
               local_gb_used = greatest(local_gb_used - (i.root_gb + i.ephemeral_gb), 0),
               running_vms = greatest(running_vms - 1, 0), updated_at = clock_timestamp()
         WHERE hypervisor_hostname = i.node;
    END IF;
    RETURN true;
END $$;

-- ---- Server actions: the state machine (Nova's check_instance_state and
-- check_instance_lock), in one statement with the change it allows.
-- 'c' carries user_id, project_id, request_id, admin.  Returns
-- {"code": 202|200|204, ...} or {"code": 4xx, "message"}.
CREATE FUNCTION compute_server_action(p_uuid uuid, p_action text, a jsonb, c jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    i instances;
    admin boolean := (c->>'admin')::boolean;
    ok_vm text[];
    ok_task boolean := true;   -- task_state must be NULL unless an action says otherwise
    new_task text;
    action_name text := p_action;
    f flavors;
    out jsonb := '{}';
    n integer;
    st text;
BEGIN
    SELECT * INTO i FROM instances WHERE uuid = p_uuid AND NOT deleted FOR UPDATE;
    IF NOT FOUND OR (NOT admin AND i.project_id <> c->>'project_id') THEN
        RETURN jsonb_build_object('code', 404, 'message',
                                  format('Instance %s could not be found.', p_uuid));
    END IF;
    IF i.locked AND NOT admin AND p_action NOT IN ('lock', 'unlock', 'os-getConsoleOutput') THEN
        RETURN jsonb_build_object('code', 409, 'message',
                                  format('Instance %s is locked', p_uuid));
    END IF;
    CASE p_action
    WHEN 'os-start' THEN ok_vm := ARRAY['stopped']; new_task := 'powering-on'; action_name := 'start';
    WHEN 'os-stop' THEN ok_vm := ARRAY['active', 'error', 'rescued']; new_task := 'powering-off';
        action_name := 'stop';
    WHEN 'reboot' THEN
        IF a->>'type' IS NULL OR upper(a->>'type') NOT IN ('SOFT', 'HARD') THEN
            RETURN jsonb_build_object('code', 400, 'message',
                'Invalid input for field/attribute type. Value must be SOFT or HARD.');
        END IF;
        IF upper(a->>'type') = 'SOFT' THEN
            ok_vm := ARRAY['active']; new_task := 'rebooting';
        ELSE
            ok_vm := ARRAY['active', 'stopped', 'paused', 'suspended', 'error'];
            new_task := 'rebooting_hard';
            ok_task := i.task_state IS NULL OR i.task_state IN ('rebooting', 'reboot_pending',
                       'reboot_started', 'rebooting_hard', 'reboot_pending_hard',
                       'reboot_started_hard');
        END IF;
    WHEN 'pause' THEN ok_vm := ARRAY['active']; new_task := 'pausing';
    WHEN 'unpause' THEN ok_vm := ARRAY['paused']; new_task := 'unpausing';
    WHEN 'suspend' THEN ok_vm := ARRAY['active']; new_task := 'suspending';
    WHEN 'resume' THEN ok_vm := ARRAY['suspended']; new_task := 'resuming';
    WHEN 'rescue' THEN ok_vm := ARRAY['active', 'stopped', 'error']; new_task := 'rescuing';
    WHEN 'unrescue' THEN ok_vm := ARRAY['rescued']; new_task := 'unrescuing';
    WHEN 'lock' THEN
        UPDATE instances SET locked = true, locked_by = CASE WHEN admin AND
               i.project_id <> c->>'project_id' THEN 'admin' ELSE 'owner' END,
               updated_at = clock_timestamp() WHERE uuid = p_uuid;
        PERFORM compute_record_action(p_uuid, 'lock', c->>'request_id', c->>'user_id',
                                      c->>'project_id', true);
        RETURN jsonb_build_object('code', 202);
    WHEN 'unlock' THEN
        IF i.locked AND i.locked_by = 'admin' AND NOT admin THEN
            RETURN jsonb_build_object('code', 403, 'message',
                'Policy does not allow unlock_override to be performed.');
        END IF;
        UPDATE instances SET locked = false, locked_by = NULL, updated_at = clock_timestamp()
         WHERE uuid = p_uuid;
        PERFORM compute_record_action(p_uuid, 'unlock', c->>'request_id', c->>'user_id',
                                      c->>'project_id', true);
        RETURN jsonb_build_object('code', 202);
    WHEN 'os-resetState' THEN
        IF a->>'state' IS NULL OR a->>'state' NOT IN ('active', 'error') THEN
            RETURN jsonb_build_object('code', 400, 'message',
                'Invalid input for field/attribute state. Value must be active or error.');
        END IF;
        UPDATE instances SET vm_state = a->>'state', task_state = NULL,
               updated_at = clock_timestamp() WHERE uuid = p_uuid;
        PERFORM compute_record_action(p_uuid, 'reset_state', c->>'request_id', c->>'user_id',
                                      c->>'project_id', true);
        RETURN jsonb_build_object('code', 202);
    WHEN 'os-getConsoleOutput' THEN
        IF i.vm_state IN ('building', 'deleted') THEN
            RETURN jsonb_build_object('code', 409, 'message', format(
                'Cannot ''get_console_output'' instance %s while it is in vm_state %s',
                p_uuid, i.vm_state));
        END IF;
        n := coalesce((a->>'length')::int, -1);
        IF n < 0 THEN
            RETURN jsonb_build_object('code', 200, 'output', i.console_output);
        END IF;
        RETURN jsonb_build_object('code', 200, 'output', coalesce((
            SELECT string_agg(l, E'\n' ORDER BY o) FROM (
                SELECT l, o FROM unnest(string_to_array(i.console_output, E'\n'))
                    WITH ORDINALITY AS t(l, o) ORDER BY o DESC LIMIT n) x), ''));
    WHEN 'resize' THEN
        ok_vm := ARRAY['active', 'stopped']; new_task := 'resize_prep';
        SELECT * INTO f FROM flavors WHERE id = a->>'flavorRef';
        IF NOT FOUND OR NOT compute_flavor_visible(f, i.project_id, admin) THEN
            RETURN jsonb_build_object('code', 400, 'message',
                format('Flavor %s could not be found.', a->>'flavorRef'));
        END IF;
        IF f.id = i.flavor_id THEN
            RETURN jsonb_build_object('code', 400, 'message',
                'When resizing, instances must change flavor!');
        END IF;
    WHEN 'confirmResize' THEN
        IF i.vm_state <> 'resized' THEN
            RETURN jsonb_build_object('code', 409, 'message', 'Instance has not been resized.');
        END IF;
        -- The new flavor becomes the instance's (the agent resized the guest
        -- in place on the same host); the host's usage follows.
        SELECT * INTO f FROM flavors WHERE id = i.new_flavor_id;
        IF FOUND THEN
            UPDATE compute_nodes SET vcpus_used = vcpus_used + f.vcpus - i.vcpus,
                   memory_mb_used = memory_mb_used + f.ram - i.memory_mb,
                   local_gb_used = local_gb_used + (f.disk + f.ephemeral)
                                   - (i.root_gb + i.ephemeral_gb)
             WHERE hypervisor_hostname = i.node;
        END IF;
        UPDATE instances SET vm_state = CASE WHEN power_state = 4 THEN 'stopped' ELSE 'active' END,
               task_state = NULL, new_flavor_id = NULL, old_flavor = NULL,
               flavor_id = coalesce(f.id, flavor_id), vcpus = coalesce(f.vcpus, vcpus),
               memory_mb = coalesce(f.ram, memory_mb), root_gb = coalesce(f.disk, root_gb),
               ephemeral_gb = coalesce(f.ephemeral, ephemeral_gb), swap = coalesce(f.swap, swap),
               updated_at = clock_timestamp() WHERE uuid = p_uuid;
        PERFORM compute_record_action(p_uuid, 'confirmResize', c->>'request_id',
                                      c->>'user_id', c->>'project_id', true);
        RETURN jsonb_build_object('code', 204);
    WHEN 'revertResize' THEN
        IF i.vm_state <> 'resized' THEN
            RETURN jsonb_build_object('code', 409, 'message', 'Instance has not been resized.');
        END IF;
        ok_vm := ARRAY['resized']; new_task := 'resize_reverting';
    WHEN 'rebuild' THEN
        ok_vm := ARRAY['active', 'stopped', 'error']; new_task := 'rebuilding';
    WHEN 'migrate' THEN ok_vm := ARRAY['active', 'stopped']; new_task := 'resize_prep';
    WHEN 'os-migrateLive' THEN ok_vm := ARRAY['active', 'paused']; new_task := 'migrating';
        action_name := 'live-migration';
    WHEN 'evacuate' THEN ok_vm := ARRAY['active', 'stopped', 'error']; new_task := 'rebuilding';
        IF i.host IS NOT NULL AND EXISTS (SELECT 1 FROM compute_nodes WHERE host = i.host
               AND NOT forced_down AND last_heartbeat > clock_timestamp() - interval '60 seconds') THEN
            RETURN jsonb_build_object('code', 409, 'message', format(
                'Compute service of %s is still in use.', i.host));
        END IF;
    ELSE
        RETURN jsonb_build_object('code', 400, 'message',
                                  format('There is no such action: %s', p_action));
    END CASE;

    IF NOT (i.vm_state = ANY (ok_vm)) OR NOT ok_task
       OR (i.task_state IS NOT NULL AND p_action <> 'reboot') THEN
        RETURN jsonb_build_object('code', 409, 'message', format(
            'Cannot ''%s'' instance %s while it is in vm_state %s', action_name, p_uuid,
            i.vm_state) || CASE WHEN i.task_state IS NOT NULL
                           THEN format(' and task_state %s', i.task_state) ELSE '' END);
    END IF;
    IF p_action = 'reboot' AND i.task_state IS NOT NULL AND upper(a->>'type') = 'SOFT' THEN
        RETURN jsonb_build_object('code', 409, 'message', format(
            'Cannot ''reboot'' instance %s while it is in task_state %s', p_uuid, i.task_state));
    END IF;

    UPDATE instances SET task_state = new_task, updated_at = clock_timestamp(),
           new_flavor_id = CASE WHEN p_action = 'resize' THEN f.id ELSE new_flavor_id END,
           image_ref = CASE WHEN p_action = 'rebuild' THEN coalesce(a->>'imageRef', image_ref)
                       ELSE image_ref END,
           name = CASE WHEN p_action = 'rebuild' AND a->>'name' IS NOT NULL THEN a->>'name'
                  ELSE name END,
           intent = CASE WHEN p_action IN ('migrate', 'os-migrateLive', 'evacuate')
                    THEN jsonb_build_object('action', p_action, 'args', a,
                                            'source_host', i.host) ELSE intent END
     WHERE uuid = p_uuid RETURNING * INTO i;
    PERFORM compute_record_action(p_uuid, action_name, c->>'request_id', c->>'user_id',
                                  c->>'project_id', false);
    IF p_action = 'rebuild' THEN
        -- The rebuild answer is the server as it is now (task rebuilding).
        out := jsonb_build_object('server', compute_server_json(i, c->>'base', admin, true));
    END IF;
    RETURN out || jsonb_build_object('code', CASE WHEN p_action IN ('evacuate', 'rescue')
                                             THEN 200 ELSE 202 END);
END $$;
