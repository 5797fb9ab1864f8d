-- Undo 0004: 'error' outcomes become 'rejected' (still decided, still not retried).
UPDATE signal_log SET outcome = 'rejected' WHERE outcome = 'error';
ALTER TABLE signal_log DROP CONSTRAINT signal_log_outcome_check;
ALTER TABLE signal_log ADD CONSTRAINT signal_log_outcome_check
    CHECK (outcome IN ('executed', 'blocked', 'rejected', 'ignored'));
