"""Uploads into the S3 spool (``SLUICE_SPOOL_BACKEND=s3``): the bytes land in the quarantine
bucket and ``file.received`` names ``quarantine://<file_id>``; with S3 down an upload is
answered 503 ``storage_unavailable`` with ``Retry-After``, no event is published, nothing is
left in the quarantine bucket nor on disk, and ``/readyz`` says uploads are refused."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractQueue

from shared.settings import SpoolSettings
from tests.e2e.pipeline import free_port
from tests.integration.gateway.support import (
    Gateway,
    MakeSettings,
    Who,
    error_of,
    jpeg,
    next_event,
    running,
    spool_entries,
    upload,
)
from tests.localenv import FreshBucket

pytestmark = pytest.mark.integration

QUARANTINE = "sluice-test-gateway-quarantine"


def s3_spool(settings: Any, tmp_path: Path, **s3: Any) -> Any:
    changed = copy.copy(settings)
    changed.spool = SpoolSettings(dir=tmp_path, backend="s3", s3_bucket=QUARANTINE)
    if s3:
        changed.s3 = settings.s3.model_copy(update=s3)
    return changed


async def test_an_upload_lands_in_the_quarantine_bucket(
    gateway: Gateway,
    received: AbstractQueue,
    alice: Who,
    make_settings: MakeSettings,
    fresh_bucket: FreshBucket,
    raw_s3: Any,
    tmp_path: Path,
) -> None:
    fresh_bucket(QUARANTINE)
    await received.purge()
    data = jpeg(300_000)
    async with running(s3_spool(make_settings(tmp_path), tmp_path)) as gw:
        response = await upload(gw, alice[1], "photo.jpg", data, "image/jpeg")
    assert response.status_code == 202, response.text
    file_id = response.json()["file_id"]
    event = json.loads((await next_event(received)).body)
    assert event["source"] == f"quarantine://{file_id}"
    assert event["sha256"] == hashlib.sha256(data).hexdigest()
    stored = raw_s3.get_object(Bucket=QUARANTINE, Key=file_id)["Body"].read()
    assert stored == data
    assert spool_entries(tmp_path) == []


async def test_s3_down_is_503_with_retry_after_and_nothing_accepted(
    gateway: Gateway,
    received: AbstractQueue,
    alice: Who,
    make_settings: MakeSettings,
    tmp_path: Path,
    operator: Who,
) -> None:
    await received.purge()
    dead = s3_spool(make_settings(tmp_path), tmp_path, endpoint=f"http://127.0.0.1:{free_port()}")
    async with running(dead) as gw:
        response = await upload(gw, alice[1], "photo.jpg", jpeg(300_000), "image/jpeg")
        ready = await gw.client.get("/readyz", headers=operator[1])
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert error_of(response)[0] == "storage_unavailable"
    assert await received.get(no_ack=True, fail=False) is None
    assert spool_entries(tmp_path) == []
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["quarantine"] != "ok"
