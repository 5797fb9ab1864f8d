-- The durable inbox's admission in one round trip: dedup (both rules) and insert, and for a
-- signal already too old or too new, its outcome. Inside a VOLATILE plpgsql function each
-- statement takes a fresh snapshot, so the window check after the advisory lock sees every
-- signal committed while this call waited for it: admission stays race-free.

CREATE FUNCTION admit_signal(
    p_fingerprint text, p_type text, p_instrument text, p_position text,
    p_timestamp timestamptz, p_payload jsonb, p_received_at timestamptz, p_window_s integer,
    p_rejection text, p_processed_by text,
    OUT signal_id bigint, OUT accepted boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_type IN ('BASE_ENTRY', 'PYRAMID', 'EXIT') THEN
        PERFORM pg_advisory_xact_lock(7301, hashtext(p_instrument));
        SELECT s.id INTO signal_id FROM signal_log s
         WHERE s.instrument = p_instrument AND s.signal_type = p_type
           AND s.position IS NOT DISTINCT FROM p_position
           AND s.signal_timestamp BETWEEN p_timestamp - make_interval(secs => p_window_s)
                                      AND p_timestamp + make_interval(secs => p_window_s)
         ORDER BY s.id LIMIT 1;
        IF FOUND THEN
            accepted := false;
            RETURN;
        END IF;
    END IF;
    INSERT INTO signal_log (fingerprint, signal_type, instrument, position, signal_timestamp,
                            payload, received_at, status, outcome, reason, processed_at,
                            processed_by)
    VALUES (p_fingerprint, p_type, p_instrument, p_position, p_timestamp, p_payload,
            p_received_at,
            CASE WHEN p_rejection IS NULL THEN 'received' ELSE 'processed' END,
            CASE WHEN p_rejection IS NULL THEN NULL ELSE 'rejected' END, p_rejection,
            CASE WHEN p_rejection IS NULL THEN NULL ELSE p_received_at END,
            CASE WHEN p_rejection IS NULL THEN NULL ELSE p_processed_by END)
    ON CONFLICT (fingerprint) DO NOTHING
    RETURNING id INTO signal_id;
    IF FOUND THEN
        accepted := true;
        RETURN;
    END IF;
    SELECT s.id INTO signal_id FROM signal_log s WHERE s.fingerprint = p_fingerprint;
    accepted := false;
END;
$$;
