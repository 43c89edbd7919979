-- Resources kept as plain JSON documents (inline hooks, hook keys, apps, policies, sessions,
-- import jobs), and the user indexes that user import matches on.

CREATE TABLE documents (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL UNIQUE,
    -- Unique per kind when set (names, ignoring case).
    name_lower TEXT,
    -- A second key to find a document by (a session token digest), unique per kind when set.
    lookup     TEXT,
    -- The document this one belongs to (a policy's rules, an app's jobs).
    parent     TEXT,
    data       TEXT NOT NULL
);
CREATE UNIQUE INDEX documents_name ON documents (kind, name_lower);
CREATE UNIQUE INDEX documents_lookup ON documents (kind, lookup);
CREATE INDEX documents_kind ON documents (kind, seq);
CREATE INDEX documents_parent ON documents (kind, parent, seq);

CREATE INDEX users_email ON users (lower(json_extract(data, '$.profile.email')));
CREATE INDEX users_name ON users ((lower(json_extract(data, '$.profile.firstName')) || char(31) || lower(json_extract(data, '$.profile.lastName'))));
