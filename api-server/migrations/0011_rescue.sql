-- Rescue and unrescue are not carried out by the compute agents yet: refuse
-- them (409) instead of leaving the server in task 'rescuing' that nothing
-- would ever clear.  The earlier function is wrapped, not rewritten (it
-- keeps every other action), under a name of this migration's own.
ALTER FUNCTION compute_server_action(uuid, text, jsonb, jsonb) RENAME TO compute_server_action_pre_rescue;

CREATE FUNCTION compute_server_action(p_uuid uuid, p_action text, a jsonb, c jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF p_action IN ('rescue', 'unrescue') THEN
        IF NOT EXISTS (SELECT 1 FROM instances WHERE uuid = p_uuid AND NOT deleted
                        AND (coalesce((c->>'admin')::boolean, false)
                             OR project_id = c->>'project_id')) THEN
            RETURN jsonb_build_object('code', 404, 'message',
                                      format('Instance %s could not be found.', p_uuid));
        END IF;
        RETURN jsonb_build_object('code', 409, 'message', format(
            'Cannot ''%s'' instance %s: rescue is not available in this release of Nimbus.',
            p_action, p_uuid));
    END IF;
    RETURN compute_server_action_pre_rescue(p_uuid, p_action, a, c);
END $$;
