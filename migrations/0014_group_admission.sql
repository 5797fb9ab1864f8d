-- Group commit at intake (DESIGN.md §3): the alerts that arrive while one admission commits
-- are admitted together, in one statement and one commit, each by the rules of
-- admit_signal() (0003) in arrival order — so ids follow arrival and a repeat inside a batch
-- is found like one across batches. A signal the leader decided at admission (it needs no
-- order: DESIGN.md §3) is stored decided, with its audit row, in that same commit.
--
-- The batch is one JSON array (one parameter, whatever its size): [{"f": fingerprint,
-- "t": type, "i": instrument, "p": position, "ts": signal time, "pl": payload,
-- "r": received at, "rej": rejection, "o": outcome, "why": reason}, …].
--
-- Every instrument of the batch is locked up front, in one order, whatever its alerts'
-- kinds: two batches (a pair's two nodes) never deadlock, and a batch sees every row of its
-- instruments that another batch stored before it. A decision is kept only while the
-- caller's term holds the fence and, on a pair, only when no earlier alert of its
-- instrument still waits undecided (the other node may have stored one the leader has not
-- taken yet: the decision would overtake it).

CREATE FUNCTION admit_signals(p_batch jsonb, p_window_s integer, p_processed_by text,
                              p_epoch bigint, p_decided_at timestamptz)
RETURNS TABLE (o_signal_id bigint, o_accepted boolean, o_outcome text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    a record;
    lock_key integer;
    v_id bigint;
    v_outcome text;
    v_reason text;
    v_keep_decisions boolean := true;
BEGIN
    FOR lock_key IN
        SELECT DISTINCT hashtext(x.i) FROM jsonb_to_recordset(p_batch) AS x(i text) ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(7301, lock_key);
    END LOOP;
    IF p_epoch IS NOT NULL AND jsonb_path_exists(p_batch, '$[*] ? (@.o != null)') THEN
        PERFORM 1 FROM leader_fence WHERE epoch = p_epoch FOR SHARE;
        v_keep_decisions := FOUND;
    END IF;
    FOR a IN
        SELECT * FROM ROWS FROM (jsonb_to_recordset(p_batch)
            AS (f text, t text, i text, p text, ts timestamptz, pl jsonb, r timestamptz,
                rej text, o text, why text)) WITH ORDINALITY
            AS x(f, t, i, p, ts, pl, r, rej, o, why, n)
         ORDER BY n
    LOOP
        o_outcome := NULL;
        IF a.t IN ('BASE_ENTRY', 'PYRAMID', 'EXIT') THEN
            SELECT s.id INTO v_id FROM signal_log s
             WHERE s.instrument = a.i AND s.signal_type = a.t
               AND s.position IS NOT DISTINCT FROM a.p
               AND s.signal_timestamp BETWEEN a.ts - make_interval(secs => p_window_s)
                                          AND a.ts + make_interval(secs => p_window_s)
             ORDER BY s.id LIMIT 1;
            IF FOUND THEN
                o_signal_id := v_id;
                o_accepted := false;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        v_outcome := NULL;
        v_reason := NULL;
        IF a.rej IS NOT NULL THEN
            v_outcome := 'rejected';
            v_reason := a.rej;
        ELSIF a.o IS NOT NULL AND v_keep_decisions AND (p_epoch IS NULL OR NOT EXISTS (
                SELECT 1 FROM signal_log s WHERE s.status <> 'processed' AND s.instrument = a.i))
        THEN
            v_outcome := a.o;
            v_reason := a.why;
        END IF;
        INSERT INTO signal_log (fingerprint, signal_type, instrument, position,
                                signal_timestamp, payload, received_at, status, outcome,
                                reason, processed_at, processed_by)
        VALUES (a.f, a.t, a.i, a.p, a.ts, a.pl, a.r,
                CASE WHEN v_outcome IS NULL THEN 'received' ELSE 'processed' END,
                v_outcome, v_reason,
                CASE WHEN v_outcome IS NULL THEN NULL ELSE coalesce(p_decided_at, a.r) END,
                CASE WHEN v_outcome IS NULL THEN NULL ELSE p_processed_by END)
        ON CONFLICT (fingerprint) DO NOTHING
        RETURNING id INTO v_id;
        IF FOUND THEN
            o_signal_id := v_id;
            o_accepted := true;
            o_outcome := v_outcome;
            -- As the worker records a decision without an order: an executed bar (stops
            -- only) has no audit row there either.
            IF v_outcome IS NOT NULL AND a.rej IS NULL AND v_outcome <> 'executed' THEN
                INSERT INTO execution_log (event, signal_id, instrument, details)
                VALUES ('signal_decided', v_id, a.i,
                        jsonb_build_object('outcome', v_outcome, 'reason', v_reason));
            END IF;
        ELSE
            SELECT s.id INTO o_signal_id FROM signal_log s WHERE s.fingerprint = a.f;
            o_accepted := false;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- `signal.decided` already tells every decision: its audit row is not news twice.
CREATE OR REPLACE FUNCTION outbox_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.event NOT IN ('intent_created', 'order_filled', 'leadership_acquired',
                         'signal_decided') THEN
        PERFORM outbox_add('audit.' || NEW.event, NEW.details || jsonb_build_object(
            'signal_id', NEW.signal_id, 'intent_id', NEW.intent_id,
            'position_id', NEW.position_id, 'instrument', NEW.instrument));
    END IF;
    RETURN NULL;
END;
$$;
