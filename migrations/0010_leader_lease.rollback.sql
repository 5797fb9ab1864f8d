DROP TABLE IF EXISTS leader_lease;
