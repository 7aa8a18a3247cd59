-- Several services and a database per environment (issue: environments for real applications).
-- database_generation counts `/preview reset-db`: each generation is a new, empty database,
-- seeded once. service_urls holds the public services' URLs as a JSON object (name to URL),
-- written when the environment becomes Ready; NULL before. has_database: whether its
-- .preview.yaml asks for a database (written with service_urls), so reset-db is offered.
ALTER TABLE environments ADD COLUMN database_generation INTEGER NOT NULL DEFAULT 1;
ALTER TABLE environments ADD COLUMN service_urls TEXT;
ALTER TABLE environments ADD COLUMN has_database INTEGER NOT NULL DEFAULT 0;
