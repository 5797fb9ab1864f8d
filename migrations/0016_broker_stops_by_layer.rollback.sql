DROP INDEX IF EXISTS broker_stops_position_idx;
