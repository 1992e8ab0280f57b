"""Secrets never reach the logs, and every log line of a handled message carries its trace id.

A real ``sluice run`` (every worker and the gateway, JSON logs at debug level) on its own
names (prefix ``t-obs-secrets``, database ``sluice_t-obs-secrets``, bucket
``sluice-t-obs-secrets``) is configured with secrets the test knows: the S3 secret key
SeaweedFS enforces, a PostgreSQL URL carrying a password (trust authentication ignores it),
API keys. It then works and fails: uploads, an infected file, presigned URLs handed out, an
API key pasted into a URL path, a wrong key, events that dead-letter. Two workers that cannot
start (database and broker unreachable, passwords in their URLs) add their error output.
Every captured line is searched for every secret and for any ``X-Amz-Signature=`` value.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import aio_pika
import pytest

from shared import devservices
from shared.adapters.broker import event_message
from shared.events import FileReceived, utcnow
from shared.topology import Topology
from tests.e2e.pipeline import ROOT, Pipeline, queue_depths, start_pipeline

pytestmark = pytest.mark.e2e

NAME = "t-obs-secrets"
DB_PASSWORD = f"db-pw-{uuid.uuid4().hex}"
AMQP_PASSWORD = f"amqp-pw-{uuid.uuid4().hex}"
SAMPLES = ROOT / "samples"
SIGNATURE = re.compile(r"X-Amz-Signature=([0-9a-f]{16,})")


@pytest.fixture(scope="module")
def pipeline(services: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    url = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:5432/sluice_{NAME}"
    yield from start_pipeline(
        tmp_path_factory.mktemp("secrets"),
        NAME,
        {"SLUICE_DATABASE_URL": url, "SLUICE_LOG_LEVEL": "debug"},
    )


async def dead_letters(pipeline: Pipeline) -> None:
    """An event whose ``s3://`` source does not exist, and a body that is not an event."""
    now = utcnow()
    missing = FileReceived(
        event_id=uuid.uuid4(),
        occurred_at=now,
        file_id=uuid.uuid4(),
        owner="alice",
        received_at=now,
        source=f"s3://sluice-{NAME}-upstream/gone/{uuid.uuid4()}.png",
        size_bytes=10,
        sha256="1" * 64,
        content_type="image/png",
        original_name="gone.png",
    )
    garbage = aio_pika.Message(b"\x00 not json", message_id=str(uuid.uuid4()))
    await pipeline.publish_to_queue("scan", event_message(missing), garbage)


def failed_start(pipeline: Pipeline, **env: str) -> str:
    """Output of a ``sluice worker commit`` that cannot reach what ``env`` points at."""
    done = subprocess.run(
        [sys.executable, "-m", "services", "worker", "commit"],
        env={**pipeline.env, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0, "the worker should not have started"
    return done.stdout + done.stderr


def work(pipeline: Pipeline) -> tuple[list[str], list[str]]:
    """Make the pipeline work and fail; (file ids followed to the end, signatures seen)."""
    keys = list(pipeline.keys.values())
    photo = (SAMPLES / "photo.png").read_bytes()
    eicar = (SAMPLES / "eicar.pdf").read_bytes()
    file_ids, signatures = [], []
    with pipeline.client() as client:
        for name, data in (("photo.png", photo), ("eicar.pdf", eicar)):
            answer = client.post("/v1/files", files={"file": (name, data)})
            assert answer.status_code == 202, answer.text
            file_ids.append(answer.json()["file_id"])
        for file_id in file_ids:
            pipeline.wait_final(file_id)
        for path in (f"/v1/files/{file_ids[0]}", "/v1/files"):
            answer = client.get(path)
            assert answer.status_code == 200
            signatures += SIGNATURE.findall(answer.text)
        assert client.get(f"/v1/files/{keys[0]}").status_code in (404, 422)
    with pipeline.client(None) as anonymous:
        wrong = "slk_" + "W" * 43
        refused = anonymous.get("/v1/files", headers={"Authorization": f"Bearer {wrong}"})
        assert refused.status_code == 401
        keys.append(wrong)
    asyncio.run(dead_letters(pipeline))
    return file_ids, signatures


def wait_dead_lettered(pipeline: Pipeline, count: int) -> None:
    dlq = Topology(prefix=NAME).dead_letter_queue("scan")
    for _ in range(300):
        if queue_depths(pipeline)[dlq] >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{dlq} never held {count} messages")


def test_no_secret_in_any_log_line_and_trace_ids_follow_a_file(pipeline: Pipeline) -> None:
    file_ids, signatures = work(pipeline)
    assert signatures, "the status answer should have handed out presigned URLs"
    wait_dead_lettered(pipeline, 2)
    starts = failed_start(
        pipeline,
        SLUICE_DATABASE_URL=f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:1/nowhere",
    ) + failed_start(
        pipeline,
        SLUICE_AMQP_URL=f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:1/",
    )
    logs = pipeline.log_path.read_text()
    secrets = {
        "S3 secret key": devservices.DevServicesConfig.from_env().s3_secret_key,
        "database password": DB_PASSWORD,
        "AMQP password": AMQP_PASSWORD,
        **{f"API key {key[:8]}": key for key in [*pipeline.keys.values(), "slk_" + "W" * 43]},
        **{f"signature {s[:8]}": s for s in signatures},
    }
    for where, text in (("pipeline log", logs), ("failed starts", starts)):
        lines = text.splitlines()
        assert lines, f"no {where} captured"
        for label, secret in secrets.items():
            leaks = [line for line in lines if secret in line]
            assert not leaks, f"{label} in the {where}: {leaks[:3]}"
        shown = [line for line in lines if SIGNATURE.search(line)]
        assert not shown, f"a presigned URL signature in the {where}: {shown[:3]}"
    assert "cannot connect to PostgreSQL" in starts and "RabbitMQ" in starts, starts[-2000:]

    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(r.get("outcome") == "dead-lettered" for r in records), "no failure was logged"
    photo = [r for r in records if r.get("file_id") == file_ids[0]]
    handled = [r for r in photo if r.get("event") == "message handled"]
    assert {r["stage"] for r in handled} == {"scan", "store", "thumbnail", "commit"}
    gateway = [r for r in photo if r.get("event") == "gateway.file_received"]
    trace_ids = {r.get("trace_id") for r in handled + gateway}
    assert len(trace_ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", str(trace_ids.pop())), photo
