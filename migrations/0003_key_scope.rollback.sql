-- Without the column every key would act as an upload key: revoke ops keys first, so rolling
-- back never turns an ops key into one that uploads.
UPDATE api_keys SET revoked_at = now() WHERE scope = 'ops' AND revoked_at IS NULL;
ALTER TABLE api_keys DROP COLUMN scope;
