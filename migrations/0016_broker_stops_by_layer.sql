-- A restart loads the newest broker stop of each live layer: found from the layer, not by
-- reading every stop ever placed. The table grows with the history (a DAY order is placed
-- again at each session open, a new stop follows every partial exit and roll): on a year of
-- it, the whole-table read cost a start most of a second.
CREATE INDEX broker_stops_position_idx ON broker_stops (position_id, id);
