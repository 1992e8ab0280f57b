-- depends: 0007_upstreams
-- Each event of a file gets a sequence number, 1, 2, 3, ... in the order the commit stage
-- recorded it: the `id:` of the gateway's Server-Sent Events (GET /v1/files/{id}/events) and
-- the cursor a client resumes from (Last-Event-ID). The commit stage assigns it under a per-file
-- transaction-level advisory lock, so a number is visible only after every smaller one of the
-- same file (docs/uploads-progress.md). Existing rows are numbered in the order recorded.
ALTER TABLE file_events ADD COLUMN seq integer;
UPDATE file_events e SET seq = n.seq
FROM (SELECT event_id,
             row_number() OVER (PARTITION BY file_id ORDER BY recorded_at, occurred_at, event_id)
                 AS seq
      FROM file_events) n
WHERE e.event_id = n.event_id;
ALTER TABLE file_events ALTER COLUMN seq SET NOT NULL;
ALTER TABLE file_events ADD CONSTRAINT file_events_seq_positive CHECK (seq >= 1);
CREATE UNIQUE INDEX file_events_file_seq ON file_events (file_id, seq);
