-- The PostgreSQL half of a pair's lease (DESIGN.md §10). Redis elects; this row says until
-- when the elected node leads, by the database's clock. The leader renews both. A standby
-- takes over only when Redis lets it start a term AND this lease has run out, so the leader
-- keeps trading while Redis is away (its lease here still renews), and a node cut off from
-- Redis alone is never joined by a second one. Kept apart from leader_fence: renewing it
-- every second must not queue behind the fence's share locks.
CREATE TABLE leader_lease (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch       bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    instance_id text,
    lease_until timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO leader_lease DEFAULT VALUES;
