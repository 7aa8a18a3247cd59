-- The pull request's title, for the dashboard: the latest GitHub's deliveries named, and that
-- delivery's GitHub time (`updated_at`, milliseconds), so a delivery that arrives late cannot
-- bring back an older title. At most 256 characters (GitHub's own limit).
ALTER TABLE pull_requests ADD COLUMN title TEXT;
ALTER TABLE pull_requests ADD COLUMN title_at BIGINT;

-- A title that changes is a change of what the environment shows: the change feed (0016) gets it,
-- so the dashboard's table shows an edited title live.
CREATE FUNCTION previewd_pull_request_title_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO environment_changes (environment_id, at)
    SELECT id, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT FROM environments
    WHERE repo_id = NEW.repo_id AND pr_number = NEW.pr_number;
    RETURN NULL;
END
$$;

CREATE TRIGGER pull_request_title_set AFTER INSERT ON pull_requests
FOR EACH ROW WHEN (NEW.title IS NOT NULL)
EXECUTE FUNCTION previewd_pull_request_title_changed();

CREATE TRIGGER pull_request_title_changed AFTER UPDATE OF title ON pull_requests
FOR EACH ROW WHEN (OLD.title IS DISTINCT FROM NEW.title)
EXECUTE FUNCTION previewd_pull_request_title_changed();
