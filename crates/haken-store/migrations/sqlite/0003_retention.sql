-- Retention: finding the System Log events still needed by undelivered outbox rows.
CREATE INDEX outbox_event ON outbox (event_seq);
CREATE INDEX deliveries_retention ON deliveries (status, created);

-- (PostgreSQL also indexes log_events by transaction id for polling; SQLite commits in seq order.)
