"""The commit stage: the only writer of file state in PostgreSQL, and the stage history."""
