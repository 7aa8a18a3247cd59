-- The admin API (service/src/http/api/):
--   api_tokens: bearer tokens. Only the SHA-256 of a token is kept (tokens are 256 random bits,
--               so a fast hash is enough); the token itself is shown once, by `previewd token
--               create`. A revoked token keeps its row (and name) for the audit log.
--   audit_log:  who did what to which environment, when, from where, and how it ended.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    token_hash   TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    actor          TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    environment_id INTEGER,
    target         TEXT    NOT NULL,
    detail         TEXT,
    outcome        TEXT    NOT NULL,
    remote         TEXT
);
CREATE INDEX audit_log_at ON audit_log (at, id);

-- Usage (GET /api/v1/usage): what an environment asks of the cluster, the requests of its
-- workloads times their replicas, as resolved under the policy when its rollout starts; and the
-- same on each transition, copied from the environment when the row is written, so that the
-- figures for any past period are reproducible from the stored history alone.
ALTER TABLE environments ADD COLUMN requests_cpu_millis INTEGER;
ALTER TABLE environments ADD COLUMN requests_memory_bytes INTEGER;
ALTER TABLE environment_transitions ADD COLUMN requests_cpu_millis INTEGER;
ALTER TABLE environment_transitions ADD COLUMN requests_memory_bytes INTEGER;
CREATE INDEX environment_transitions_at ON environment_transitions (at);
