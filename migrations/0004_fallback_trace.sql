-- depends: 0003_key_scope
-- The W3C trace context (traceparent, tracestate) of the span that kept a fallback row, so the
-- migration back to S3 continues the file's trace instead of starting another one
-- (docs/observability.md). Rows kept before this column existed have none: their migration
-- starts a trace whose id is the file id.

ALTER TABLE fallback_blobs ADD COLUMN trace_context jsonb NOT NULL DEFAULT '{}'::jsonb;
