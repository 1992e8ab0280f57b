"""A batch of uploads of mixed sizes and kinds, and the client that sends them."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import httpx
from PIL import Image

from tests.e2e.pipeline import ROOT

SAMPLES = ROOT / "samples"


@dataclass(frozen=True)
class Upload:
    """One file to send: its name, bytes, and what the pipeline must make of it."""

    name: str
    data: bytes
    expected: str  # "available" or "rejected"
    image: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@cache
def _payloads() -> list[Upload]:
    """Distinct payloads: JPEGs from 120 px to a 3000 px photo (~1-4 MB), PNG, WebP, GIF, PDF,
    HEIC, and the EICAR PDF."""
    photo = Image.open(SAMPLES / "photo-rotated.jpg")
    photo.load()
    exif = photo.info.get("exif", b"")
    payloads = []
    for side in (120, 300, 640, 1200):
        ratio = side / max(photo.size)
        scaled = photo.resize((round(photo.width * ratio), round(photo.height * ratio)))
        out = io.BytesIO()
        scaled.save(out, "JPEG", quality=85, exif=exif)
        payloads.append(Upload(f"photo-{side}.jpg", out.getvalue(), "available", True))
    big = photo.resize((3000, 2000))
    noise = Image.effect_noise((3000, 2000), 60).convert("RGB")
    big = Image.blend(big.convert("RGB"), noise, 0.3)
    out = io.BytesIO()
    big.save(out, "JPEG", quality=95)
    payloads.append(Upload("large.jpg", out.getvalue(), "available", True))
    for name in ("photo.png", "photo.webp", "animation.gif", "photo.heic"):
        payloads.append(Upload(name, (SAMPLES / name).read_bytes(), "available", True))
    payloads.append(
        Upload("document.pdf", (SAMPLES / "document.pdf").read_bytes(), "available", False)
    )
    payloads.append(Upload("eicar.pdf", (SAMPLES / "eicar.pdf").read_bytes(), "rejected", False))
    return payloads


def mixed_uploads(count: int, seed: int = 7) -> list[Upload]:
    """``count`` uploads drawn from the payloads (mostly small images; ~3 % EICAR, ~3 % large)."""
    payloads = _payloads()
    weights = [30, 25, 10, 5, 3, 6, 5, 4, 3, 6, 3]
    assert len(weights) == len(payloads)
    rng = random.Random(seed)
    return rng.choices(payloads, weights=weights, k=count)


@dataclass
class UploadResults:
    """What the gateway answered: accepted file ids, and every refusal with its status."""

    accepted: dict[str, Upload] = field(default_factory=dict)
    refused: list[tuple[Upload, int, str]] = field(default_factory=list)


async def upload_all(
    client: httpx.AsyncClient,
    uploads: list[Upload],
    concurrency: int = 8,
    signal: tuple[int, asyncio.Event] | None = None,
) -> UploadResults:
    """Send every upload (``concurrency`` at a time); a 202 is accepted, anything else refused.

    A connection error (the gateway restarting) counts as refused with status 0: the client was
    told nothing was accepted. ``signal`` is ``(count, event)``: the event is set once ``count``
    uploads are accepted, so a fault injected then lands mid-run on a fast machine as on a slow
    one, where a fixed delay could come after the last upload.
    """
    results = UploadResults()
    queue: asyncio.Queue[Upload] = asyncio.Queue()
    for upload in uploads:
        queue.put_nowait(upload)

    async def sender() -> None:
        while not queue.empty():
            upload = queue.get_nowait()
            try:
                answer = await client.post("/v1/files", files={"file": (upload.name, upload.data)})
            except httpx.HTTPError as exc:
                results.refused.append((upload, 0, repr(exc)))
                continue
            if answer.status_code == 202:
                results.accepted[answer.json()["file_id"]] = upload
                if signal is not None and len(results.accepted) >= signal[0]:
                    signal[1].set()
            else:
                results.refused.append((upload, answer.status_code, answer.text[:300]))

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return results


def write_payload_files(directory: Path) -> None:
    """Write the distinct payloads to ``directory`` (for looking at them by hand)."""
    directory.mkdir(parents=True, exist_ok=True)
    for upload in _payloads():
        (directory / upload.name).write_bytes(upload.data)
