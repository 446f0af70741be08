-- The status (`needs-reauth`) as a column, indexed, so that listing the instances that need
-- re-authentication reads only those.
ALTER TABLE instances ADD COLUMN status TEXT;
UPDATE instances SET status = state::json ->> 'engine.status';
CREATE INDEX instances_status ON instances (status, id);
