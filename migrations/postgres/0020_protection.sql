-- Protected preview URLs and idle sleep (issue: cost and access).
-- repositories.private: the repository's visibility as deliveries say (NULL: not known yet),
-- which protection `auto` decides by. sessions.preview_secret_hash: the SHA-256 of the
-- session's preview cookie, a second secret that opens previews only (it is sent to every
-- preview host, so it must not open the dashboard). bypass_tokens: per repository, for
-- automation; only the SHA-256 of each is kept. environments.last_visit_at: the last visit
-- let through the forward-authentication endpoint (written in batches).
ALTER TABLE repositories ADD COLUMN private BOOLEAN;
ALTER TABLE sessions ADD COLUMN preview_secret_hash TEXT;
CREATE UNIQUE INDEX sessions_preview_secret ON sessions (preview_secret_hash);
CREATE TABLE bypass_tokens (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repo_id      BIGINT  NOT NULL,
    name         TEXT    NOT NULL,
    token_hash   TEXT    NOT NULL UNIQUE,
    created_by   TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE UNIQUE INDEX bypass_tokens_live_name ON bypass_tokens (repo_id, name) WHERE revoked_at IS NULL;
ALTER TABLE environments ADD COLUMN last_visit_at BIGINT;
-- Sleep: sleep_after_ms is how long without a visit or a push the environment may stay awake,
-- decided when it became Ready (NULL: never). asleep: its workloads are scaled to zero (set on
-- the move to Sleeping, cleared once Ready again), which is what the waking page is shown for.
ALTER TABLE environments ADD COLUMN sleep_after_ms BIGINT;
ALTER TABLE environments ADD COLUMN asleep BOOLEAN NOT NULL DEFAULT FALSE;
