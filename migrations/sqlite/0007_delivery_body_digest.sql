-- The SHA-256 (hexadecimal) of each delivery's body as received. The webhook signature covers
-- the body only, so a captured body sent again under a fresh X-GitHub-Delivery id is signed as
-- well as the original: previewd recognises it by this digest. A digest is kept for the
-- redelivery window (`github.redelivery_window_hours`) and cleared after it; rows stored before
-- this migration have none.
ALTER TABLE deliveries ADD COLUMN body_sha256 TEXT;
-- One delivery per body: the database, not a read before the write, decides which of two
-- concurrent copies is the original, on every replica.
CREATE UNIQUE INDEX deliveries_body_sha256 ON deliveries (body_sha256) WHERE body_sha256 IS NOT NULL;
-- Finds the digests that have left the window.
CREATE INDEX deliveries_body_sha256_received_at ON deliveries (received_at) WHERE body_sha256 IS NOT NULL;
