-- Share links (issue: cost and access): a URL that opens one environment's previews for
-- someone outside GitHub until it expires or is revoked, created by someone who may write to
-- the repository. Only the SHA-256 of each link's secret is kept; the secret is in the URL,
-- shown once. Rows go with their environment, or a day after they expire (retention).
CREATE TABLE share_links (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    environment_id INTEGER NOT NULL,
    secret_hash    TEXT    NOT NULL UNIQUE,
    created_by     TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    last_used_at   INTEGER,
    revoked_at     INTEGER
);
CREATE INDEX share_links_environment ON share_links (environment_id);
CREATE INDEX share_links_expiry ON share_links (expires_at);
