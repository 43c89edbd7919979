-- Event hooks, the outbox filled in the same transaction as each System Log event, and the
-- deliveries (one request of up to 50 events) with every attempt made.

CREATE TABLE event_hooks (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    name_lower TEXT NOT NULL UNIQUE,
    -- 1 when the hook is ACTIVE and VERIFIED: only then are its deliveries sent.
    receives   BIGINT NOT NULL,
    data       TEXT NOT NULL
);

-- One row per (event, hook) routed at write time; delivery_id is set when a worker puts the
-- row into a delivery.
CREATE TABLE outbox (
    seq         BIGSERIAL PRIMARY KEY,
    hook_id     TEXT NOT NULL,
    event_seq   BIGINT NOT NULL,
    delivery_id TEXT,
    created     BIGINT NOT NULL
);
CREATE INDEX outbox_unbatched ON outbox (hook_id, seq) WHERE delivery_id IS NULL;
CREATE INDEX outbox_delivery ON outbox (delivery_id);

CREATE TABLE deliveries (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    hook_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    event_count     BIGINT NOT NULL,
    created         BIGINT NOT NULL,
    event_time      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_attempt_at BIGINT,
    delivered_at    BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    -- Events carried by the delivery itself (test deliveries), instead of outbox rows.
    inline_events   TEXT
);
CREATE INDEX deliveries_due ON deliveries (status, hook_id, next_attempt_at);
CREATE INDEX deliveries_hook ON deliveries (hook_id, seq);

CREATE TABLE delivery_attempts (
    seq              BIGSERIAL PRIMARY KEY,
    delivery_id      TEXT NOT NULL,
    hook_id          TEXT NOT NULL,
    attempt          BIGINT NOT NULL,
    started          BIGINT NOT NULL,
    latency_ms       BIGINT NOT NULL,
    status_code      BIGINT,
    error            TEXT,
    response_snippet TEXT,
    node             TEXT NOT NULL
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, seq);
