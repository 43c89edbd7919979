-- The SQLite twin of this migration drops the `last_updated` index there; PostgreSQL dropped
-- its own in 0006. Nothing changes here.
SELECT 1;
