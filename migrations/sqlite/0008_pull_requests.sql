-- What previewd knows of a pull request apart from its environment (which a pull request may
-- not have), for commands:
--   head_sha, head_at: the newest head commit GitHub's deliveries named, and the earliest GitHub
--                      time (the pull request's `updated_at`, milliseconds) at which one named
--                      it: the commit was pushed no later than head_at. `/preview approve`
--                      approves the head only if head_at is before the comment was written.
--   replied_at:        when previewd last answered a command refused on this pull request
--                      (milliseconds): such answers are throttled per pull request, across
--                      workers and replicas.
CREATE TABLE pull_requests (
    repo_id    INTEGER NOT NULL,
    pr_number  INTEGER NOT NULL,
    head_sha   TEXT,
    head_at    INTEGER,
    replied_at INTEGER,
    PRIMARY KEY (repo_id, pr_number)
);

-- Sticky comments used to be found by their marker alone, whoever wrote them: a comment id
-- recorded before this migration may be someone else's. Each environment's next report finds
-- previewd's own comment again (by marker and author) or posts one.
UPDATE github_reports SET comment_id = NULL, comment_digest = NULL;
