-- When each instance is next due for a refresh, from the schedule the runtime computes, indexed.
-- A row written before is due at once (0), so that the runtime's first look computes its
-- schedule, unless it needs re-authentication.
ALTER TABLE instances ADD COLUMN next_refresh_at BIGINT;
UPDATE instances SET next_refresh_at = 0 WHERE status IS DISTINCT FROM 'needs-reauth';
CREATE INDEX instances_next_refresh_at ON instances (next_refresh_at);
-- The lease of a claim on an instance (`claim_due`): its holder's token and its end.
ALTER TABLE instances ADD COLUMN lease_token TEXT;
ALTER TABLE instances ADD COLUMN lease_until BIGINT;
