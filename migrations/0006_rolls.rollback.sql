DROP INDEX IF EXISTS paper_trades_symbol_idx;
DROP TABLE IF EXISTS rolls;
