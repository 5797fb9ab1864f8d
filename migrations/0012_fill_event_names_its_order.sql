-- A fill's event names its order (tag, instrument, signal), so the log line and the
-- dashboard that read it need no second lookup: one primary-key read, in the fill's own
-- transaction.
CREATE OR REPLACE FUNCTION outbox_fill() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    intent order_intents%ROWTYPE;
BEGIN
    SELECT * INTO intent FROM order_intents WHERE id = NEW.intent_id;
    PERFORM outbox_add('fill.booked', jsonb_build_object(
        'intent_id', NEW.intent_id, 'broker_trade_id', NEW.broker_trade_id,
        'quantity', NEW.quantity, 'price', NEW.price::text, 'filled_at', NEW.filled_at,
        'tag', intent.tag, 'instrument', intent.instrument, 'signal_id', intent.signal_id,
        'side', intent.side, 'tradingsymbol', intent.tradingsymbol));
    RETURN NULL;
END;
$$;
