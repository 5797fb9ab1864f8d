-- Notifications (DESIGN.md §11): what a notifier has to say, kept until it is delivered or
-- too old to matter. A notifier reads the events outbox after commit and writes here, in one
-- transaction with its cursor, so a restart neither loses a message nor writes it twice;
-- the sender then delivers them in id order (one chat's messages stay in order).
CREATE TABLE notifications (
    id           bigserial PRIMARY KEY,
    channel      text NOT NULL,                 -- 'telegram'
    event_id     bigint,                        -- the outbox event it tells of (NULL: a reply)
    kind         text NOT NULL,                 -- entry, exit, trading_state, … (or reply)
    body         text NOT NULL,                 -- HTML (Telegram's parse mode)
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    expired_at   timestamptz,                   -- given up: too old, or refused for good
    last_error   text,
    UNIQUE (channel, event_id)
);
CREATE INDEX notifications_pending_idx ON notifications (channel, id)
    WHERE delivered_at IS NULL AND expired_at IS NULL;

-- Where each reader of an outside stream stands: the notifier in the events outbox, the
-- command poller in Telegram's updates (a command is acted on once, across restarts).
CREATE TABLE stream_cursors (
    consumer   text PRIMARY KEY,
    last_id    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
