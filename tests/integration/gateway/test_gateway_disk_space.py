"""The spool's free-space floor (``SLUICE_SPOOL_MIN_FREE_BYTES``): an upload that would leave
less free is answered 507 ``insufficient_storage`` with nothing left in the spool, counted in
``sluice_uploads_total``; with the floor back under the free space, uploads are taken again.

A real full disk (``ENOSPC``) is the fault test's (``tests/faults/test_spool_disk_full.py``)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY

from shared.adapters.spool import size_text
from shared.settings import SpoolSettings
from tests.integration.gateway.support import (
    Gateway,
    MakeSettings,
    Who,
    error_of,
    jpeg,
    running,
    spool_entries,
    tree,
    upload,
)

pytestmark = pytest.mark.integration

GiB = 1024**3


async def _metric(gw: Gateway, name: str, **labels: str) -> float:
    """A sample of this process's registry, where the in-process gateway counts (its
    ``/metrics`` is served on the metrics port by ``serve()``, not by the app)."""
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


async def test_a_floor_above_the_free_space_is_507_and_leaves_nothing(
    pool: asyncpg.Pool, alice: Who, make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    free = shutil.disk_usage(tmp_path).free
    floor = free + 64 * GiB
    floored = copy.copy(settings)
    floored.spool = SpoolSettings(dir=tmp_path, min_free_bytes=floor)
    async with running(floored) as gw:
        refused_before = await _metric(gw, "sluice_uploads_total", outcome="insufficient_storage")

        response = await upload(gw, alice[1], "photo.jpg", jpeg(200_000), "image/jpeg")

        assert response.status_code == 507, response.text
        code, message = error_of(response)
        assert code == "insufficient_storage"
        assert message.startswith("the spool has ")
        length = int(response.request.headers["content-length"])
        assert f"GiB free; this upload needs {size_text(length)} and " in message
        assert message.endswith("must stay free; try again later")
        assert str(tmp_path) not in message
        assert int(response.headers["retry-after"]) > 0
        assert tree(tmp_path) == set()  # no file, no .partial, no tombstone
        refused_after = await _metric(gw, "sluice_uploads_total", outcome="insufficient_storage")
        assert refused_after == refused_before + 1
        seen_free = await _metric(gw, "sluice_spool_free_bytes")
        assert abs(seen_free - free) < GiB

    async with running(settings) as gw:  # the default floor, far under the free space here
        response = await upload(gw, alice[1], "photo.jpg", jpeg(200_000), "image/jpeg")

        assert response.status_code == 202, response.text
        assert spool_entries(tmp_path) == [response.json()["file_id"]]


async def test_the_openapi_document_lists_the_507(gw: Gateway) -> None:
    spec = (await gw.client.get("/openapi.json")).json()
    answer = spec["paths"]["/v1/files"]["post"]["responses"]["507"]
    assert "free-space floor" in answer["description"]
