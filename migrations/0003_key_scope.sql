-- depends: 0002_fallback
-- API key scopes (least privilege): an `upload` key uploads and reads its owner's files
-- (/v1); an `ops` key inspects, replays and purges dead letters and reads the pipeline status
-- (/ops). Neither works on the other's routes. Keys that existed before are upload keys.

ALTER TABLE api_keys
    ADD COLUMN scope text NOT NULL DEFAULT 'upload' CHECK (scope IN ('upload', 'ops'));
