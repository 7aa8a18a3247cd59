-- What a reconcile keeps so that it never waits and never reads again what cannot change:
-- the deadline of the rollout in progress (set when it starts, from Pending), the repository's
-- `.preview.yaml` at the commit it was read at (a commit's file cannot change; at most 64 KiB,
-- one per environment), and the hostname whose DNS record was published.
ALTER TABLE environments ADD COLUMN rollout_deadline BIGINT;
ALTER TABLE environments ADD COLUMN config_sha TEXT;
ALTER TABLE environments ADD COLUMN config_text TEXT;
ALTER TABLE environments ADD COLUMN published_host TEXT;
