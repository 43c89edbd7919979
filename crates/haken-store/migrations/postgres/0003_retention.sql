-- Retention: finding the System Log events still needed by undelivered outbox rows.
CREATE INDEX outbox_event ON outbox (event_seq);
CREATE INDEX deliveries_retention ON deliveries (status, created);

-- Polling the System Log pages by (transaction id, seq).
CREATE INDEX log_events_tx ON log_events (tx_id, seq);
