-- Finding running jobs whose lease ran out without scanning the queue.
CREATE INDEX jobs_leases ON jobs (state, lease_until);
