-- The admin API (service/src/http/api/):
--   api_tokens: bearer tokens. Only the SHA-256 of a token is kept (tokens are 256 random bits,
--               so a fast hash is enough); the token itself is shown once, by `previewd token
--               create`. A revoked token keeps its row (and name) for the audit log.
--   audit_log:  who did what to which environment, when, from where, and how it ended.
CREATE TABLE api_tokens (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    token_hash   TEXT    NOT NULL UNIQUE,
    created_at   BIGINT  NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE audit_log (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             BIGINT  NOT NULL,
    actor          TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    environment_id BIGINT,
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
ALTER TABLE environments ADD COLUMN requests_cpu_millis BIGINT;
ALTER TABLE environments ADD COLUMN requests_memory_bytes BIGINT;
ALTER TABLE environment_transitions ADD COLUMN requests_cpu_millis BIGINT;
ALTER TABLE environment_transitions ADD COLUMN requests_memory_bytes BIGINT;
CREATE INDEX environment_transitions_at ON environment_transitions (at);
