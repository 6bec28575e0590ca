-- Server lists (GET /servers, /servers/detail) at scale: nimbus-api now
-- selects a page and its addresses in one statement and writes the JSON
-- itself (api-server/compute/compute_servers.c, docs/compute.md), so what
-- is left for PostgreSQL is finding the page.  instances_project (live
-- servers of a project, newest first) serves the common list; these serve
-- the others, which walked instances_created over every project's rows,
-- deleted ones included, to fill a page.

-- A project's servers, deleted ones included: changes-since (which lists
-- deleted servers too) and deleted=true for one project.
CREATE INDEX instances_project_all ON instances (project_id, created_at DESC, uuid DESC);

-- Live servers of every project, newest first: all_tenants lists.  Deleted
-- rows are kept (os-instance-actions, changes-since) and would otherwise
-- be skipped one by one.
CREATE INDEX instances_live_created ON instances (created_at DESC, uuid DESC) WHERE NOT deleted;

-- The planner's row counts for a project's live servers: without this it
-- multiplies the selectivities of project_id and deleted as if they were
-- independent, which they are not once a project has deleted many servers.
CREATE STATISTICS instances_project_deleted (dependencies, mcv) ON project_id, deleted
    FROM instances;
