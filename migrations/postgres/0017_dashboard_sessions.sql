-- The dashboard's sign-ins with GitHub (service/src/http/dashboard/):
--   sessions:             one per sign-in. Only the SHA-256 of the session's secret (the cookie)
--                         is kept, as for API tokens; the person's GitHub token is never stored
--                         (it is used for the sign-in's calls to GitHub, then dropped).
--                         csrf_token is sent back with every form, so a page of another site
--                         cannot act in the person's name.
--   session_repositories: the repositories GitHub said the person may read, and whether they may
--                         write (act), as of repositories_checked_at.
CREATE TABLE sessions (
    id                     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    secret_hash            TEXT    NOT NULL UNIQUE,
    login                  TEXT    NOT NULL,
    is_admin               BOOLEAN NOT NULL DEFAULT FALSE,
    csrf_token             TEXT    NOT NULL,
    created_at             BIGINT  NOT NULL,
    expires_at             BIGINT  NOT NULL,
    repositories_checked_at BIGINT NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE session_repositories (
    session_id BIGINT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    repo_id    BIGINT NOT NULL,
    can_write  BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (session_id, repo_id)
);
