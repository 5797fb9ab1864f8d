DROP FUNCTION IF EXISTS admit_signals(jsonb, integer, text, bigint, timestamptz);
CREATE OR REPLACE FUNCTION outbox_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.event NOT IN ('intent_created', 'order_filled', 'leadership_acquired') THEN
        PERFORM outbox_add('audit.' || NEW.event, NEW.details || jsonb_build_object(
            'signal_id', NEW.signal_id, 'intent_id', NEW.intent_id,
            'position_id', NEW.position_id, 'instrument', NEW.instrument));
    END IF;
    RETURN NULL;
END;
$$;
