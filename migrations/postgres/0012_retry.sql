-- Failed environments whose cause can pass are tried again with backoff (environments/src/reconcile/retry.rs):
--   retries:  rollout retries since the last Ready or the last event (a push, a command resets it).
--   retry_at: when the next one is due, while the environment is Failed and one is scheduled.
ALTER TABLE environments ADD COLUMN retries BIGINT NOT NULL DEFAULT 0;
ALTER TABLE environments ADD COLUMN retry_at BIGINT;
CREATE INDEX environments_retry_due ON environments (retry_at) WHERE retry_at IS NOT NULL;
