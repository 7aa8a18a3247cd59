-- What the reconciler needs: the environment's name (namespace and host label; unique, so two
-- repositories can never share one even if their short hashes collided), its URL once ready,
-- the last activity that TTL counts from, and a lease so that one reconcile at a time runs per
-- environment across replicas.
ALTER TABLE environments ADD COLUMN name TEXT;
ALTER TABLE environments ADD COLUMN url TEXT;
ALTER TABLE environments ADD COLUMN last_activity_at INTEGER;
ALTER TABLE environments ADD COLUMN warned_at INTEGER;
ALTER TABLE environments ADD COLUMN lock_owner TEXT;
ALTER TABLE environments ADD COLUMN lock_until INTEGER;
CREATE UNIQUE INDEX environments_name ON environments (name);
