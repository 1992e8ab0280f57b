"""Waiting for a cluster to drain, and the invariants every fault test checks afterwards.

After a fault: every accepted upload ends in exactly one terminal state; each available file
has exactly one version row, one object whose SHA-256 equals the uploaded bytes', its
thumbnails, and one ``file.committed``; no message is left in any queue except the dead letters
the test expects.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from dataclasses import dataclass

from shared.topology import FALLBACK, STAGES, WORKERS, Topology
from tests.e2e.pipeline import _depths
from tests.faults.cluster import Cluster
from tests.faults.workload import UploadResults

FINAL = ("available", "rejected")
#: One line per verified fault test; ``tests/conftest.py`` prints them at the end of the run.
REPORTS: list[str] = []


def queue_depths(cluster: Cluster) -> dict[str, int]:
    """Ready messages in every queue of the cluster's topology (in-flight ones are not counted)."""
    return asyncio.run(_depths(cluster.amqp_url, cluster.prefix))


def final_count(cluster: Cluster, file_ids: list[str]) -> int:
    rows = cluster.sql(
        "SELECT count(*) FROM files WHERE file_id = ANY(%s::uuid[]) AND status = ANY(%s)",
        file_ids,
        list(FINAL),
    )
    return int(rows[0][0])


def wait_drained(cluster: Cluster, results: UploadResults, timeout_s: float = 300) -> None:
    """Wait until every accepted file is final and the stage and retry queues are empty."""
    ids = list(results.accepted)
    deadline = time.monotonic() + timeout_s
    topology = Topology(prefix=cluster.prefix)
    work_queues = [topology.queue(s) for s in WORKERS] + [topology.retry_queue(s) for s in WORKERS]
    while time.monotonic() < deadline:
        for name, process in cluster.processes.items():
            assert process.poll() is None, f"{name} died: {cluster.log_tail(name)}"
        if final_count(cluster, ids) == len(ids):
            depths = queue_depths(cluster)
            if all(depths[q] == 0 for q in work_queues):
                return
        time.sleep(0.2)
    done = final_count(cluster, ids)
    raise AssertionError(
        f"not drained after {timeout_s}s: {done}/{len(ids)} final; queues {queue_depths(cluster)}"
    )


@dataclass
class Report:
    """The counts a fault test prints."""

    accepted: int
    refused: int
    available: int
    rejected: int
    dead_lettered: int
    duplicates: int

    def line(self, name: str) -> str:
        return (
            f"[fault {name}] accepted={self.accepted} refused={self.refused} "
            f"committed_available={self.available} committed_rejected={self.rejected} "
            f"dead_lettered={self.dead_lettered} duplicates={self.duplicates}"
        )


def verify(
    cluster: Cluster,
    results: UploadResults,
    name: str,
    expected_dead_letters: dict[str, int] | None = None,
) -> Report:
    """Check every invariant; the counts go to the end-of-run summary ("fault test counts")."""
    ids = list(results.accepted)
    problems: list[str] = []

    files = dict(
        cluster.sql("SELECT file_id::text, status FROM files WHERE file_id = ANY(%s::uuid[])", ids)
    )
    versions = Counter(
        row[0]
        for row in cluster.sql(
            "SELECT file_id::text FROM file_versions WHERE file_id = ANY(%s::uuid[])", ids
        )
    )
    events = Counter(
        (row[0], row[1])
        for row in cluster.sql(
            "SELECT file_id::text, event_type FROM file_events WHERE file_id = ANY(%s::uuid[])",
            ids,
        )
    )
    rows = cluster.sql(
        "SELECT file_id::text, object_key, thumbnails, thumbnail_error FROM file_versions"
        " WHERE file_id = ANY(%s::uuid[])",
        ids,
    )
    stored = {row[0]: row[1:] for row in rows}

    s3 = cluster.s3_client()
    objects: dict[str, list[str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cluster.bucket):
        for item in page.get("Contents", []):
            file_id = item["Key"].split("/", 1)[1][:36]
            objects.setdefault(file_id, []).append(item["Key"])

    duplicates = 0
    for file_id, upload in results.accepted.items():
        status = files.get(file_id)
        if status != upload.expected:
            problems.append(
                f"{file_id} ({upload.name}): status {status}, expected {upload.expected}"
            )
            continue
        if versions[file_id] != 1:
            problems.append(f"{file_id}: {versions[file_id]} version rows")
        repeated = [etype for (fid, etype), n in events.items() if fid == file_id and n > 1]
        duplicates += len(repeated)
        if events[(file_id, "file.committed")] != 1:
            problems.append(f"{file_id}: {events[(file_id, 'file.committed')]} file.committed")
        keys = sorted(objects.get(file_id, []))
        if status == "rejected":
            if keys:
                problems.append(f"{file_id}: rejected but in the bucket: {keys}")
            continue
        object_key, thumbnails, thumbnail_error = stored[file_id]
        data = s3.get_object(Bucket=cluster.bucket, Key=object_key)["Body"].read()
        if hashlib.sha256(data).hexdigest() != upload.sha256:
            problems.append(f"{file_id}: stored bytes differ from the upload")
        expected_keys = {object_key, *(t["key"] for t in thumbnails)}
        if set(keys) != expected_keys:
            duplicates += max(0, len(keys) - len(expected_keys))
            problems.append(f"{file_id}: objects {keys} != expected {sorted(expected_keys)}")
        if upload.image and (len(thumbnails) != 2 or thumbnail_error):
            problems.append(f"{file_id}: thumbnails {thumbnails} error {thumbnail_error}")

    depths = queue_depths(cluster)
    topology = Topology(prefix=cluster.prefix)
    expected = expected_dead_letters or {}
    for queue in (topology.queue(FALLBACK), topology.retry_queue(FALLBACK)):
        if depths[queue]:
            problems.append(f"{queue} still holds {depths[queue]} messages")
    leftover = cluster.sql("SELECT count(*) FROM fallback_blobs")[0][0]
    if leftover:
        problems.append(f"fallback_blobs still holds {leftover} rows")
    for stage in STAGES:
        for queue in (topology.queue(stage), topology.retry_queue(stage)):
            if depths[queue]:
                problems.append(f"{queue} still holds {depths[queue]} messages")
        dead = depths[topology.dead_letter_queue(stage)]
        if dead != expected.get(stage, 0):
            problems.append(
                f"{topology.dead_letter_queue(stage)} holds {dead}, expected "
                f"{expected.get(stage, 0)}"
            )
    if cluster.spool_dir.exists():
        # Tombstones of 503 answers (``.abandoned``, empty) are expected; nothing else is, and
        # the gateway's outbox must have been drained.
        leftovers = [
            p.name
            for p in cluster.spool_dir.iterdir()
            if p.is_file() and not p.name.endswith(".abandoned")
        ]
        waiting = sorted(p.name for p in cluster.spool_dir.glob(".outbox/*.json"))
        if leftovers:
            problems.append(f"spool not empty: {leftovers[:5]} ({len(leftovers)})")
        if waiting:
            problems.append(f"outbox not drained: {waiting[:5]} ({len(waiting)})")

    # Uploads refused with 503 whose event reached the broker anyway must end rejected as
    # abandoned, with nothing stored: never half-accepted.
    others = cluster.sql(
        "SELECT file_id::text, status, coalesce(status_reason, '') FROM files"
        " WHERE NOT (file_id = ANY(%s::uuid[]))",
        ids,
    )
    for file_id, status, reason in others:
        if status != "rejected" or not reason.startswith("abandoned"):
            problems.append(f"{file_id} was never accepted but is {status}: {reason}")
        if objects.get(file_id):
            problems.append(f"{file_id} was never accepted but is in the bucket")

    statuses = Counter(files.get(fid) for fid in ids)
    report = Report(
        accepted=len(ids),
        refused=len(results.refused),
        available=statuses["available"],
        rejected=statuses["rejected"],
        dead_lettered=sum(depths[topology.dead_letter_queue(s)] for s in STAGES),
        duplicates=duplicates,
    )
    REPORTS.append(report.line(name))
    assert not problems, "\n".join(problems[:30])
    return report
