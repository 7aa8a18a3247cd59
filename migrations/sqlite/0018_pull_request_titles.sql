-- The pull request's title, for the dashboard: the latest GitHub's deliveries named, and that
-- delivery's GitHub time (`updated_at`, milliseconds), so a delivery that arrives late cannot
-- bring back an older title. At most 256 characters (GitHub's own limit).
ALTER TABLE pull_requests ADD COLUMN title TEXT;
ALTER TABLE pull_requests ADD COLUMN title_at INTEGER;
