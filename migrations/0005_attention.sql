-- depends: 0004_fallback_trace
-- A file whose message a stage dead-lettered needs a person: the commit stage records the
-- file.dead_lettered notice here (stage, error type and message, event type, attempts, when)
-- and clears it when an event of the file's progress newer than the failure arrives (a replay
-- worked). NULL: nothing waits in a dead-letter queue for this file.
ALTER TABLE files ADD COLUMN attention jsonb;
CREATE INDEX files_attention ON files (received_at) WHERE attention IS NOT NULL;
-- Files still moving, by age: what `sluice doctor` and the sluice_files_stuck gauge look for.
CREATE INDEX files_status_received ON files (status, received_at);
