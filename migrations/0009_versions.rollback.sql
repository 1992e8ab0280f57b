DROP INDEX files_owner_name_prefix;
DROP INDEX files_owner_type_received;
DROP INDEX files_owner_kind_received;
DROP INDEX files_owner_status_received;
DROP TABLE version_reservations;
ALTER TABLE files DROP COLUMN edited_at;
ALTER TABLE file_versions DROP COLUMN received_at;
ALTER TABLE file_versions DROP COLUMN content_type;
ALTER TABLE file_versions DROP COLUMN original_name;
