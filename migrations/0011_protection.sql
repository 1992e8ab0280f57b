-- depends: 0008_event_seq
-- The backup mirror (docs/operations.md § Backup mirror): what the mirror consumer copied to
-- the second S3 endpoint, object by object, so a deletion (file.deleted) or a quarantine
-- (file.quarantined) knows what to remove there and `sluice reconcile --mirror` what to expect.
-- Written only by the mirror consumer; it is bookkeeping of the copy, not file state.
CREATE TABLE mirrored_objects (
    file_id        uuid        NOT NULL,
    version_number integer     NOT NULL CHECK (version_number >= 1),
    object_key     text        NOT NULL,
    sha256         text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes     bigint      NOT NULL CHECK (size_bytes >= 0),
    mirrored_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, object_key)
);
