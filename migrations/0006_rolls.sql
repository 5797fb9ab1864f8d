-- One row per roll of an instrument's layers from an expiring contract into the next
-- (DOMAIN.md §9): the durable state of the operation and, once done, its record. Each leg's
-- orders are ordinary order intents (purpose kind 'roll'); this row accumulates what they
-- filled, so a crash between or inside the legs resumes from here, never repeats.
CREATE TABLE rolls (
    id                bigserial PRIMARY KEY,
    instrument        text NOT NULL,
    status            text NOT NULL DEFAULT 'closing'
        CHECK (status IN ('closing', 'opening', 'done')),
    old_tradingsymbol text NOT NULL,
    old_exchange      text,
    old_expiry        date,
    new_tradingsymbol text NOT NULL,
    new_exchange      text,
    new_expiry        date,
    position_ids      bigint[] NOT NULL CHECK (cardinality(position_ids) > 0),
    lots              integer NOT NULL CHECK (lots > 0),
    quantity          integer NOT NULL CHECK (quantity > 0),  -- held in the old contract
    new_quantity      integer NOT NULL CHECK (new_quantity > 0),  -- the same lots in the new
    closed_quantity   integer NOT NULL DEFAULT 0 CHECK (closed_quantity BETWEEN 0 AND quantity),
    close_notional    numeric(28, 4) NOT NULL DEFAULT 0,
    opened_quantity   integer NOT NULL DEFAULT 0
        CHECK (opened_quantity BETWEEN 0 AND new_quantity),
    open_notional     numeric(28, 4) NOT NULL DEFAULT 0,
    close_price       numeric(18, 4) CHECK (close_price > 0),
    open_price        numeric(18, 4) CHECK (open_price > 0),
    spread            numeric(18, 4),
    pnl               numeric(20, 2),
    -- the venues' quoted difference new − old when the roll started: the open leg's
    -- reference price is the close leg's fill plus it
    quoted_spread     numeric(18, 4) NOT NULL DEFAULT 0,
    -- an exit asked for while the roll ran, of these layers: carried out once it is done
    exit_reason       text,
    exit_position_ids bigint[] NOT NULL DEFAULT '{}',
    started_at        timestamptz NOT NULL,
    closed_at         timestamptz,
    completed_at      timestamptz,
    version           integer NOT NULL DEFAULT 1 CHECK (version > 0),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'closing') = (closed_quantity < quantity)),
    CHECK ((status = 'done') = (completed_at IS NOT NULL)),
    CHECK (status <> 'done' OR (open_price IS NOT NULL AND spread IS NOT NULL))
);
-- At most one roll under way per instrument.
CREATE UNIQUE INDEX rolls_one_live_per_instrument ON rolls (instrument) WHERE status <> 'done';

-- The paper venue is asked for one contract's position before every exit it takes.
CREATE INDEX paper_trades_symbol_idx ON paper_trades (tradingsymbol);
