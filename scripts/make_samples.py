"""Regenerate the sample files in ``samples/`` from scikit-image's bundled photographs.

Usage::

    python scripts/make_samples.py [--out samples]

Every sample is a real photograph (public domain or CC0, see ``samples/LICENSES.md``, which this
script also writes) encoded the way uploads arrive in practice: a camera JPEG stored sideways with
an EXIF Orientation tag and GPS position, a PNG with transparency, an animated GIF, a WebP, a
HEIC whose embedded preview is *not* a scaled copy of its primary image, a PDF, and a PDF that
carries the EICAR antivirus test string.

The script is deterministic: with the same Pillow, libwebp, libheif/x265 and scikit-image
versions it writes the same bytes on every run, and a file whose bytes did not change is left
untouched. It needs the ``samples`` extra (scikit-image); the committed samples do not.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageDraw, ImageFont, ImageSequence
from pillow_heif.constants import HeifCompressionFormat
from pillow_heif.misc import MODE_INFO, CtxEncode, _add_planes
from skimage import data as skdata

#: The 68-byte EICAR antivirus test string (https://www.eicar.org/download-anti-malware-testfile/).
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

#: A fixed timestamp for every date written into a sample, so the bytes do not depend on the clock.
FIXED_TIME = time.struct_time((2024, 5, 17, 10, 30, 0, 4, 138, 0))

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Source:
    """A scikit-image photograph and the licence its docstring states."""

    name: str  # skimage.data function
    title: str
    author: str
    licence: str
    origin: str


SOURCES: dict[str, Source] = {
    "coffee": Source(
        "coffee",
        "Coffee cup (courtesy of Pikolo Espresso Bar)",
        "Rachel Michetti",
        "CC0 1.0 (dedicated by the photographer)",
        "skimage.data.coffee",
    ),
    "chelsea": Source(
        "chelsea",
        "Chelsea the cat",
        "Stefan van der Walt",
        "CC0 1.0 (dedicated by the photographer)",
        "skimage.data.chelsea",
    ),
    "rocket": Source(
        "rocket",
        "Launch of DSCOVR on Falcon 9, Cape Canaveral, 2015",
        "SpaceX",
        "Public domain (released by SpaceX, 2015)",
        "skimage.data.rocket; https://www.flickr.com/photos/spacexphotos/16511594820/",
    ),
    "hubble_deep_field": Source(
        "hubble_deep_field",
        "Hubble eXtreme Deep Field (2012)",
        "NASA",
        "Public domain (NASA media guidelines)",
        "skimage.data.hubble_deep_field; "
        "http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/",
    ),
    "retina": Source(
        "retina",
        "Fundus photograph of a normal left eye",
        "Mikael Häggström",
        "CC0 1.0 (Wikimedia Commons)",
        "skimage.data.retina; "
        "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg",
    ),
    "astronaut": Source(
        "astronaut",
        "Astronaut Eileen Collins",
        "NASA",
        "Public domain (NASA Great Images, no known copyright restrictions)",
        "skimage.data.astronaut; https://flic.kr/p/r9qvLn",
    ),
}


def photo(name: str) -> Image.Image:
    """Load a scikit-image photograph as an RGB Pillow image."""
    array = getattr(skdata, name)()
    return Image.fromarray(np.ascontiguousarray(array[..., :3])).convert("RGB")


# --- one builder per sample; each returns the file's bytes ------------------------------------


def make_photo_rotated_jpg() -> bytes:
    """Coffee, upright 600x400, stored as 400x600 with EXIF Orientation 6 and a fake GPS IFD.

    Orientation 6 means "rotate 90° clockwise to display", so the stored pixels are the upright
    photo rotated 90° counter-clockwise (``ImageOps.exif_transpose`` gives the upright photo back).
    """
    upright = photo("coffee")
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    exif[0x010F] = "Sluice Samples"  # Make
    exif[0x0110] = "Sample Camera 1"  # Model
    exif[0x0132] = "2024:05:17 10:30:00"  # DateTime
    exif[0x8825] = {  # GPSInfo: a made-up position near Lyon
        0: b"\x02\x03\x00\x00",  # GPSVersionID
        1: "N",  # GPSLatitudeRef
        2: (45.0, 45.0, 36.0),  # GPSLatitude
        3: "E",  # GPSLongitudeRef
        4: (4.0, 50.0, 24.0),  # GPSLongitude
    }
    xmp = (
        b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" exif:GPSLatitude="45,45.6N" '
        b'exif:GPSLongitude="4,50.4E" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
        b'<?xpacket end="w"?>'
    )
    out = io.BytesIO()
    stored.save(out, "JPEG", quality=90, exif=exif.tobytes(), xmp=xmp)
    return out.getvalue()


def make_photo_png() -> bytes:
    """Chelsea the cat, 451x300 RGBA, transparent rounded corners (an avatar-style cut-out)."""
    image = photo("chelsea")
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, image.width - 1, image.height - 1), 48, 255)
    image.putalpha(mask)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def make_animation_gif() -> bytes:
    """The rocket launch, 384x256, three frames zooming in (first frame = the whole photo)."""
    base = photo("rocket")
    size = (384, 256)
    frames = []
    for zoom in (1.0, 1.5, 2.25):
        w, h = base.width / zoom, base.height / zoom
        left, top = (base.width - w) / 2, (base.height - h) / 2
        frame = base.resize(size, Image.Resampling.LANCZOS, box=(left, top, left + w, top + h))
        frames.append(frame.quantize(256, method=Image.Quantize.MEDIANCUT))
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=600, loop=0)
    return out.getvalue()


def make_photo_webp() -> bytes:
    """The Hubble eXtreme Deep Field, 1000x872, lossy WebP."""
    out = io.BytesIO()
    photo("hubble_deep_field").save(out, "WEBP", quality=85, method=6)
    return out.getvalue()


def make_photo_heic() -> bytes:
    """A 1411x1411 fundus photograph in a 512 px grid, with a 512 px preview of a *different* photo.

    Real HEIC files carry a small preview image next to the primary image. Here the preview shows
    the astronaut, not the retina, so a test can tell which one a decoder used. pillow-heif's
    public API encodes a preview from the primary image's own pixels; only its grid encoder takes
    the preview's pixels separately, so this uses that (pillow-heif 1.x internals, generation only).
    """
    main = photo("retina")
    preview = photo("astronaut").resize(main.size, Image.Resampling.LANCZOS)
    ctx = CtxEncode(HeifCompressionFormat.HEVC, quality=55)
    ctx.add_image(main.size, "RGB", main.tobytes(), primary=True, tile_size=512)
    grid = ctx._grid_images[-1]
    pixels = ctx.ctx_write.create_image(preview.size, MODE_INFO["RGB"][2], MODE_INFO["RGB"][3], 0)
    _add_planes(pixels, preview.size, "RGB", preview.tobytes(), 0, 8)
    grid.encode_thumbnail(ctx.ctx_write, 512, 1, pixels)
    out = io.BytesIO()
    ctx.save(out)
    return out.getvalue()


def make_document_pdf() -> bytes:
    """A one-page A5 document at 100 dpi: a title, the astronaut portrait and its credit."""
    page = Image.new("RGB", (583, 827), "white")
    draw = ImageDraw.Draw(page)
    draw.text((40, 40), "Sluice sample document", fill="black", font=ImageFont.load_default(28))
    portrait = photo("astronaut").resize((400, 400), Image.Resampling.LANCZOS)
    page.paste(portrait, (91, 110))
    caption = "Eileen Collins, NASA. Public domain."
    draw.text((91, 525), caption, fill="black", font=ImageFont.load_default(16))
    out = io.BytesIO()
    page.save(
        out,
        "PDF",
        resolution=100.0,
        title="Sluice sample document",
        producer="scripts/make_samples.py",
        creationDate=FIXED_TIME,
        modDate=FIXED_TIME,
    )
    return out.getvalue()


def make_eicar_pdf() -> bytes:
    """A small valid PDF whose attached file is exactly the 68-byte EICAR test string.

    The bytes start with ``%PDF-1.4`` so the gateway's type policy accepts the file; the EICAR
    string appears once, raw, as the whole body of an ``/EmbeddedFile`` stream. Checked with
    ClamAV 1.4 ``clamscan``: flagged by an ``.ndb`` signature with offset ``*`` (anywhere in the
    file), by one with offset ``0`` (ClamAV scans each extracted PDF stream on its own), and by an
    ``.hdb`` hash signature of the 68-byte file like the official ``Win.Test.EICAR_HDB-1``.
    """
    text = b"BT /F1 14 Tf 72 760 Td (This PDF carries the EICAR antivirus test file.) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Names << /EmbeddedFiles << /Names [(eicar.com) 6 0 R]"
        b" >> >> >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Filespec /F (eicar.com) /EF << /F 7 0 R >> >>",
        # No end-of-line before "endstream" (allowed: /Length is exact): ClamAV 1.4's PDF parser
        # then extracts exactly the 68 bytes, which its EICAR hash signature also matches.
        b"<< /Type /EmbeddedFile /Length %d >>\nstream\n%sendstream" % (len(EICAR), EICAR),
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    assert out.count(EICAR) == 1
    return bytes(out)


@dataclass(frozen=True)
class Sample:
    filename: str
    build: Callable[[], bytes]
    sources: tuple[str, ...]


SAMPLES: tuple[Sample, ...] = (
    Sample("photo-rotated.jpg", make_photo_rotated_jpg, ("coffee",)),
    Sample("photo.png", make_photo_png, ("chelsea",)),
    Sample("animation.gif", make_animation_gif, ("rocket",)),
    Sample("photo.webp", make_photo_webp, ("hubble_deep_field",)),
    Sample("photo.heic", make_photo_heic, ("retina", "astronaut")),
    Sample("document.pdf", make_document_pdf, ("astronaut",)),
    Sample("eicar.pdf", make_eicar_pdf, ()),
)


def licences_markdown() -> str:
    """The text of ``samples/LICENSES.md``: source and licence of every sample file."""
    lines = [
        "# Sample files: sources and licences",
        "",
        "Generated by `scripts/make_samples.py` from the photographs bundled with scikit-image",
        "(`skimage.data`); each licence is the one stated in that function's docstring.",
        "",
        "| File | Photograph | Author | Licence | Source |",
        "|---|---|---|---|---|",
    ]
    for sample in SAMPLES:
        if not sample.sources:
            lines.append(
                f"| `{sample.filename}` | none (the EICAR test string in a hand-built PDF) | "
                "EICAR | free to distribute for testing | https://www.eicar.org/ |"
            )
            continue
        for name in sample.sources:
            src = SOURCES[name]
            role = ""
            if sample.filename == "photo.heic":
                role = " (primary image)" if name == "retina" else " (embedded preview)"
            lines.append(
                f"| `{sample.filename}` | {src.title}{role} | {src.author} | {src.licence} | "
                f"{src.origin} |"
            )
    return "\n".join(lines) + "\n"


def describe(name: str, payload: bytes) -> str:
    """One line for the console: size, SHA-256 prefix and, for images, dimensions and frames."""
    digest = hashlib.sha256(payload).hexdigest()[:12]
    detail = ""
    if not name.endswith((".pdf", ".md")):
        with Image.open(io.BytesIO(payload)) as image:
            detail = f" {image.format} {image.width}x{image.height} {image.mode}"
            frames = sum(1 for _ in ImageSequence.Iterator(image))
            detail += f" frames={frames}"
    return f"{len(payload):>8} B sha256={digest}{detail}"


def write(out_dir: Path, name: str, payload: bytes) -> None:
    """Write ``payload`` unless the file already holds exactly these bytes; print the outcome."""
    path = out_dir / name
    unchanged = path.exists() and path.read_bytes() == payload
    if not unchanged:
        path.write_bytes(payload)
    print(f"{'unchanged' if unchanged else 'wrote':>9} {path}  {describe(name, payload)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "samples",
        help="output directory (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    pillow_heif.register_heif_opener()
    for sample in SAMPLES:
        write(out_dir, sample.filename, sample.build())
    write(out_dir, "LICENSES.md", licences_markdown().encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
