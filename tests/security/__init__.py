"""Security tests: the trust boundaries against the real services (docs/security.md)."""
