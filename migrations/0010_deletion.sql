-- depends: 0008_event_seq
-- Deletion and erasure (seed 000: GDPR: a deletion endpoint, an export, minimisation;
-- docs/gdpr.md).
--
-- file_deletions: the gateway's tombstone, written by DELETE /v1/files/{id} (and by `sluice gdpr
-- erase`) before file.deleted is published, so every read route answers 404 at once while the
-- commit stage (the only writer of file state) has not recorded the deletion yet. No name, no
-- metadata: the file id, its owner, when, and the file.deleted event's id.
CREATE TABLE file_deletions (
    file_id      uuid PRIMARY KEY,
    owner        text        NOT NULL,
    event_id     uuid        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_deletions_owner ON file_deletions (owner);

-- gdpr_erasures: the receipt of each `sluice gdpr erase` (counts, time, who asked). The owner is
-- kept only as its SHA-256, which is enough to recognise a late stage event of an erased owner's
-- file (dropped) and to find the receipt again from the owner's name, without keeping the name.
CREATE TABLE gdpr_erasures (
    erasure_id   uuid PRIMARY KEY,
    owner_sha256 text        NOT NULL CHECK (owner_sha256 ~ '^[0-9a-f]{64}$'),
    requested_by text        NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    counts       jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX gdpr_erasures_owner ON gdpr_erasures (owner_sha256, started_at);
