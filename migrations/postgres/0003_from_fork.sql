-- Whether the pull request's head lives in a fork: its environment must never receive the
-- platform's secrets, so the reconciler has to know it, not only the planner.
ALTER TABLE environments ADD COLUMN from_fork BOOLEAN NOT NULL DEFAULT FALSE;
