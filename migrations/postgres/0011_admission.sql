-- Admission that holds under concurrency (environments/src/store/admission.rs):
--   admitted_at:   when the environment was given a slot under the policy's limits. It holds the
--                  slot while it is live (Pending after a push, Provisioning, Ready, Failed) and
--                  gives it back on leaving those states (the store clears both columns then).
--   waiting_since: when it first asked for a slot and did not get one; the queue's order.
-- Environments live before this migration were admitted under the old rule: they keep their slot.
ALTER TABLE environments ADD COLUMN admitted_at BIGINT;
ALTER TABLE environments ADD COLUMN waiting_since BIGINT;
UPDATE environments SET admitted_at = updated_at WHERE state IN ('Provisioning', 'Ready', 'Failed');
UPDATE environments SET admitted_at = updated_at WHERE state = 'Pending' AND deployed_sha IS NOT NULL;
CREATE INDEX environments_waiting ON environments (waiting_since) WHERE waiting_since IS NOT NULL;
