-- The warning before expiry is a comment of its own that mentions the author (service/src/github/report.rs):
--   warning_for: the environments.warned_at whose warning comment was posted, so each warning is posted once.
ALTER TABLE github_reports ADD COLUMN warning_for INTEGER;
