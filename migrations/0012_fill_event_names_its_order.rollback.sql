CREATE OR REPLACE FUNCTION outbox_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM outbox_add('fill.booked', jsonb_build_object(
        'intent_id', NEW.intent_id, 'broker_trade_id', NEW.broker_trade_id,
        'quantity', NEW.quantity, 'price', NEW.price::text, 'filled_at', NEW.filled_at));
    RETURN NULL;
END;
$$;
