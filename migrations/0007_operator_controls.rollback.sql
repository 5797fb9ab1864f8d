DROP TRIGGER IF EXISTS signal_log_config_sha256 ON signal_log;
DROP FUNCTION IF EXISTS signal_log_config_of_decider();
ALTER TABLE signal_log DROP COLUMN IF EXISTS config_sha256;
ALTER TABLE instance_metadata DROP COLUMN IF EXISTS config_sha256;
DROP TABLE IF EXISTS configurations;
DROP TABLE IF EXISTS position_snapshots;
DROP TABLE IF EXISTS portfolio_snapshots;
DROP TABLE IF EXISTS flattens;
DROP TABLE IF EXISTS trading_state;
