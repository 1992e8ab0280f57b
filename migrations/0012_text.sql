-- depends: 0009_versions 0010_deletion 0011_protection
-- The text transforms (docs/transforms.md; seeds 002 and 003: PDF text, OCR): what the pdftext
-- and ocr stages extracted from a version, or why they could not, and the full-text search of
-- GET /v1/files?q=. Written only by the commit stage (file.text_extracted, file.text_failed);
-- the text itself is an object beside the original (`<original key>.text.txt`).
CREATE TABLE file_texts (
    file_id           uuid        NOT NULL REFERENCES files (file_id) ON DELETE CASCADE,
    version_number    integer     NOT NULL CHECK (version_number >= 1),
    owner             text        NOT NULL,
    transform         text        NOT NULL CHECK (transform IN ('pdftext', 'ocr')),
    state             text        NOT NULL CHECK (state IN ('extracted', 'failed')),
    text_key          text,
    size_bytes        bigint      CHECK (size_bytes >= 0),
    sha256            text        CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    pages             integer     CHECK (pages >= 0),
    ocr_pages         integer     CHECK (ocr_pages >= 0),
    language          text,
    document_metadata jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error             text,
    -- What the search index holds: the text's first SLUICE_TEXT_SEARCH_MAX_CHARS characters.
    search_text       text        NOT NULL DEFAULT '',
    search_truncated  boolean     NOT NULL DEFAULT false,
    -- 'simple': lower-cased words, no stemming and no stop words, the same for every language.
    search            tsvector    GENERATED ALWAYS AS (to_tsvector('simple', search_text)) STORED,
    event_id          uuid        NOT NULL,
    occurred_at       timestamptz NOT NULL,
    PRIMARY KEY (file_id, version_number)
);
CREATE INDEX file_texts_search ON file_texts USING gin (search);
CREATE INDEX file_texts_owner ON file_texts (owner);
-- File names are searched by the same configuration, '.', '_' and '-' read as spaces (else the
-- parser takes `annual-report.pdf` as one token and neither `annual` nor `report` finds it).
CREATE INDEX files_name_search ON files
    USING gin (to_tsvector('simple', translate(original_name, '._-', '   ')));
