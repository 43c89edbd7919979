-- Profile changes touch fewer index entries. SQLite rewrites the entries of every index whose
-- columns an UPDATE names, changed or not, and `last_updated` changes at every write; the write
-- path now names only the columns that changed, and `lastUpdated` filters read the table in
-- `seq` order, as on PostgreSQL since 0006.
DROP INDEX users_last_updated;
