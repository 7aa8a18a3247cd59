-- Every change of what an environment shows (state, reason, URL, commits, expiry, note), in
-- order: the feed behind `GET /api/v1/events` (Server-Sent Events; the change's id is the
-- event id a client resumes from with Last-Event-ID). Written by triggers, so no code path
-- that writes an environment can forget it. Kept a day by the retention sweep.
CREATE TABLE environment_changes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    environment_id INTEGER NOT NULL,
    at             INTEGER NOT NULL
);
CREATE INDEX environment_changes_at ON environment_changes (at);

CREATE TRIGGER environment_inserted AFTER INSERT ON environments
BEGIN
    INSERT INTO environment_changes (environment_id, at)
    VALUES (NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER environment_changed
AFTER UPDATE OF state, reason, name, url, head_sha, deployed_sha, expires_at, warned_at, note ON environments
WHEN OLD.state IS NOT NEW.state OR OLD.reason IS NOT NEW.reason OR OLD.name IS NOT NEW.name
    OR OLD.url IS NOT NEW.url OR OLD.head_sha IS NOT NEW.head_sha OR OLD.deployed_sha IS NOT NEW.deployed_sha
    OR OLD.expires_at IS NOT NEW.expires_at OR OLD.warned_at IS NOT NEW.warned_at OR OLD.note IS NOT NEW.note
BEGIN
    INSERT INTO environment_changes (environment_id, at)
    VALUES (NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
