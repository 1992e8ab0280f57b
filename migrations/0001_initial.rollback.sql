DROP TABLE file_events;
DROP TABLE file_versions;
DROP TABLE files;
DROP TABLE api_keys;
