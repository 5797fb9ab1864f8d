-- The paper broker's venue (its own tables, written in its own transactions), and what each
-- order intent is for, so that recovery can apply a fill found after a crash exactly.

ALTER TABLE order_intents ADD COLUMN purpose jsonb NOT NULL DEFAULT '{}';

CREATE TABLE paper_orders (
    id              bigserial PRIMARY KEY,
    order_id        text NOT NULL UNIQUE,
    -- Not unique, as at a real broker: exactly-once placement is the engine's job.
    tag             text NOT NULL,
    tradingsymbol   text NOT NULL,
    side            text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    quantity        integer NOT NULL CHECK (quantity > 0),
    order_type      text NOT NULL,
    price           numeric(18, 4),
    status          text NOT NULL CHECK (status IN ('OPEN', 'COMPLETE', 'REJECTED', 'CANCELLED')),
    filled_quantity integer NOT NULL DEFAULT 0,
    average_price   numeric(18, 4),
    status_message  text,
    placed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX paper_orders_tag_idx ON paper_orders (tag);

CREATE TABLE paper_trades (
    id            bigserial PRIMARY KEY,
    trade_id      text NOT NULL UNIQUE,
    order_id      text NOT NULL REFERENCES paper_orders (order_id),
    tradingsymbol text NOT NULL,
    side          text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    quantity      integer NOT NULL CHECK (quantity > 0),
    price         numeric(18, 4) NOT NULL CHECK (price > 0),
    traded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX paper_trades_order_idx ON paper_trades (order_id);
