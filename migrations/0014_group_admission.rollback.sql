DROP FUNCTION IF EXISTS admit_signals(text[], text[], text[], text[], timestamptz[], jsonb[],
                                      timestamptz[], text[], text[], text[], integer, text,
                                      bigint);
