ALTER TABLE fallback_blobs DROP COLUMN trace_context;
