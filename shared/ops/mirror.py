"""``sluice reconcile --mirror``: the main object store and the backup mirror compared key by
key (seed 001: backup by mirror; docs/reconciliation.md § The mirror).

Both buckets are listed whole. A key of the main store (outside ``_quarantine/`` and the
encryption probes, which are never mirrored) that the mirror lacks is ``missing``, unless it is
younger than ``grace`` (the mirror consumer may not have copied it yet); a key only on the
mirror is ``extra`` (a deletion not mirrored); a key on both whose SHA-256 differs is
``checksum``. The SHA-256 of an object is its ``sha256`` user metadata, else its S3 full-object
``ChecksumSHA256``, else its bytes, read and hashed. Nothing is changed.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from shared.adapters.encryption import PROBE_PREFIX
from shared.adapters.storage import ObjectInfo
from shared.naming import QUARANTINE_PREFIX
from shared.ports import ObjectStore

DifferenceKind = Literal["missing", "extra", "checksum"]
#: Main-store keys that are never mirrored.
NOT_MIRRORED = (QUARANTINE_PREFIX, PROBE_PREFIX)


@dataclass(frozen=True)
class MirrorDifference:
    """One key where the two stores disagree, and each side's SHA-256 (hex) when compared."""

    key: str
    kind: DifferenceKind
    main_sha256: str | None = None
    mirror_sha256: str | None = None


@dataclass
class MirrorReport:
    """What the comparison found: keys compared on both sides, young keys skipped, and every
    difference."""

    main_bucket: str
    mirror_bucket: str
    compared: int = 0
    young_skipped: int = 0
    differences: list[MirrorDifference] = field(default_factory=list)

    def count(self, kind: DifferenceKind) -> int:
        """How many differences of ``kind``."""
        return sum(1 for d in self.differences if d.kind == kind)


async def _listing(store: ObjectStore) -> dict[str, ObjectInfo]:
    return {info.key: info async for info in store.list_objects()}


async def sha256_of(store: ObjectStore, key: str) -> str | None:
    """The object's SHA-256 (hex), from its metadata, its full-object checksum, or its bytes;
    ``None`` if it is gone."""
    info = await store.head(key)
    if info is None:
        return None
    if info.metadata.get("sha256"):
        return info.metadata["sha256"]
    checksum = info.checksum_sha256
    if checksum and "-" not in checksum:  # a composite (multipart) checksum is not the file's
        return base64.b64decode(checksum).hex()
    return hashlib.sha256(await store.get_bytes(key)).hexdigest()


async def compare_mirror(
    main: ObjectStore, mirror: ObjectStore, *, grace: timedelta = timedelta(hours=1)
) -> MirrorReport:
    """Compare ``main`` with ``mirror`` (module docstring).

    Raises:
        StorageUnavailable: either store unreachable.
    """
    report = MirrorReport(main.bucket, mirror.bucket)
    now = datetime.now(UTC)
    ours = {k: v for k, v in (await _listing(main)).items() if not k.startswith(NOT_MIRRORED)}
    theirs = await _listing(mirror)
    for key in sorted(ours.keys() - theirs.keys()):
        modified = ours[key].last_modified
        if modified is None or now - modified < grace:
            report.young_skipped += 1
            continue
        report.differences.append(MirrorDifference(key, "missing"))
    for key in sorted(theirs.keys() - ours.keys()):
        report.differences.append(MirrorDifference(key, "extra"))
    for key in sorted(ours.keys() & theirs.keys()):
        report.compared += 1
        here, there = await sha256_of(main, key), await sha256_of(mirror, key)
        if here != there:
            report.differences.append(MirrorDifference(key, "checksum", here, there))
    return report
