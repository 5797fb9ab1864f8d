DROP TABLE IF EXISTS paper_trades;
DROP TABLE IF EXISTS paper_orders;
ALTER TABLE order_intents DROP COLUMN IF EXISTS purpose;
