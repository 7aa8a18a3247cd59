-- Times are milliseconds since the Unix epoch (BIGINT) so that the same queries and row types
-- serve SQLite and Postgres.

-- Every webhook delivery that passed signature verification, including ignored ones, so that a
-- redelivery is recognised and an operator can see what arrived. Raw payloads are not kept: the
-- typed event previewd derived from a delivery travels in its job.
CREATE TABLE deliveries (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hook_id      TEXT    NOT NULL,
    delivery_id  TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    action       TEXT,
    outcome      TEXT    NOT NULL,
    received_at  BIGINT  NOT NULL,
    UNIQUE (hook_id, delivery_id)
);

-- The durable job queue. A job is claimed by setting a lease; a lease that runs out (the worker
-- died) makes the job claimable again.
CREATE TABLE jobs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    delivery_id  BIGINT  REFERENCES deliveries (id),
    state        TEXT    NOT NULL DEFAULT 'queued',
    attempts     BIGINT  NOT NULL DEFAULT 0,
    max_attempts BIGINT  NOT NULL,
    run_at       BIGINT  NOT NULL,
    lease_owner  TEXT,
    lease_until  BIGINT ,
    last_error   TEXT,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);
CREATE INDEX jobs_claimable ON jobs (state, run_at);

-- One row per pull request environment, keyed by the repository's GitHub id (stable across
-- renames) and the pull request number.
CREATE TABLE environments (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repo_id       BIGINT  NOT NULL,
    repo_owner    TEXT    NOT NULL,
    repo_name     TEXT    NOT NULL,
    pr_number     BIGINT  NOT NULL,
    head_sha      TEXT    NOT NULL,
    head_branch   TEXT    NOT NULL,
    author        TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    reason        TEXT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    expires_at    BIGINT ,
    UNIQUE (repo_id, pr_number)
);

CREATE TABLE environment_transitions (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    environment_id BIGINT  NOT NULL REFERENCES environments (id),
    from_state     TEXT,
    to_state       TEXT    NOT NULL,
    head_sha       TEXT    NOT NULL,
    reason         TEXT,
    at             BIGINT  NOT NULL
);
CREATE INDEX environment_transitions_by_environment ON environment_transitions (environment_id, id);
