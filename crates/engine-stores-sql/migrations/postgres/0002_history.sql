-- The refresh history of each instance, oldest first (seq), bounded by the writer.
CREATE TABLE history (
    seq BIGSERIAL PRIMARY KEY,
    instance TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX history_instance ON history (instance, seq);
