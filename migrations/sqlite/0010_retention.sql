-- What the retention sweep (environments/src/store/retention.rs) needs to find old rows without
-- scanning whole tables:
--   deliveries_received_at: deliveries past their retention (the index of migration 0007 covers
--                           rows that still hold a body digest only).
--   jobs_delivery:          whether a job still references a delivery (jobs.delivery_id is a
--                           foreign key), and jobs_for_delivery.
CREATE INDEX deliveries_received_at ON deliveries (received_at);
CREATE INDEX jobs_delivery ON jobs (delivery_id) WHERE delivery_id IS NOT NULL;
