-- The keys user import matches on (email; first and last name), as plain columns the server
-- fills at every write. Expression indexes over the JSON document made every profile change
-- parse the document again for each of them.
ALTER TABLE users ADD COLUMN email_key TEXT;
ALTER TABLE users ADD COLUMN name_key TEXT;
UPDATE users SET
    email_key = CASE WHEN json_type(data, '$.profile.email') = 'text'
        THEN lower(json_extract(data, '$.profile.email')) END,
    name_key = CASE WHEN json_type(data, '$.profile.firstName') = 'text' AND json_type(data, '$.profile.lastName') = 'text'
        THEN lower(json_extract(data, '$.profile.firstName')) || char(31) || lower(json_extract(data, '$.profile.lastName')) END;
DROP INDEX users_email;
DROP INDEX users_name;
CREATE INDEX users_email_key ON users (email_key, seq);
CREATE INDEX users_name_key ON users (name_key, seq);
