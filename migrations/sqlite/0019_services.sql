-- Several services and a database per environment (issue: environments for real applications).
-- database_generation counts `/preview reset-db`: each generation is a new, empty database,
-- seeded once. service_urls holds the public services' URLs as a JSON object (name to URL),
-- written when the environment becomes Ready; NULL before.
ALTER TABLE environments ADD COLUMN database_generation INTEGER NOT NULL DEFAULT 1;
ALTER TABLE environments ADD COLUMN service_urls TEXT;
