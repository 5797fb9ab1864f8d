-- The fencing row of a pair (DESIGN.md §10): the highest leader epoch that wrote the book.
-- A leader's every transaction first moves it to its own epoch, unless a newer one is there:
-- then the transaction rolls back and the node steps down. Single daemons leave it alone.
CREATE TABLE leader_fence (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch       bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    instance_id text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO leader_fence DEFAULT VALUES;
