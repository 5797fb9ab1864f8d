-- Undo 0001: drop everything it created, dependants first.
DROP TABLE IF EXISTS instance_metadata;
DROP TRIGGER IF EXISTS execution_log_no_truncate ON execution_log;
DROP TRIGGER IF EXISTS execution_log_no_update_delete ON execution_log;
DROP TABLE IF EXISTS execution_log;
DROP FUNCTION IF EXISTS execution_log_is_append_only();
DROP TABLE IF EXISTS capital_transactions;
DROP TABLE IF EXISTS fills;
DROP TABLE IF EXISTS order_intents;
DROP TABLE IF EXISTS pyramiding_state;
DROP TABLE IF EXISTS portfolio_positions;
DROP SEQUENCE IF EXISTS trade_id_seq;
DROP TABLE IF EXISTS signal_log;
DROP TABLE IF EXISTS portfolio_state;
