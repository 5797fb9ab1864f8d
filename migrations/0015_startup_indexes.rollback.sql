DROP INDEX IF EXISTS execution_log_event_idx;
DROP INDEX IF EXISTS signal_log_instrument_latest_idx;
