DROP INDEX files_status_received;
DROP INDEX files_attention;
ALTER TABLE files DROP COLUMN attention;
