-- depends: 0005_attention
-- Ops keys split by what they may do (least privilege): an `ops:read` key reads the pipeline
-- status and lists, shows and dry-runs dead letters; an `ops:admin` key also replays and purges
-- them. Every `ops` key becomes `ops:admin`, so it keeps what it could do.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scope_check;
UPDATE api_keys SET scope = 'ops:admin' WHERE scope = 'ops';
ALTER TABLE api_keys
    ADD CONSTRAINT api_keys_scope_check CHECK (scope IN ('upload', 'ops:read', 'ops:admin'));
