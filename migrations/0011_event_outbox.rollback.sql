DROP TRIGGER IF EXISTS execution_log_outbox ON execution_log;
DROP TRIGGER IF EXISTS leader_fence_outbox ON leader_fence;
DROP TRIGGER IF EXISTS trading_state_outbox ON trading_state;
DROP TRIGGER IF EXISTS rolls_outbox ON rolls;
DROP TRIGGER IF EXISTS portfolio_positions_outbox ON portfolio_positions;
DROP TRIGGER IF EXISTS fills_outbox ON fills;
DROP TRIGGER IF EXISTS order_intents_outbox ON order_intents;
DROP TRIGGER IF EXISTS signal_log_outbox ON signal_log;
DROP FUNCTION IF EXISTS outbox_audit(), outbox_leadership(), outbox_trading_state(),
    outbox_roll(), outbox_layer(), outbox_fill(), outbox_intent(), outbox_signal(),
    outbox_add(text, jsonb);
DROP TABLE IF EXISTS event_outbox;
