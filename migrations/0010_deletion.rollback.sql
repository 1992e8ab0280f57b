DROP TABLE gdpr_erasures;
DROP TABLE file_deletions;
