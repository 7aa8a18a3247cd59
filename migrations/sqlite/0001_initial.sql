-- Times are milliseconds since the Unix epoch (INTEGER) so that the same queries and row types
-- serve SQLite and Postgres.

-- Every webhook delivery that passed signature verification, including ignored ones, so that a
-- redelivery is recognised and an operator can see what arrived. Raw payloads are not kept: the
-- typed event previewd derived from a delivery travels in its job.
CREATE TABLE deliveries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    hook_id      TEXT    NOT NULL,
    delivery_id  TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    action       TEXT,
    outcome      TEXT    NOT NULL,
    received_at  INTEGER NOT NULL,
    UNIQUE (hook_id, delivery_id)
);

-- The durable job queue. A job is claimed by setting a lease; a lease that runs out (the worker
-- died) makes the job claimable again.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    delivery_id  INTEGER REFERENCES deliveries (id),
    state        TEXT    NOT NULL DEFAULT 'queued',
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at       INTEGER NOT NULL,
    lease_owner  TEXT,
    lease_until  INTEGER,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX jobs_claimable ON jobs (state, run_at);

-- One row per pull request environment, keyed by the repository's GitHub id (stable across
-- renames) and the pull request number.
CREATE TABLE environments (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id       INTEGER NOT NULL,
    repo_owner    TEXT    NOT NULL,
    repo_name     TEXT    NOT NULL,
    pr_number     INTEGER NOT NULL,
    head_sha      TEXT    NOT NULL,
    head_branch   TEXT    NOT NULL,
    author        TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    reason        TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    UNIQUE (repo_id, pr_number)
);

CREATE TABLE environment_transitions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    environment_id INTEGER NOT NULL REFERENCES environments (id),
    from_state     TEXT,
    to_state       TEXT    NOT NULL,
    head_sha       TEXT    NOT NULL,
    reason         TEXT,
    at             INTEGER NOT NULL
);
CREATE INDEX environment_transitions_by_environment ON environment_transitions (environment_id, id);
