-- depends: 0008_event_seq
-- File versions (docs/files-api.md). Additive only: code that does not know this migration
-- keeps working.
--
-- Each version keeps its own description: the name it was uploaded under, its content type
-- (sniffed by the scan stage) and when it was received. Versions recorded before this
-- migration have NULL there and read the file's own columns instead.
ALTER TABLE file_versions ADD COLUMN original_name text;
ALTER TABLE file_versions ADD COLUMN content_type text;
ALTER TABLE file_versions ADD COLUMN received_at timestamptz;

-- The occurred_at of the last file.updated (PATCH) the commit stage applied: an older edit
-- delivered late (after a retry) never overwrites a newer one.
ALTER TABLE files ADD COLUMN edited_at timestamptz;

-- Version numbers handed out to new versions (POST /v1/files/{id}/versions, an upstream
-- file.received naming an existing file) before their file.received is published. Not file
-- state: the commit stage never reads it, and a version exists only once the commit stage has
-- recorded it. A number is taken under a per-file advisory lock as one more than the largest
-- of this table, file_versions and files.current_version, and rows are never removed, so two
-- new versions of one file never get the same number and a number is never given twice, even
-- when its upload is then refused. event_id makes a reservation idempotent: the same
-- file.received (a redelivery) gets the same number again.
CREATE TABLE version_reservations (
    file_id        uuid        NOT NULL,
    version_number integer     NOT NULL CHECK (version_number >= 2),
    event_id       uuid        NOT NULL UNIQUE,
    owner          text        NOT NULL,
    reserved_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, version_number)
);

-- GET /v1/files filters: each filter with the owner and the keyset order
-- (received_at DESC, file_id DESC), so a filtered page is an index range scan.
CREATE INDEX files_owner_status_received ON files (owner, status, received_at DESC, file_id DESC);
CREATE INDEX files_owner_kind_received ON files (owner, kind, received_at DESC, file_id DESC);
CREATE INDEX files_owner_type_received
    ON files (owner, content_type, received_at DESC, file_id DESC);
-- name_prefix: a left-anchored LIKE on the name, byte order (text_pattern_ops).
CREATE INDEX files_owner_name_prefix ON files (owner, original_name text_pattern_ops);
