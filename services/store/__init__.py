"""The store stage: originals into S3, checked end to end by SHA-256."""
