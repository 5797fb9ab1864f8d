-- Group commit at intake (DESIGN.md §3): the alerts that arrive while one admission commits
-- are admitted together, in one statement and one commit, each by the rules of
-- admit_signal() (0003) in arrival order — so ids follow arrival and a repeat inside a batch
-- is found like one across batches. A signal the leader decided at admission (it needs no
-- order: DESIGN.md §3) is stored decided, with its audit row, in that same commit.
--
-- Locks are taken up front in one order, so that two batches (a pair's two nodes) never
-- deadlock; a decision is kept only while the caller's term still holds the fence.

CREATE FUNCTION admit_signals(
    p_fingerprints text[], p_types text[], p_instruments text[], p_positions text[],
    p_timestamps timestamptz[], p_payloads jsonb[], p_received_at timestamptz[],
    p_rejections text[], p_outcomes text[], p_reasons text[], p_window_s integer,
    p_processed_by text, p_epoch bigint)
RETURNS TABLE (o_signal_id bigint, o_accepted boolean, o_outcome text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    i integer;
    lock_key integer;
    v_id bigint;
    v_outcome text;
    v_reason text;
    v_keep_decisions boolean := true;
BEGIN
    FOR lock_key IN
        SELECT DISTINCT hashtext(u.instrument) FROM unnest(p_instruments, p_types)
            AS u(instrument, kind)
         WHERE u.kind IN ('BASE_ENTRY', 'PYRAMID', 'EXIT') ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(7301, lock_key);
    END LOOP;
    IF p_epoch IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(p_outcomes) AS o WHERE o IS NOT NULL)
    THEN
        PERFORM 1 FROM leader_fence WHERE epoch = p_epoch FOR SHARE;
        v_keep_decisions := FOUND;
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_fingerprints, 1), 0) LOOP
        o_outcome := NULL;
        IF p_types[i] IN ('BASE_ENTRY', 'PYRAMID', 'EXIT') THEN
            SELECT s.id INTO v_id FROM signal_log s
             WHERE s.instrument = p_instruments[i] AND s.signal_type = p_types[i]
               AND s.position IS NOT DISTINCT FROM p_positions[i]
               AND s.signal_timestamp
                   BETWEEN p_timestamps[i] - make_interval(secs => p_window_s)
                       AND p_timestamps[i] + make_interval(secs => p_window_s)
             ORDER BY s.id LIMIT 1;
            IF FOUND THEN
                o_signal_id := v_id;
                o_accepted := false;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        IF p_rejections[i] IS NOT NULL THEN
            v_outcome := 'rejected';
            v_reason := p_rejections[i];
        ELSIF v_keep_decisions THEN
            v_outcome := p_outcomes[i];
            v_reason := p_reasons[i];
        ELSE
            v_outcome := NULL;
            v_reason := NULL;
        END IF;
        INSERT INTO signal_log (fingerprint, signal_type, instrument, position,
                                signal_timestamp, payload, received_at, status, outcome,
                                reason, processed_at, processed_by)
        VALUES (p_fingerprints[i], p_types[i], p_instruments[i], p_positions[i],
                p_timestamps[i], p_payloads[i], p_received_at[i],
                CASE WHEN v_outcome IS NULL THEN 'received' ELSE 'processed' END,
                v_outcome, v_reason,
                CASE WHEN v_outcome IS NULL THEN NULL ELSE p_received_at[i] END,
                CASE WHEN v_outcome IS NULL THEN NULL ELSE p_processed_by END)
        ON CONFLICT (fingerprint) DO NOTHING
        RETURNING id INTO v_id;
        IF FOUND THEN
            o_signal_id := v_id;
            o_accepted := true;
            o_outcome := v_outcome;
            IF v_outcome IS NOT NULL AND p_rejections[i] IS NULL THEN
                INSERT INTO execution_log (event, signal_id, instrument, details)
                VALUES ('signal_decided', v_id, p_instruments[i],
                        jsonb_build_object('outcome', v_outcome, 'reason', v_reason));
            END IF;
        ELSE
            SELECT s.id INTO o_signal_id FROM signal_log s
             WHERE s.fingerprint = p_fingerprints[i];
            o_accepted := false;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
