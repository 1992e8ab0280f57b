DROP TABLE fallback_blobs;
