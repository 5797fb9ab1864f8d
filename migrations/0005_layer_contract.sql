-- Every layer is held in one broker contract, recorded from its entry order; every later order
-- of the layer (exit, stop, roll) trades that contract, never "today's" (DOMAIN.md §9).
ALTER TABLE portfolio_positions ADD COLUMN exchange text, ADD COLUMN expiry date;
ALTER TABLE order_intents ADD COLUMN exchange text, ADD COLUMN expiry date;
