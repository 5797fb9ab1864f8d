DROP TABLE IF EXISTS paper_stops;
DROP TABLE IF EXISTS broker_stops;
