-- The pull request's title, for the dashboard: the latest GitHub's deliveries named, and that
-- delivery's GitHub time (`updated_at`, milliseconds), so a delivery that arrives late cannot
-- bring back an older title. At most 256 characters (GitHub's own limit).
ALTER TABLE pull_requests ADD COLUMN title TEXT;
ALTER TABLE pull_requests ADD COLUMN title_at INTEGER;

-- A title that changes is a change of what the environment shows: the change feed (0016) gets it,
-- so the dashboard's table shows an edited title live.
CREATE TRIGGER pull_request_title_set AFTER INSERT ON pull_requests WHEN NEW.title IS NOT NULL
BEGIN
    INSERT INTO environment_changes (environment_id, at)
    SELECT id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) FROM environments
    WHERE repo_id = NEW.repo_id AND pr_number = NEW.pr_number;
END;

CREATE TRIGGER pull_request_title_changed AFTER UPDATE OF title ON pull_requests
WHEN OLD.title IS NOT NEW.title
BEGIN
    INSERT INTO environment_changes (environment_id, at)
    SELECT id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) FROM environments
    WHERE repo_id = NEW.repo_id AND pr_number = NEW.pr_number;
END;
