"""The purge worker: removes every byte of a deleted file (``file.deleted``; docs/gdpr.md)."""
