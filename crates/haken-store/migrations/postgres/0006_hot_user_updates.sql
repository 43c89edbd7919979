-- Profile changes as heap-only (HOT) updates. PostgreSQL can rewrite a row in place, without
-- new entries in every index of the table, only when no indexed column changes and the page
-- has room. `last_updated` changes with every write, so its index made every profile change
-- add an entry to each of the seven indexes of `users` and left the old row for vacuum.
-- `lastUpdated` filters now read the table in `seq` order instead; the room comes from a
-- lower fill factor (new pages keep a fifth free for the next version of their rows).
DROP INDEX users_last_updated;
ALTER TABLE users SET (fillfactor = 80);
