DROP INDEX file_events_file_seq;
ALTER TABLE file_events DROP COLUMN seq;
