"""The fallback worker: Base64 in PostgreSQL while S3 is down, migrated back when it returns."""
