-- Identity: domains, projects, users, roles, assignments, the service
-- catalog, and token revocation events.  Ids are 32 lower-case hex digits,
-- as Keystone's.

CREATE TABLE domains (
    id          text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    domain_id   text NOT NULL REFERENCES domains (id),
    parent_id   text,
    description text NOT NULL DEFAULT '',
    enabled     boolean NOT NULL DEFAULT true,
    tags        text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (domain_id, name)
);

CREATE TABLE users (
    id                  text PRIMARY KEY,
    name                text NOT NULL,
    domain_id           text NOT NULL REFERENCES domains (id),
    password_hash       text,
    enabled             boolean NOT NULL DEFAULT true,
    email               text,
    description         text,
    default_project_id  text,
    password_expires_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (domain_id, name)
);

CREATE TABLE roles (
    id          text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- target_type 'project' or 'domain'; the target row is not a foreign key
-- because it may be either table: deletes of projects and domains remove
-- their assignments in the same statement.
CREATE TABLE role_assignments (
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    target_type text NOT NULL CHECK (target_type IN ('project', 'domain')),
    target_id   text NOT NULL,
    role_id     text NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, target_type, target_id, role_id)
);
CREATE INDEX role_assignments_target ON role_assignments (target_type, target_id);

CREATE TABLE regions (
    id               text PRIMARY KEY,
    description      text NOT NULL DEFAULT '',
    parent_region_id text REFERENCES regions (id)
);

CREATE TABLE services (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    enabled     boolean NOT NULL DEFAULT true
);

CREATE TABLE endpoints (
    id         text PRIMARY KEY,
    service_id text NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    interface  text NOT NULL CHECK (interface IN ('public', 'internal', 'admin')),
    region_id  text REFERENCES regions (id),
    url        text NOT NULL,
    enabled    boolean NOT NULL DEFAULT true,
    UNIQUE (service_id, interface, region_id)
);

-- Revocation events (Keystone semantics): kind 'audit' revokes the token
-- chain with that audit id; 'user' and 'project' revoke every token of that
-- user or project issued at or before revoked_at.  expires_at is when the
-- event can no longer match a live token and may be pruned.
CREATE TABLE revocation_events (
    id         bigserial PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('audit', 'user', 'project')),
    value      text NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX revocation_events_expires ON revocation_events (expires_at);

-- Every API process listens: a revocation reaches all of them at once.
CREATE FUNCTION notify_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nimbus_revocation',
        NEW.kind || ' ' || NEW.value || ' ' ||
        floor(extract(epoch FROM NEW.revoked_at))::bigint::text);
    RETURN NEW;
END $$;
CREATE TRIGGER revocation_events_notify AFTER INSERT ON revocation_events
    FOR EACH ROW EXECUTE FUNCTION notify_revocation();

-- Catalog and role-name changes are pushed so caches can reload.
CREATE FUNCTION notify_catalog() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nimbus_catalog', TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER services_notify AFTER INSERT OR UPDATE OR DELETE ON services
    FOR EACH STATEMENT EXECUTE FUNCTION notify_catalog();
CREATE TRIGGER endpoints_notify AFTER INSERT OR UPDATE OR DELETE ON endpoints
    FOR EACH STATEMENT EXECUTE FUNCTION notify_catalog();
CREATE TRIGGER regions_notify AFTER INSERT OR UPDATE OR DELETE ON regions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_catalog();

-- The default domain exists from the start, as in Keystone.
INSERT INTO domains (id, name, description)
    VALUES ('default', 'Default', 'The default domain');

-- Renames and deletions invalidate the name caches of the API processes.
CREATE FUNCTION notify_names() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nimbus_names', TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER users_names_notify AFTER UPDATE OR DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION notify_names();
CREATE TRIGGER projects_names_notify AFTER UPDATE OR DELETE ON projects
    FOR EACH STATEMENT EXECUTE FUNCTION notify_names();
CREATE TRIGGER domains_names_notify AFTER UPDATE OR DELETE ON domains
    FOR EACH STATEMENT EXECUTE FUNCTION notify_names();
-- Role changes invalidate the re-scope caches too.
CREATE TRIGGER role_assignments_names_notify AFTER INSERT OR UPDATE OR DELETE ON role_assignments
    FOR EACH STATEMENT EXECUTE FUNCTION notify_names();
CREATE TRIGGER roles_names_notify AFTER UPDATE OR DELETE ON roles
    FOR EACH STATEMENT EXECUTE FUNCTION notify_names();

-- Application credentials: a secret (Argon2id, like passwords) that logs in
-- as its user, scoped to one project, with a subset of the user's roles
-- there (or all of them when unrestricted).
CREATE TABLE application_credentials (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    user_id      text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id   text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    description  text,
    secret_hash  text NOT NULL,
    roles        jsonb NOT NULL DEFAULT '[]',
    unrestricted boolean NOT NULL DEFAULT false,
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);
