"""The optional backup mirror: copies available files' objects to a second S3 (seed 001)."""
