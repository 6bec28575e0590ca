-- The prologue every server action shares, in one function, so that the
-- actions added from here on do not each repeat it: find the instance
-- (locked FOR UPDATE), 404 when it is not there or belongs to another
-- project (admins see every project), 409 when it is locked (for
-- non-admins), and 409 in Nova's words when its vm_state is not one of
-- 'ok_vm' or a task is under way.  'err' is NULL when the action may go on.
CREATE FUNCTION compute_action_instance(p_uuid uuid, p_action text, c jsonb, ok_vm text[],
                                        OUT i instances, OUT err jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    admin boolean := coalesce((c->>'admin')::boolean, false);
BEGIN
    SELECT * INTO i FROM instances WHERE uuid = p_uuid AND NOT deleted FOR UPDATE;
    IF NOT FOUND OR (NOT admin AND i.project_id <> c->>'project_id') THEN
        i := NULL;
        err := jsonb_build_object('code', 404, 'message',
                                  format('Instance %s could not be found.', p_uuid));
        RETURN;
    END IF;
    IF i.locked AND NOT admin THEN
        err := jsonb_build_object('code', 409, 'message',
                                  format('Instance %s is locked', p_uuid));
        RETURN;
    END IF;
    IF ok_vm IS NOT NULL AND (NOT (i.vm_state = ANY (ok_vm)) OR i.task_state IS NOT NULL) THEN
        err := jsonb_build_object('code', 409, 'message', format(
            'Cannot ''%s'' instance %s while it is in vm_state %s', p_action, p_uuid,
            i.vm_state) || CASE WHEN i.task_state IS NOT NULL
                           THEN format(' and task_state %s', i.task_state) ELSE '' END);
    END IF;
END $$;
