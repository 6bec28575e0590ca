-- Placeholder: number 0006 belongs to the ports branch's migration, which
-- this branch does not have.  embed.py wants numbers without gaps, so this
-- empty step keeps 0007_actions.sql buildable here.  Delete this file when
-- the ports migration is merged.
SELECT 1;
