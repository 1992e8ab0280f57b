-- depends: 0001_initial
-- The fallback worker's own table (seed 000: "S3 indisponible → stockage temporaire Base64 →
-- migration automatique"): the original of a version the store stage could not put in S3,
-- Base64-encoded, one row per version, kept out of the hot file tables. The row is deleted
-- only once S3 holds the bytes with the same SHA-256 and file.stored is confirmed by the
-- broker. Only the fallback worker writes here; the gateway reads it to serve the content.

CREATE TABLE fallback_blobs (
    file_id            uuid        NOT NULL,
    version_number     integer     NOT NULL CHECK (version_number >= 1),
    owner              text        NOT NULL,
    content_type       text        NOT NULL,
    size_bytes         bigint      NOT NULL CHECK (size_bytes >= 0),
    sha256             text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    data_base64        text        NOT NULL,
    event              jsonb       NOT NULL,  -- the file.scanned event to store from
    reason             text        NOT NULL,  -- why the store stage gave up
    created_at         timestamptz NOT NULL DEFAULT now(),
    migration_attempts integer     NOT NULL DEFAULT 0,
    last_error         text,
    PRIMARY KEY (file_id, version_number)
);
CREATE INDEX fallback_blobs_created ON fallback_blobs (created_at);
