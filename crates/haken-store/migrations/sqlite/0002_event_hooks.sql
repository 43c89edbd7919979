-- Event hooks, the outbox filled in the same transaction as each System Log event, and the
-- deliveries (one request of up to 50 events) with every attempt made.

CREATE TABLE event_hooks (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    name_lower TEXT NOT NULL UNIQUE,
    -- 1 when the hook is ACTIVE and VERIFIED: only then are its deliveries sent.
    receives   INTEGER NOT NULL,
    data       TEXT NOT NULL
);

-- One row per (event, hook) routed at write time; delivery_id is set when a worker puts the
-- row into a delivery.
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    hook_id     TEXT NOT NULL,
    event_seq   INTEGER NOT NULL,
    delivery_id TEXT,
    created     INTEGER NOT NULL
);
CREATE INDEX outbox_unbatched ON outbox (hook_id, seq) WHERE delivery_id IS NULL;
CREATE INDEX outbox_delivery ON outbox (delivery_id);

CREATE TABLE deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    hook_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    event_count     INTEGER NOT NULL,
    created         INTEGER NOT NULL,
    event_time      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_attempt_at INTEGER,
    delivered_at    INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    -- Events carried by the delivery itself (test deliveries), instead of outbox rows.
    inline_events   TEXT
);
CREATE INDEX deliveries_due ON deliveries (status, hook_id, next_attempt_at);
CREATE INDEX deliveries_hook ON deliveries (hook_id, seq);

CREATE TABLE delivery_attempts (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id      TEXT NOT NULL,
    hook_id          TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    started          INTEGER NOT NULL,
    latency_ms       INTEGER NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    response_snippet TEXT,
    node             TEXT NOT NULL
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, seq);
