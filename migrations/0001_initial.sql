-- Sluice initial schema.
-- Only the commit consumer writes file state (files, file_versions, file_events);
-- the gateway writes api_keys and reads the rest.

CREATE TABLE api_keys (
    key_id      uuid PRIMARY KEY,
    owner       text        NOT NULL CHECK (owner ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    key_hash    bytea       NOT NULL UNIQUE,   -- SHA-256 of the secret (256-bit random token)
    key_prefix  text        NOT NULL,          -- first characters, to recognise a key in lists
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE files (
    file_id         uuid PRIMARY KEY,
    owner           text        NOT NULL,
    original_name   text        NOT NULL,
    content_type    text        NOT NULL,
    kind            text,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status          text        NOT NULL,       -- received|scanned|stored|available|rejected
    status_reason   text,
    current_version integer     NOT NULL DEFAULT 1,
    received_at     timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX files_owner_received ON files (owner, received_at DESC);

CREATE TABLE file_versions (
    file_id           uuid        NOT NULL REFERENCES files (file_id) ON DELETE CASCADE,
    version_number    integer     NOT NULL CHECK (version_number >= 1),
    status            text        NOT NULL,
    size_bytes        bigint      NOT NULL CHECK (size_bytes >= 0),
    sha256            text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    source            text        NOT NULL,
    bucket            text,
    object_key        text,
    scanner           text,
    signature_version text,
    thumbnails        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    thumbnail_error   text,
    rejection_reason  text,
    signature         text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, version_number)       -- seed 004: file_id + version_number unique
);

-- Every file.* event of a file, once: the stage history, and the processed-events record
-- (event_id is the idempotency key).
CREATE TABLE file_events (
    event_id       uuid PRIMARY KEY,
    file_id        uuid        NOT NULL,
    version_number integer     NOT NULL,
    event_type     text        NOT NULL,
    causation_id   uuid,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    detail         text,
    payload        jsonb       NOT NULL
);
CREATE INDEX file_events_file ON file_events (file_id, occurred_at);
