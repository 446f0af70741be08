-- Instances: the state as JSON text (key order kept), its version, and the columns listings
-- filter on, copied from the state at each write.
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    connector TEXT,
    expires_at BIGINT,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX instances_expires_at ON instances (expires_at);
CREATE INDEX instances_connector ON instances (connector, id);
