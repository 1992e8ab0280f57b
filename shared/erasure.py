"""How an erased owner is recognised without keeping its name (``gdpr_erasures.owner_sha256``;
docs/gdpr.md).

``sluice gdpr erase`` stores the SHA-256 of the owner's name in its receipt; the commit stage
compares it with an event's owner to drop a late event of an erased owner's file.
"""

from __future__ import annotations

import hashlib


def owner_digest(owner: str) -> str:
    """The SHA-256 (64 lowercase hex digits) of ``owner``'s UTF-8 bytes."""
    return hashlib.sha256(owner.encode()).hexdigest()
