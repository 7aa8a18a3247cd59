-- Whether a repository configures previews, as previewd last found it: the preview file at the
-- head commit of the last pull request it considered. Lets an operator tell a repository
-- without previews by choice (no file, so no environment and no comment) from one previewd
-- never heard of.
--   config_state:      'present' or 'absent'.
--   config_sha:        the commit that was read.
--   config_checked_at: when, in milliseconds since the epoch.
ALTER TABLE repositories ADD COLUMN config_state TEXT;
ALTER TABLE repositories ADD COLUMN config_sha TEXT;
ALTER TABLE repositories ADD COLUMN config_checked_at INTEGER;
