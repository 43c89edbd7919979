-- The PostgreSQL twin of this migration drops the `last_updated` index so that profile changes
-- can be heap-only updates there. SQLite rewrites only the index entries whose columns change,
-- so it keeps the index for `lastUpdated` filters; nothing changes here.
SELECT 1;
