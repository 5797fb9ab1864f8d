-- The events outbox (DESIGN.md §11): what happened to the book, one row per business event,
-- written by triggers IN THE TRANSACTION of the change it describes, so no code path can
-- change the book without its event, and a rolled-back change leaves none. After commit a
-- worker publishes the rows in id order (Redis `pm:events` in a pair) and marks them.
CREATE TABLE event_outbox (
    id           bigserial PRIMARY KEY,
    type         text NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    data         jsonb NOT NULL,
    published_at timestamptz
);
CREATE INDEX event_outbox_unpublished_idx ON event_outbox (id) WHERE published_at IS NULL;

CREATE FUNCTION outbox_add(kind text, body jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_outbox (type, data) VALUES (kind, jsonb_strip_nulls(body));
    -- One notification per transaction (PostgreSQL folds identical ones), sent at commit.
    PERFORM pg_notify('pm_outbox', '');
END;
$$;

-- A signal refused at admission (stale, paused, …) is stored decided: the INSERT says it.
CREATE FUNCTION outbox_signal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'processed' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN  -- decided again: an `error` outcome retried
        IF OLD.status = 'processed' AND OLD.outcome IS NOT DISTINCT FROM NEW.outcome THEN
            RETURN NULL;
        END IF;
    END IF;
    PERFORM outbox_add('signal.decided', jsonb_build_object(
        'signal_id', NEW.id, 'type', NEW.signal_type, 'instrument', NEW.instrument,
        'position', NEW.position, 'outcome', NEW.outcome, 'reason', NEW.reason));
    RETURN NULL;
END;
$$;
CREATE TRIGGER signal_log_outbox AFTER INSERT OR UPDATE OF status, outcome ON signal_log
    FOR EACH ROW EXECUTE FUNCTION outbox_signal();

-- Money and prices go out as JSON strings (NUMERIC kept exact, never a float).
CREATE FUNCTION outbox_intent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM outbox_add(CASE WHEN TG_OP = 'INSERT' THEN 'intent.created'
                                ELSE 'intent.' || NEW.status END, jsonb_build_object(
            'intent_id', NEW.id, 'tag', NEW.tag, 'signal_id', NEW.signal_id,
            'instrument', NEW.instrument, 'tradingsymbol', NEW.tradingsymbol,
            'side', NEW.side, 'lots', NEW.lots, 'quantity', NEW.quantity,
            'purpose', NEW.purpose->>'kind', 'status', NEW.status,
            'broker_order_id', NEW.broker_order_id, 'filled_quantity', NEW.filled_quantity,
            'average_price', NEW.average_price::text, 'reason', NEW.reason,
            'epoch', NEW.fencing_epoch));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER order_intents_outbox AFTER INSERT OR UPDATE OF status ON order_intents
    FOR EACH ROW EXECUTE FUNCTION outbox_intent();

CREATE FUNCTION outbox_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM outbox_add('fill.booked', jsonb_build_object(
        'intent_id', NEW.intent_id, 'broker_trade_id', NEW.broker_trade_id,
        'quantity', NEW.quantity, 'price', NEW.price::text, 'filled_at', NEW.filled_at));
    RETURN NULL;
END;
$$;
CREATE TRIGGER fills_outbox AFTER INSERT ON fills
    FOR EACH ROW EXECUTE FUNCTION outbox_fill();

CREATE FUNCTION outbox_layer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR (NEW.status = 'closed' AND OLD.status <> 'closed') THEN
        -- A partial exit inserts the part it sold as a row already closed.
        PERFORM outbox_add(CASE WHEN NEW.status = 'closed' THEN 'layer.closed'
                                ELSE 'layer.opened' END, jsonb_build_object(
            'position_id', NEW.id, 'instrument', NEW.instrument, 'layer', NEW.layer,
            'tradingsymbol', NEW.tradingsymbol, 'lots', NEW.lots,
            'entry_price', NEW.entry_price::text, 'stop', NEW.current_stop::text,
            'exit_price', NEW.exit_price::text, 'exit_reason', NEW.exit_reason,
            'realized_pnl', NEW.realized_pnl::text, 'signal_id', NEW.signal_id));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER portfolio_positions_outbox AFTER INSERT OR UPDATE OF status
    ON portfolio_positions FOR EACH ROW EXECUTE FUNCTION outbox_layer();

CREATE FUNCTION outbox_roll() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'done' AND OLD.status <> 'done' THEN
        PERFORM outbox_add('layer.rolled', jsonb_build_object(
            'roll_id', NEW.id, 'instrument', NEW.instrument,
            'from', NEW.old_tradingsymbol, 'to', NEW.new_tradingsymbol, 'lots', NEW.lots,
            'position_ids', to_jsonb(NEW.position_ids), 'spread', NEW.spread::text,
            'pnl', NEW.pnl::text));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER rolls_outbox AFTER UPDATE OF status ON rolls
    FOR EACH ROW EXECUTE FUNCTION outbox_roll();

CREATE FUNCTION outbox_trading_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IS DISTINCT FROM OLD.state THEN
        PERFORM outbox_add('trading_state.changed', jsonb_build_object(
            'state', NEW.state, 'previous', OLD.state, 'reason', NEW.reason,
            'actor', NEW.actor));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER trading_state_outbox AFTER UPDATE ON trading_state
    FOR EACH ROW EXECUTE FUNCTION outbox_trading_state();

CREATE FUNCTION outbox_leadership() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.epoch IS DISTINCT FROM OLD.epoch THEN
        PERFORM outbox_add('leadership.changed', jsonb_build_object(
            'epoch', NEW.epoch, 'previous_epoch', OLD.epoch, 'instance', NEW.instance_id));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER leader_fence_outbox AFTER UPDATE ON leader_fence
    FOR EACH ROW EXECUTE FUNCTION outbox_leadership();

-- The rest of the audit log is news too (limit breaches, reconciliation mismatches, a lost
-- term, Redis lost and back, operator actions, flattens, rolls' steps): `audit.<event>`.
-- Left out: what the triggers above already say.
CREATE FUNCTION outbox_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.event NOT IN ('intent_created', 'order_filled', 'leadership_acquired') THEN
        PERFORM outbox_add('audit.' || NEW.event, NEW.details || jsonb_build_object(
            'signal_id', NEW.signal_id, 'intent_id', NEW.intent_id,
            'position_id', NEW.position_id, 'instrument', NEW.instrument));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER execution_log_outbox AFTER INSERT ON execution_log
    FOR EACH ROW EXECUTE FUNCTION outbox_audit();
