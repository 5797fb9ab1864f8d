-- Operator controls (DESIGN.md §9, DOMAIN.md §10–11): the book's one trading state, the
-- kill switch's durable record, the snapshots the daily loss limit reads, and every
-- configuration a decision was made under.

-- One row: whether entries and exits may be sent. Every order intent's transaction reads it
-- (FOR SHARE; entries FOR UPDATE, as they also count against the day's entry cap), and every
-- change updates it, so a change and an intent are serialised by the row lock.
CREATE TABLE trading_state (
    id             smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    state          text NOT NULL DEFAULT 'ACTIVE' CHECK (state IN ('ACTIVE', 'REDUCING', 'HALTED')),
    reason         text,
    actor          text NOT NULL DEFAULT 'system' CHECK (actor IN ('operator', 'limit', 'system')),
    since          timestamptz NOT NULL DEFAULT now(),
    -- A latched daily-loss breach: held across restarts and days until an operator resumes.
    breach_day     date,
    breach_pnl     numeric(20, 2),
    breach_at      timestamptz,
    -- The day of the breach an operator last resumed from: that day's loss is accepted, the
    -- limit is not latched again until the next trading day.
    resumed_breach_day date,
    -- Entries sent in the trading day `entries_day` (DOMAIN.md §10, max_entries_per_day).
    entries_day    date,
    entries_count  integer NOT NULL DEFAULT 0 CHECK (entries_count >= 0),
    version        integer NOT NULL DEFAULT 1 CHECK (version > 0),
    CHECK ((breach_day IS NULL) = (breach_at IS NULL))
);
INSERT INTO trading_state (id) VALUES (1);

-- The kill switch: one row per flatten; a crash while one is `flattening` resumes it.
CREATE TABLE flattens (
    id               bigserial PRIMARY KEY,
    status           text NOT NULL DEFAULT 'flattening' CHECK (status IN ('flattening', 'flat')),
    reason           text NOT NULL,
    actor            text NOT NULL,
    requested_at     timestamptz NOT NULL,
    finished_at      timestamptz,
    layers_closed    integer NOT NULL DEFAULT 0 CHECK (layers_closed >= 0),
    orders_cancelled integer NOT NULL DEFAULT 0 CHECK (orders_cancelled >= 0),
    CHECK ((status = 'flat') = (finished_at IS NOT NULL))
);
CREATE UNIQUE INDEX flattens_one_at_a_time ON flattens ((true)) WHERE status = 'flattening';

-- The book's equity over time, at the prices last seen; the day-start row is the daily loss
-- limit's baseline.
CREATE TABLE portfolio_snapshots (
    id             bigserial PRIMARY KEY,
    taken_at       timestamptz NOT NULL,
    trading_day    date NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('interval', 'day_start', 'day_end')),
    closed_equity  numeric(20, 2) NOT NULL,
    open_equity    numeric(20, 2) NOT NULL,
    blended_equity numeric(20, 2) NOT NULL,
    unrealized     numeric(20, 2) NOT NULL,
    sizing_equity  numeric(20, 2) NOT NULL,
    risk_percent   numeric(12, 4) NOT NULL,
    margin_percent numeric(12, 4) NOT NULL,
    open_layers    integer NOT NULL CHECK (open_layers >= 0)
);
CREATE UNIQUE INDEX portfolio_snapshots_one_per_day ON portfolio_snapshots (trading_day, kind)
    WHERE kind <> 'interval';
CREATE INDEX portfolio_snapshots_taken_idx ON portfolio_snapshots (taken_at);

CREATE TABLE position_snapshots (
    id            bigserial PRIMARY KEY,
    trading_day   date NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('day_start', 'day_end')),
    taken_at      timestamptz NOT NULL,
    position_id   bigint NOT NULL REFERENCES portfolio_positions (id),
    instrument    text NOT NULL,
    layer         text NOT NULL,
    tradingsymbol text,
    lots          integer NOT NULL CHECK (lots > 0),
    quantity      integer NOT NULL CHECK (quantity > 0),
    entry_price   numeric(18, 4) NOT NULL,
    last_price    numeric(18, 4) NOT NULL,
    current_stop  numeric(18, 4) NOT NULL,
    unrealized    numeric(20, 2) NOT NULL,
    UNIQUE (trading_day, kind, position_id)
);

-- Every effective domain configuration, once per hash; each decision names the one it used.
CREATE TABLE configurations (
    sha256     char(64) PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    body       jsonb NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE instance_metadata ADD COLUMN config_sha256 char(64) REFERENCES configurations (sha256);
ALTER TABLE signal_log ADD COLUMN config_sha256 char(64) REFERENCES configurations (sha256);

-- A decision row records the configuration of the instance that decided it, whichever path
-- decided it (the admission function, an update, a recovery), so none can forget it.
CREATE FUNCTION signal_log_config_of_decider() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.processed_by IS NOT NULL AND NEW.config_sha256 IS NULL THEN
        NEW.config_sha256 := (SELECT config_sha256 FROM instance_metadata
                              WHERE instance_id = NEW.processed_by);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER signal_log_config_sha256
    BEFORE INSERT OR UPDATE OF processed_by ON signal_log
    FOR EACH ROW EXECUTE FUNCTION signal_log_config_of_decider();
