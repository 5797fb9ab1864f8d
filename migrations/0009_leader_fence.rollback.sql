DROP TABLE IF EXISTS leader_fence;
