-- Every change of what an environment shows (state, reason, URL, commits, expiry, note), in
-- order: the feed behind `GET /api/v1/events` (Server-Sent Events; the change's id is the
-- event id a client resumes from with Last-Event-ID). Written by triggers, so no code path
-- that writes an environment can forget it. Kept a day by the retention sweep.
CREATE TABLE environment_changes (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    environment_id BIGINT NOT NULL,
    at             BIGINT NOT NULL
);
CREATE INDEX environment_changes_at ON environment_changes (at);

CREATE FUNCTION previewd_environment_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO environment_changes (environment_id, at)
    VALUES (NEW.id, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT);
    RETURN NULL;
END
$$;

CREATE TRIGGER environment_inserted AFTER INSERT ON environments
FOR EACH ROW EXECUTE FUNCTION previewd_environment_changed();

CREATE TRIGGER environment_changed
AFTER UPDATE OF state, reason, name, url, head_sha, deployed_sha, expires_at, warned_at, note ON environments
FOR EACH ROW
WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.reason IS DISTINCT FROM NEW.reason
    OR OLD.name IS DISTINCT FROM NEW.name OR OLD.url IS DISTINCT FROM NEW.url
    OR OLD.head_sha IS DISTINCT FROM NEW.head_sha OR OLD.deployed_sha IS DISTINCT FROM NEW.deployed_sha
    OR OLD.expires_at IS DISTINCT FROM NEW.expires_at OR OLD.warned_at IS DISTINCT FROM NEW.warned_at
    OR OLD.note IS DISTINCT FROM NEW.note)
EXECUTE FUNCTION previewd_environment_changed();
