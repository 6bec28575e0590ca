-- Placeholder: number 0007 belongs to the actions branch's migration, which
-- this branch does not have.  embed.py wants numbers without gaps, so this
-- empty step keeps 0008_image_import.sql buildable here.  Delete this file
-- when the actions migration is merged.
SELECT 1;
