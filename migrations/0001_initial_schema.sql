-- Initial schema: the book, the inbox, order intents, fills, the capital ledger and the audit log.
-- Later migrations add; they never edit this file.

CREATE TABLE portfolio_state (
    id              smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    initial_capital numeric(20, 2) NOT NULL CHECK (initial_capital >= 0),
    closed_equity   numeric(20, 2) NOT NULL,
    equity_high     numeric(20, 2) NOT NULL,
    version         integer NOT NULL DEFAULT 1 CHECK (version > 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (equity_high >= closed_equity)
);

CREATE TABLE signal_log (
    id               bigserial PRIMARY KEY,
    fingerprint      char(64) NOT NULL UNIQUE,
    signal_type      text NOT NULL
        CHECK (signal_type IN ('BASE_ENTRY', 'PYRAMID', 'EXIT', 'MARKET_DATA', 'EOD_MONITOR')),
    instrument       text NOT NULL,
    position         text CHECK (position ~ '^(Long_[1-6]|ALL)$'),
    signal_timestamp timestamptz NOT NULL,
    payload          jsonb NOT NULL CHECK (NOT payload ? 'secret'),
    received_at      timestamptz NOT NULL DEFAULT now(),
    status           text NOT NULL DEFAULT 'received'
        CHECK (status IN ('received', 'processing', 'processed')),
    outcome          text CHECK (outcome IN ('executed', 'blocked', 'rejected', 'ignored')),
    reason           text,
    processed_at     timestamptz,
    processed_by     text,
    CHECK ((status = 'processed') = (outcome IS NOT NULL AND processed_at IS NOT NULL))
);
-- The dedup window rule looks for the same instrument+type+position near a timestamp.
CREATE INDEX signal_log_window_idx
    ON signal_log (instrument, signal_type, position, signal_timestamp);
-- Recovery resumes what is not processed, in arrival order.
CREATE INDEX signal_log_unprocessed_idx ON signal_log (id) WHERE status <> 'processed';

CREATE SEQUENCE trade_id_seq;

CREATE TABLE portfolio_positions (
    id               bigserial PRIMARY KEY,
    trade_id         bigint NOT NULL,
    instrument       text NOT NULL,
    layer            text NOT NULL CHECK (layer ~ '^Long_[1-6]$'),
    is_base_position boolean NOT NULL,
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closing', 'closed')),
    lots             integer NOT NULL CHECK (lots > 0),
    quantity         integer NOT NULL CHECK (quantity > 0),
    entry_price      numeric(18, 4) NOT NULL CHECK (entry_price > 0),
    entry_timestamp  timestamptz NOT NULL,
    initial_stop     numeric(18, 4) NOT NULL CHECK (initial_stop >= 0),
    current_stop     numeric(18, 4) NOT NULL,
    highest_close    numeric(18, 4) NOT NULL CHECK (highest_close > 0),
    atr              numeric(18, 4) NOT NULL CHECK (atr >= 0),
    limiter          text NOT NULL,
    exit_price       numeric(18, 4) CHECK (exit_price > 0),
    exit_timestamp   timestamptz,
    exit_reason      text,
    realized_pnl     numeric(20, 2),
    tradingsymbol    text,
    signal_id        bigint REFERENCES signal_log (id),
    version          integer NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (is_base_position = (layer = 'Long_1')),
    -- A stop only ratchets up from where it started.
    CHECK (current_stop >= initial_stop),
    CHECK ((status = 'closed') =
           (exit_price IS NOT NULL AND exit_timestamp IS NOT NULL AND realized_pnl IS NOT NULL))
);
CREATE UNIQUE INDEX portfolio_positions_one_live_layer
    ON portfolio_positions (instrument, layer) WHERE status <> 'closed';
CREATE INDEX portfolio_positions_live_idx ON portfolio_positions (instrument) WHERE status <> 'closed';
CREATE INDEX portfolio_positions_trade_idx ON portfolio_positions (trade_id);

CREATE TABLE pyramiding_state (
    instrument         text PRIMARY KEY,
    trade_id           bigint NOT NULL,
    base_position_id   bigint REFERENCES portfolio_positions (id),
    last_pyramid_price numeric(18, 4) NOT NULL CHECK (last_pyramid_price > 0),
    pyramid_count      integer NOT NULL DEFAULT 0 CHECK (pyramid_count >= 0),
    version            integer NOT NULL DEFAULT 1 CHECK (version > 0),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE order_intents (
    id               bigserial PRIMARY KEY,
    tag              text NOT NULL UNIQUE CHECK (tag ~ '^[A-Za-z0-9]{1,20}$'),
    signal_id        bigint REFERENCES signal_log (id),
    instrument       text NOT NULL,
    tradingsymbol    text,
    position_ids     bigint[] NOT NULL DEFAULT '{}',
    side             text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    lots             integer NOT NULL CHECK (lots > 0),
    quantity         integer NOT NULL CHECK (quantity > 0),
    order_type       text NOT NULL CHECK (order_type IN ('MARKET', 'LIMIT')),
    price            numeric(18, 4) CHECK (price > 0),
    status           text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'placed', 'partial', 'filled', 'cancelled', 'rejected')),
    broker_order_id  text,
    filled_quantity  integer NOT NULL DEFAULT 0 CHECK (filled_quantity >= 0),
    average_price    numeric(18, 4),
    reason           text,
    fencing_epoch    bigint NOT NULL DEFAULT 0,
    version          integer NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (filled_quantity <= quantity),
    CHECK (status <> 'filled' OR (filled_quantity > 0 AND average_price IS NOT NULL))
);
CREATE INDEX order_intents_unresolved_idx ON order_intents (id)
    WHERE status IN ('pending', 'placed', 'partial');
CREATE INDEX order_intents_signal_idx ON order_intents (signal_id);

CREATE TABLE fills (
    id              bigserial PRIMARY KEY,
    intent_id       bigint NOT NULL REFERENCES order_intents (id),
    broker_trade_id text NOT NULL UNIQUE,
    quantity        integer NOT NULL CHECK (quantity > 0),
    price           numeric(18, 4) NOT NULL CHECK (price > 0),
    filled_at       timestamptz NOT NULL
);
CREATE INDEX fills_intent_idx ON fills (intent_id);

CREATE TABLE capital_transactions (
    id            bigserial PRIMARY KEY,
    txn_type      text NOT NULL CHECK (txn_type IN ('DEPOSIT', 'WITHDRAW', 'TRADING_PNL')),
    amount        numeric(20, 2) NOT NULL,
    equity_before numeric(20, 2) NOT NULL,
    equity_after  numeric(20, 2) NOT NULL,
    position_id   bigint REFERENCES portfolio_positions (id),
    note          text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (txn_type = 'TRADING_PNL' OR amount > 0),
    CHECK (equity_after = equity_before
           + CASE WHEN txn_type = 'WITHDRAW' THEN -amount ELSE amount END),
    CHECK ((txn_type = 'TRADING_PNL') = (position_id IS NOT NULL))
);
-- One P&L row per closed layer, whatever retries happen.
CREATE UNIQUE INDEX capital_transactions_one_pnl_per_layer
    ON capital_transactions (position_id) WHERE txn_type = 'TRADING_PNL';

CREATE TABLE execution_log (
    id          bigserial PRIMARY KEY,
    logged_at   timestamptz NOT NULL DEFAULT now(),
    event       text NOT NULL,
    signal_id   bigint,
    intent_id   bigint,
    position_id bigint,
    instrument  text,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX execution_log_signal_idx ON execution_log (signal_id);

CREATE FUNCTION execution_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'execution_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER execution_log_no_update_delete
    BEFORE UPDATE OR DELETE ON execution_log
    FOR EACH ROW EXECUTE FUNCTION execution_log_is_append_only();

CREATE TRIGGER execution_log_no_truncate
    BEFORE TRUNCATE ON execution_log
    FOR EACH STATEMENT EXECUTE FUNCTION execution_log_is_append_only();

CREATE TABLE instance_metadata (
    instance_id    text PRIMARY KEY,
    hostname       text NOT NULL,
    port           integer,
    started_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    role           text NOT NULL DEFAULT 'single' CHECK (role IN ('single', 'leader', 'standby')),
    version        text NOT NULL
);
