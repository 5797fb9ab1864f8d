DROP TABLE IF EXISTS stream_cursors;
DROP TABLE IF EXISTS notifications;
