"""What the commit stage records of rescans (docs/security.md § Rescans): ``file.rescanned``
updates the version's scanner and signature database versions and joins the history, the
status unchanged; ``file.quarantined`` moves the version (and the file, when it is the current
one) to ``quarantined`` with the signature as its reason. The status rules are
``advance_status``'s (``quarantined`` outranks ``available`` and ``corrupted`` and never
changes again)."""

from __future__ import annotations

from typing import Final

from shared.events import BaseEvent, FileQuarantined, FileRescanned
from shared.ports import StageFields
from shared.status import FileStatus

#: Event type → the status it stands for (a ``file.rescanned`` moves nothing forward).
PROTECTION_STATUS: Final[dict[str, FileStatus]] = {
    "file.rescanned": FileStatus.RECEIVED,
    "file.quarantined": FileStatus.QUARANTINED,
}


def protection_detail(event: BaseEvent) -> str | None:
    """The history's line for a rescan event, e.g. ``quarantined: Sluice.Test.Later (found by
    ClamAV 1.0.9 / 27431/…); objects moved to _quarantine/``; ``None`` for any other event."""
    if isinstance(event, FileRescanned):
        return f"rescanned clean: {event.scanner} / {event.signature_version}"
    if isinstance(event, FileQuarantined):
        return (
            f"quarantined: {event.signature} (found by {event.scanner} / "
            f"{event.signature_version}); {len(event.quarantine_keys)} object(s) moved to "
            "_quarantine/"
        )
    return None


def protection_fields(event: BaseEvent) -> StageFields | None:
    """The ``file_versions`` columns a rescan event sets; ``None`` for any other event."""
    if isinstance(event, FileRescanned):
        return StageFields(scanner=event.scanner, signature_version=event.signature_version)
    if isinstance(event, FileQuarantined):
        return StageFields(
            scanner=event.scanner,
            signature_version=event.signature_version,
            signature=event.signature,
        )
    return None
