-- The keys user import matches on (email; first and last name), as plain columns the server
-- fills at every write. Expression indexes over the JSON document made every profile change
-- parse the document again for each of them.
ALTER TABLE users ADD COLUMN email_key TEXT, ADD COLUMN name_key TEXT;
UPDATE users SET
    email_key = CASE WHEN jsonb_typeof((data::jsonb) -> 'profile' -> 'email') = 'string'
        THEN lower((data::jsonb) -> 'profile' ->> 'email') END,
    name_key = CASE WHEN jsonb_typeof((data::jsonb) -> 'profile' -> 'firstName') = 'string'
            AND jsonb_typeof((data::jsonb) -> 'profile' -> 'lastName') = 'string'
        THEN lower((data::jsonb) -> 'profile' ->> 'firstName') || chr(31) || lower((data::jsonb) -> 'profile' ->> 'lastName') END;
DROP INDEX users_email;
DROP INDEX users_name;
CREATE INDEX users_email_key ON users (email_key, seq);
CREATE INDEX users_name_key ON users (name_key, seq);
