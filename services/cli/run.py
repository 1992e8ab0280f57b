"""``sluice run``: every worker and the gateway in one process (development, quickstart)."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli._common import serve
from shared.settings import MirrorSettings, load
from shared.topology import MIRROR, WORKERS
from shared.transform_settings import OcrSettings, PdfTextSettings, VideoSettings


def run(
    no_gateway: Annotated[bool, typer.Option("--no-gateway", help="Consumers only.")] = False,
) -> None:
    """Run every worker and the gateway in one process (development, quickstart); the backup
    mirror too when SLUICE_MIRROR_ENABLED is set, and the transforms when
    SLUICE_PDFTEXT_ENABLED / SLUICE_OCR_ENABLED / SLUICE_VIDEO_ENABLED are."""
    optional = [
        (MIRROR, load(MirrorSettings).enabled),
        ("pdftext", load(PdfTextSettings).enabled),
        ("ocr", load(OcrSettings).enabled),
        ("video", load(VideoSettings).enabled),
    ]
    serve([*WORKERS, *(name for name, enabled in optional if enabled)], not no_gateway)
