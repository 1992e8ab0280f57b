-- `ops:admin` keys become `ops` keys again. `ops` keys could replay and purge, so an `ops:read`
-- key is revoked first, never widened; it stays listed as a revoked `ops` key.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scope_check;
UPDATE api_keys SET revoked_at = now() WHERE scope = 'ops:read' AND revoked_at IS NULL;
UPDATE api_keys SET scope = 'ops' WHERE scope IN ('ops:read', 'ops:admin');
ALTER TABLE api_keys
    ADD CONSTRAINT api_keys_scope_check CHECK (scope IN ('upload', 'ops'));
