-- Protective stops resting at the broker (DOMAIN.md §12): one row per placement.
--
-- A row is written (status 'placing') before the broker is asked to place it, and every later
-- change (a modification, a cancel) is written as the row's pending action before the broker
-- call, so after a crash each row says what may have happened at the venue and is resolved
-- by reading the venue, never by repeating the call blindly.
CREATE TABLE broker_stops (
    id              bigserial PRIMARY KEY,
    -- The tag an SL order carries (a GTT has none: it is found by contract, side, quantity
    -- and trigger).
    tag             text NOT NULL UNIQUE CHECK (tag ~ '^[A-Za-z0-9]{1,20}$'),
    position_id     bigint NOT NULL REFERENCES portfolio_positions (id),
    instrument      text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('gtt', 'sl')),
    tradingsymbol   text NOT NULL,
    exchange        text,
    quantity        integer NOT NULL CHECK (quantity > 0),
    trigger_price   numeric(18, 4) NOT NULL CHECK (trigger_price > 0),
    limit_price     numeric(18, 4) NOT NULL CHECK (limit_price > 0),
    status          text NOT NULL CHECK (status IN (
        'placing',     -- intent written; the placement may or may not have reached the venue
        'active',      -- resting at the venue under broker_ref
        'modifying',   -- asked to move to pending_trigger / pending_limit
        'cancelling',  -- asked to cancel (before the daemon's own sale of the layer)
        'cancelled',   -- cancelled by the daemon, confirmed
        'triggered',   -- fired at the venue: its order sells the layer (exit_intent_id)
        'lapsed',      -- gone without the daemon: DAY expiry, cancelled outside, expired
        'rejected')),  -- refused or disabled by the venue: the layer is unprotected
    broker_ref      text,  -- the GTT's trigger id, or the SL order's id
    pending_trigger numeric(18, 4),
    pending_limit   numeric(18, 4),
    exit_intent_id  bigint REFERENCES order_intents (id),
    reason          text,
    version         integer NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (status NOT IN ('active', 'modifying') OR broker_ref IS NOT NULL),
    CHECK (status <> 'modifying' OR (pending_trigger IS NOT NULL AND pending_limit IS NOT NULL))
);
-- At most one stop working for a layer at any time: two would sell it twice.
CREATE UNIQUE INDEX broker_stops_live_idx ON broker_stops (position_id)
    WHERE status IN ('placing', 'active', 'modifying', 'cancelling');
CREATE INDEX broker_stops_instrument_idx ON broker_stops (instrument, id);

-- The paper venue's resting stops: a SELL LIMIT placed when its own price feed reaches the
-- trigger, like a GTT. Written by the paper broker only.
CREATE TABLE paper_stops (
    id            bigserial PRIMARY KEY,
    stop_id       text NOT NULL UNIQUE,
    tag           text NOT NULL,
    instrument    text NOT NULL,
    tradingsymbol text NOT NULL,
    quantity      integer NOT NULL CHECK (quantity > 0),
    trigger_price numeric(18, 4) NOT NULL,
    limit_price   numeric(18, 4) NOT NULL,
    status        text NOT NULL CHECK (status IN ('active', 'triggered', 'cancelled')),
    order_id      text REFERENCES paper_orders (order_id),
    placed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX paper_stops_active_idx ON paper_stops (tradingsymbol) WHERE status = 'active';
