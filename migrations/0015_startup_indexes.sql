-- Startup reads that must cost what the open book costs, not what the history holds:
-- each instrument's newest alert (the prices a restart has forgotten) was a backward scan of
-- the whole signal log for an instrument that has not alerted lately, and the newest audit
-- event of a kind (an accepted reconciliation, read at every check) one of the whole
-- execution log when there is none.
CREATE INDEX signal_log_instrument_latest_idx ON signal_log (instrument, id);
CREATE INDEX execution_log_event_idx ON execution_log (event, id);
