DROP TABLE IF EXISTS file_videos;
