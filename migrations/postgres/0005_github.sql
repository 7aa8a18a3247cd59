-- What previewd needs to talk to GitHub about an environment.
--   labels, draft:   the pull request's last known labels (JSON array) and draft flag: the keep
--                    label exempts it from TTL expiry, the trigger label keeps it alive.
--   deployed_sha:    the head SHA the environment last became Ready with; it stays deployed
--                    while a newer head waits for its checks.
--   approved_sha:    a fork's head SHA that someone with write access approved.
--   requested:       someone asked for it with `/preview deploy` (any trigger mode).
--   note:            the outcome of the last command, shown in the pull request comment.
ALTER TABLE environments ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';
ALTER TABLE environments ADD COLUMN draft BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE environments ADD COLUMN deployed_sha TEXT;
ALTER TABLE environments ADD COLUMN approved_sha TEXT;
ALTER TABLE environments ADD COLUMN requested BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE environments ADD COLUMN note TEXT;

-- The repositories previewd serves: learnt from installation events and deliveries, listed by
-- the resync of open pull requests, with the App installation that grants access to each (NULL
-- with a personal access token). pulls_etag makes that listing a conditional request.
CREATE TABLE repositories (
    repo_id         BIGINT PRIMARY KEY,
    owner           TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    installation_id BIGINT,
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    pulls_etag      TEXT,
    updated_at      BIGINT NOT NULL
);

-- What previewd has said on GitHub about each environment, so that a report edits the sticky
-- comment instead of adding one, skips an edit that would not change its text, and creates one
-- deployment and one check run per head SHA. The lease keeps two reports of one environment
-- from running at once (which could post the comment twice).
CREATE TABLE github_reports (
    environment_id   BIGINT PRIMARY KEY REFERENCES environments (id),
    comment_id       BIGINT,
    comment_digest   TEXT,
    deployment_id    BIGINT,
    deployment_sha   TEXT,
    deployment_state TEXT,
    check_run_id     BIGINT,
    check_run_sha    TEXT,
    check_run_state  TEXT,
    lock_owner       TEXT,
    lock_until       BIGINT
);
