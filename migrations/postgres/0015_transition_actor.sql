-- Who or what caused each transition (environments/src/model.rs `Cause`): the GitHub event and
-- its sender, a command's author, an API token, or previewd itself. NULL for rows written
-- before this column existed.
ALTER TABLE environment_transitions ADD COLUMN actor TEXT;
