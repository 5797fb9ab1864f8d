-- A signal whose processing failed unexpectedly is decided once, with outcome 'error', and is
-- never retried at a restart (its instrument's entries stay blocked until an operator looks).
ALTER TABLE signal_log DROP CONSTRAINT signal_log_outcome_check;
ALTER TABLE signal_log ADD CONSTRAINT signal_log_outcome_check
    CHECK (outcome IN ('executed', 'blocked', 'rejected', 'ignored', 'error'));
