DROP INDEX IF EXISTS files_name_search;
DROP TABLE IF EXISTS file_texts;
