-- Records: small JSON documents kept beside the instances by namespace and id (API keys first),
-- each with a version for conditional writes and an optional expiry (epoch ms) after which it
-- is absent.
CREATE TABLE records (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    version BIGINT NOT NULL,
    expires_at BIGINT,
    value TEXT NOT NULL,
    PRIMARY KEY (namespace, id)
);
CREATE INDEX records_expires_at ON records (expires_at);
