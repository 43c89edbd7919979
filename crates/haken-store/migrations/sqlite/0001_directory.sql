-- Directory, System Log and API tokens. Every table keeps its entity as a JSON document in
-- `data`, with the columns that queries select or order by pulled out beside it.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE api_tokens (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    data       TEXT NOT NULL
);

CREATE TABLE users (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    login_lower  TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,
    last_updated INTEGER NOT NULL,
    data         TEXT NOT NULL
);
CREATE INDEX users_status ON users (status, seq);
CREATE INDEX users_last_updated ON users (last_updated);

CREATE TABLE groups (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    name_lower TEXT NOT NULL UNIQUE,
    data       TEXT NOT NULL
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added    INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

CREATE TABLE log_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid       TEXT NOT NULL UNIQUE,
    published  INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    data       TEXT NOT NULL
);
CREATE INDEX log_events_published ON log_events (published, seq);
