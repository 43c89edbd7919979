-- Directory, System Log and API tokens. Every table keeps its entity as a JSON document in
-- `data`, with the columns that queries select or order by pulled out beside it.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE api_tokens (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    data       TEXT NOT NULL
);

CREATE TABLE users (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    login_lower  TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,
    last_updated BIGINT NOT NULL,
    data         TEXT NOT NULL
);
CREATE INDEX users_status ON users (status, seq);
CREATE INDEX users_last_updated ON users (last_updated);

CREATE TABLE groups (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    name_lower TEXT NOT NULL UNIQUE,
    data       TEXT NOT NULL
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added    BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

-- tx_id lets polling readers stop below the oldest transaction still in flight, so an event
-- whose transaction commits late is never skipped by a cursor that already moved past its seq.
CREATE TABLE log_events (
    seq        BIGSERIAL PRIMARY KEY,
    uuid       TEXT NOT NULL UNIQUE,
    published  BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    tx_id      xid8 NOT NULL DEFAULT pg_current_xact_id(),
    data       TEXT NOT NULL
);
CREATE INDEX log_events_published ON log_events (published, seq);
