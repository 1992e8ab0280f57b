"""Bad images made in code from ``samples/``: truncated, corrupt, lying about their size.

Every generator is deterministic (no randomness, no clock), so a failing case can be rebuilt
byte for byte. The byte surgery follows the format specs: JPEG markers (ITU T.81 B.1), EXIF's
TIFF IFDs (TIFF 6.0 section 2), PNG chunks with their CRC-32 (RFC 2083), GIF blocks (GIF89a),
RIFF/WebP chunks (RFC 9649) and ISO BMFF boxes (ISO/IEC 14496-12, ``ispe`` from 23008-12).

:func:`bad_images` is the corpus the fault tests upload; :func:`corrupt_png_idat` and
:func:`corrupt_jpeg_huffman_table` make images whose decoder fails deep inside the pixel data.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


#: Outcomes of an upload: thumbnails made, refused by the gateway, or one of the reasons the
#: thumbnail stage gives in ``thumbnail_error`` (its prefix, see ``ThumbnailError``).
THUMBNAILS = "thumbnails"
REFUSED = "refused at gateway"
TRUNCATED = "truncated image"
CORRUPT = "corrupt image"
UNIDENTIFIED = "cannot identify image"
BOMB = "decompression bomb"
OUTCOMES = (THUMBNAILS, REFUSED, TRUNCATED, CORRUPT, UNIDENTIFIED, BOMB)


@dataclass(frozen=True)
class BadImage:
    """One case: the name it is uploaded under, its bytes, what is wrong with it, and the
    outcomes that are right for it (any of ``expect``).

    ``upright`` is the (width, height) a decoder that accepts the bytes must see, when known;
    thumbnails are then checked against it.
    """

    name: str
    data: bytes
    what: str
    expect: frozenset[str]
    upright: tuple[int, int] | None = None


def sample(name: str) -> bytes:
    """The bytes of ``samples/<name>``."""
    return (SAMPLES / name).read_bytes()


# --- JPEG ---------------------------------------------------------------------------------------


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment from after SOI up to and including SOS."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"no marker at byte {pos}")
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        yield marker, pos, pos + 2 + length
        if marker == 0xDA:  # SOS: entropy-coded data follows
            return
        pos += 2 + length


def jpeg_scan_start(data: bytes) -> int:
    """Offset of the first byte of entropy-coded data (just after the SOS header)."""
    for marker, _, end in jpeg_segments(data):
        if marker == 0xDA:
            return end
    raise ValueError("no SOS segment")


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with the frame header (SOFn) claiming ``width`` x ``height`` (max 65535)."""
    for marker, start, _ in jpeg_segments(data):
        if marker in _JPEG_SOF:
            out = bytearray(data)
            struct.pack_into(">HH", out, start + 5, height, width)  # after length and precision
            return bytes(out)
    raise ValueError("no SOF segment")


def jpeg_with_app1(data: bytes, payload: bytes) -> bytes:
    """``data`` with its EXIF APP1 segment(s) replaced by one APP1 holding ``payload``."""
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("APP1 payload too large")
    kept = bytearray(b"\xff\xd8")
    body_start = 2
    inserted = False
    for marker, start, end in jpeg_segments(data):
        if marker == 0xE1 and data[start + 4 : start + 10] == b"Exif\x00\x00":
            segment = b""
        else:
            segment = data[start:end]
        if not inserted and marker not in (0xE0, 0xE1):  # after JFIF, as cameras write it
            kept += b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
            inserted = True
        kept += segment
        body_start = end
    return bytes(kept) + data[body_start:]


def tiff_ifd(entries: list[tuple[int, int, int, bytes]], count: int | None = None) -> bytes:
    """A big-endian IFD: ``count`` (default: the number of entries), the entries, next = 0.

    Each entry is (tag, type, count, 4-byte value or offset).
    """
    out = struct.pack(">H", len(entries) if count is None else count)
    for tag, kind, n, value in entries:
        out += struct.pack(">HHI", tag, kind, n) + value.ljust(4, b"\x00")[:4]
    return out + struct.pack(">I", 0)


def exif_payload(ifd0: bytes, ifd0_offset: int = 8) -> bytes:
    """An APP1 EXIF payload: ``Exif\\0\\0``, a big-endian TIFF header pointing at ``ifd0``."""
    return b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", ifd0_offset) + ifd0


def exif_orientation(value: int) -> bytes:
    """An EXIF payload whose IFD0 holds only Orientation (0x0112, SHORT) = ``value``."""
    return exif_payload(tiff_ifd([(0x0112, 3, 1, struct.pack(">H", value))]))


def _jpeg_segment(marker: int, body: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body


def jpeg_scan_bomb(width: int, height: int, scans: int) -> bytes:
    """A greyscale progressive JPEG of ``scans`` scans, each a few bytes, each a full pass.

    Every scan is an AC first scan (Ss=1, Se=63) whose entropy-coded data is nothing but
    end-of-band runs (EOB14, 32767 blocks each) over all the blocks: tiny in the file, yet the
    decoder visits every block of the image once per scan. Repeating a first scan is a "bogus
    progression" that libjpeg only warns about, so nothing stops it. The same shape as the
    progressive-JPEG exploit libjpeg-turbo's ``TJPARAM_SCANLIMIT`` guards against.
    """
    dqt = _jpeg_segment(0xDB, b"\x00" + b"\x01" * 64)
    sof2 = _jpeg_segment(0xC2, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    one_code = b"\x01" + b"\x00" * 15  # one code of length 1
    dht = _jpeg_segment(0xC4, b"\x00" + one_code + b"\x00" + b"\x10" + one_code + b"\xe0")
    blocks = -(-width // 8) * -(-height // 8)
    bits = ("0" + format(32767 - 16384, "014b")) * -(-blocks // 32767)  # EOB14, run 32767
    bits += "1" * (-len(bits) % 8)
    entropy = int(bits, 2).to_bytes(len(bits) // 8, "big").replace(b"\xff", b"\xff\x00")
    sos = _jpeg_segment(0xDA, b"\x01\x01\x00\x01\x3f\x00")
    return b"\xff\xd8" + dqt + sof2 + dht + (sos + entropy) * scans + b"\xff\xd9"


def corrupt_jpeg_scan(data: bytes) -> bytes:
    """``data`` with 512 bytes of garbage (no 0xFF, so no marker) inside its entropy-coded data.

    The headers stay intact; the Huffman decoder reads nonsense, which libjpeg reports as a
    warning ("Corrupt JPEG data") and decodes anyway, into wrong pixels.
    """
    start = jpeg_scan_start(data)
    middle = start + (len(data) - start) // 3
    out = bytearray(data)
    out[middle : middle + 512] = bytes((i * 37) & 0x7F for i in range(512))
    return bytes(out)


def corrupt_jpeg_huffman_table(data: bytes) -> bytes:
    """``data`` whose first Huffman table claims 255 codes of every length (an impossible tree).

    Pillow parses the markers it needs and opens the file; libjpeg reads the table when the
    pixels are decoded, and fails there.
    """
    for marker, start, _ in jpeg_segments(data):
        if marker == 0xC4:
            out = bytearray(data)
            out[start + 5 : start + 21] = b"\xff" * 16  # after length and Tc/Th: 16 counts
            return bytes(out)
    raise ValueError("no DHT segment")


# --- PNG ----------------------------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with a correct CRC-32."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk of a PNG."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    chunks, pos = [], len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_build(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG from (type, body) chunks, every CRC recomputed."""
    return _PNG_SIGNATURE + b"".join(png_chunk(kind, body) for kind, body in chunks)


def png_ihdr(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """An IHDR body: deflate, adaptive filtering, no interlace."""
    return struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)


def _zlib_of_repeats(unit: bytes, times: int) -> bytes:
    """The zlib stream (RFC 1950) of ``unit * times``, deflating ``unit`` only once.

    A full flush empties the compressor's window and byte-aligns its output, so every copy of
    ``unit`` after one deflates to the same bytes: the stream is those bytes ``times`` over,
    then the final block and the Adler-32 of the whole.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(unit) + compressor.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(times):
        adler = zlib.adler32(unit, adler)
    return b"\x78\xda" + piece * times + compressor.flush() + struct.pack(">I", adler)


def _rows_per_unit(row_bytes: int, height: int) -> int:
    """The largest divisor of ``height`` whose rows fit in about 4 MiB."""
    most = max(1, (4 << 20) // row_bytes)
    return next(n for n in range(min(most, height), 0, -1) if height % n == 0)


def png_flat(width: int, height: int, pixel: bytes = b"\x00") -> bytes:
    """A PNG of ``width`` x ``height`` pixels all equal to ``pixel`` (1 byte: grey, 3: RGB).

    Flat rows deflate about 1000:1: 30000 x 30000 grey (900 MB of pixels) is under 1 MB on
    disk, which is what a decompression bomb is. Built in well under a second.
    """
    colour_type = {1: 0, 3: 2}[len(pixel)]
    row = b"\x00" + pixel * width  # filter type 0 (None), then the samples
    rows = _rows_per_unit(len(row), height)
    idat = _zlib_of_repeats(row * rows, height // rows)
    ihdr = png_ihdr(width, height, colour_type=colour_type)
    return png_build([(b"IHDR", ihdr), (b"IDAT", idat), (b"IEND", b"")])


def png_with_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """``data`` with one more chunk right after IHDR."""
    chunks = png_chunks(data)
    return png_build([chunks[0], (kind, body), *chunks[1:]])


def corrupt_png_idat(data: bytes) -> bytes:
    """``data`` with garbage written into the middle of its zlib stream, CRCs made valid again.

    The chunk structure stays intact, so the file opens; the inflater fails while the pixels
    are being decoded (an invalid deflate block deep inside the image).
    """
    chunks = png_chunks(data)
    stream = bytearray(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    middle = len(stream) // 2
    stream[middle : middle + 64] = b"\xff" * 64  # a run of 1 bits: invalid block / distance
    first_idat = next(i for i, (kind, _) in enumerate(chunks) if kind == b"IDAT")
    rest = [(k, b) for k, b in chunks if k != b"IDAT"]
    rest.insert(first_idat, (b"IDAT", bytes(stream)))
    return png_build(rest)


# --- GIF ----------------------------------------------------------------------------------------


def _gif_frame(left: int, top: int, width: int, height: int, delay_cs: int = 1) -> bytes:
    """A graphic control extension and an image whose LZW data is clear, index 0, end."""
    gce = b"\x21\xf9\x04\x00" + struct.pack("<H", delay_cs) + b"\x00\x00"
    descriptor = b"\x2c" + struct.pack("<HHHH", left, top, width, height) + b"\x00"
    # LZW minimum code size 2: clear (4), index 0, end of information (5), 3-bit codes.
    lzw = b"\x02\x02\x44\x01\x00"
    return gce + descriptor + lzw


def gif_build(width: int, height: int, frames: list[bytes]) -> bytes:
    """A GIF89a with a 2-colour global palette, looping, holding ``frames``."""
    header = b"GIF89a" + struct.pack("<HH", width, height) + b"\x80\x00\x00"
    palette = b"\x00\x00\x00\xff\xff\xff"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    return header + palette + loop + b"".join(frames) + b"\x3b"


def gif_bomb(width: int, height: int) -> bytes:
    """A GIF whose screen and single frame claim ``width`` x ``height`` but hold one code."""
    return gif_build(width, height, [_gif_frame(0, 0, width, height)])


def gif_frame_outside_screen(width: int, height: int, screen_px: int = 16) -> bytes:
    """A GIF of a ``screen_px`` square screen whose first frame is ``width`` x ``height``."""
    return gif_build(screen_px, screen_px, [_gif_frame(0, 0, width, height)])


def gif_many_frames(count: int, size_px: int = 16) -> bytes:
    """A ``size_px`` square GIF of ``count`` 1x1 frames walking across it."""
    frames = [
        _gif_frame(i % size_px, (i // size_px) % size_px, 1, 1, delay_cs=2) for i in range(count)
    ]
    return gif_build(size_px, size_px, frames)


# --- WebP ---------------------------------------------------------------------------------------


def webp_with_canvas(data: bytes, width: int, height: int) -> bytes:
    """A simple (VP8) WebP turned extended: a VP8X chunk claiming a ``width`` x ``height`` canvas.

    The VP8 bitstream inside still holds the original picture; only the canvas lies.
    """
    if data[:4] != b"RIFF" or data[8:16] != b"WEBPVP8 ":
        raise ValueError("not a simple lossy WebP")
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + data[12:]
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_with_frame_size(data: bytes, width: int, height: int) -> bytes:
    """A simple WebP whose VP8 key-frame header claims ``width`` x ``height`` (14 bits each)."""
    if data[:4] != b"RIFF" or data[8:16] != b"WEBPVP8 " or data[23:26] != b"\x9d\x01\x2a":
        raise ValueError("not a simple lossy WebP")
    out = bytearray(data)
    struct.pack_into("<HH", out, 26, width & 0x3FFF, height & 0x3FFF)
    return bytes(out)


# --- HEIF ---------------------------------------------------------------------------------------


def heif_ispe_offsets(data: bytes) -> list[tuple[int, int, int]]:
    """(offset of the width field, width, height) of every ``ispe`` box in ``data``.

    ``ispe`` (ImageSpatialExtentsProperty) is a FullBox: size, type, version/flags, width,
    height, all 32-bit big-endian. Found by type after a plausible size field.
    """
    found = []
    pos = data.find(b"ispe")
    while pos >= 4:
        (size,) = struct.unpack_from(">I", data, pos - 4)
        if size == 20:
            width, height = struct.unpack_from(">II", data, pos + 8)
            found.append((pos + 8, width, height))
        pos = data.find(b"ispe", pos + 4)
    return found


def heif_with_ispe(data: bytes, width: int, height: int) -> bytes:
    """``data`` with the primary image's ``ispe`` (the largest one) claiming another size."""
    offsets = heif_ispe_offsets(data)
    if not offsets:
        raise ValueError("no ispe box")
    offset, _, _ = max(offsets, key=lambda item: item[1] * item[2])
    out = bytearray(data)
    struct.pack_into(">II", out, offset, width, height)
    return bytes(out)


# --- the corpus ---------------------------------------------------------------------------------


def bad_images() -> list[BadImage]:
    """The corpus: every case built from ``samples/``, in a fixed order."""
    jpeg = sample("photo-rotated.jpg")  # 400x600 stored, EXIF Orientation 6: 600x400 upright
    png = sample("photo.png")  # 451x300 RGBA
    webp = sample("photo.webp")  # 1000x872, simple lossy
    heic = sample("photo.heic")  # 1411x1411 grid of 3x3 tiles, a 512x512 preview
    scan = jpeg_scan_start(jpeg)

    def case(
        name: str,
        data: bytes,
        what: str,
        *expect: str,
        upright: tuple[int, int] | None = None,
    ) -> BadImage:
        assert set(expect) <= set(OUTCOMES), expect
        return BadImage(name, data, what, frozenset(expect), upright)

    return [
        # Truncated: the decoder runs out of bytes.
        case("cut-header.jpg", jpeg[: scan - 40], "JPEG cut inside its Huffman tables", TRUNCATED),
        case("cut-scan-start.jpg", jpeg[: scan + 64], "JPEG cut 64 bytes into its scan", TRUNCATED),
        case("cut-half.jpg", jpeg[: len(jpeg) // 2], "JPEG cut at half", TRUNCATED),
        case("cut-no-eoi.jpg", jpeg[:-2], "JPEG without its EOI marker", TRUNCATED),
        case("cut-ihdr.png", png[:30], "PNG cut inside IHDR", UNIDENTIFIED, REFUSED),
        case("cut-idat.png", png[: len(png) // 2], "PNG cut in the middle of IDAT", TRUNCATED),
        # Every pixel is there; only the IEND chunk is missing.
        case("cut-no-iend.png", png[:-12], "PNG without IEND", THUMBNAILS, upright=(451, 300)),
        # Corrupt inside the pixel data.
        case("corrupt-idat.png", corrupt_png_idat(png), "PNG with a corrupt zlib stream", CORRUPT),
        case(
            "corrupt-scan.jpg",
            corrupt_jpeg_scan(jpeg),
            "JPEG with garbage Huffman-coded data (libjpeg warns and decodes garbage)",
            THUMBNAILS,
            CORRUPT,
            upright=(600, 400),
        ),
        case(
            "corrupt-dht.jpg",
            corrupt_jpeg_huffman_table(jpeg),
            "JPEG with an impossible Huffman table",
            CORRUPT,
        ),
        # Corrupt EXIF must not cost the thumbnail. (Without a usable EXIF Orientation Pillow may
        # fall back to the XMP one, so the upright size is not fixed.)
        case(
            "exif-garbage.jpg",
            jpeg_with_app1(jpeg, b"Exif\x00\x00" + bytes(range(256)) * 8),
            "JPEG whose APP1 EXIF is garbage",
            THUMBNAILS,
        ),
        case(
            "exif-ifd-outside.jpg",
            jpeg_with_app1(jpeg, exif_payload(b"", ifd0_offset=0x7FFFFF00)),
            "JPEG whose EXIF IFD0 offset points outside the segment",
            THUMBNAILS,
        ),
        case(
            "exif-value-outside.jpg",
            jpeg_with_app1(
                jpeg,
                exif_payload(
                    tiff_ifd(
                        [
                            (0x010F, 2, 4096, struct.pack(">I", 0x7FFFFFF0)),  # Make, ASCII
                            (0x0112, 3, 1, struct.pack(">H", 6)),
                            (0x8769, 4, 1, struct.pack(">I", 0xFFFFFF00)),  # Exif IFD pointer
                        ]
                    )
                ),
            ),
            "JPEG whose EXIF values and Exif sub-IFD point outside the segment",
            THUMBNAILS,
        ),
        case(
            "exif-huge-count.jpg",
            jpeg_with_app1(
                jpeg, exif_payload(tiff_ifd([(0x0112, 3, 1, b"\x00\x06")], count=0xFFFF))
            ),
            "JPEG whose EXIF IFD0 claims 65535 entries and holds one",
            THUMBNAILS,
        ),
        case(
            "exif-ifd-loop.jpg",
            jpeg_with_app1(
                jpeg,
                exif_payload(
                    tiff_ifd(
                        [
                            (0x0112, 3, 1, struct.pack(">H", 6)),
                            (0x8769, 4, 1, struct.pack(">I", 8)),  # Exif IFD = IFD0 itself
                        ]
                    )[:-4]
                    + struct.pack(">I", 8)  # next IFD = IFD0 itself
                ),
            ),
            "JPEG whose EXIF IFD0 links to itself (next IFD and Exif sub-IFD)",
            THUMBNAILS,
        ),
        # An Orientation outside 1-8 is ignored: the stored 400x600 is taken as upright.
        *(
            case(
                f"orientation-{value}.jpg",
                jpeg_with_app1(jpeg, exif_orientation(value)),
                f"JPEG with EXIF Orientation {value} (valid: 1-8)",
                THUMBNAILS,
                upright=(400, 600),
            )
            for value in (0, 9, 255)
        ),
        # Decompression bombs: refused from the header, before any pixel is decoded.
        case("bomb-30000.png", png_flat(30000, 30000), "PNG of 30000x30000 zeros, 0.9 MB", BOMB),
        case("bomb-8000.png", png_flat(8000, 8000), "PNG of 8000x8000 zeros (64 Mpx)", BOMB),
        case("bomb-30000.gif", gif_bomb(30000, 30000), "GIF claiming 30000x30000", BOMB),
        case(
            "frame-outside-screen.gif",
            gif_frame_outside_screen(8000, 8000),
            "GIF with a 16x16 screen and an 8000x8000 first frame (64 Mpx)",
            BOMB,
        ),
        case("bomb-65000.jpg", jpeg_with_size(jpeg, 65000, 65000), "JPEG SOF of 65000x65000", BOMB),
        case(
            "scan-bomb.jpg",
            jpeg_scan_bomb(4000, 4000, 100_000),
            "progressive JPEG of 100000 near-empty scans over 4000x4000 (3.2 MB)",
            BOMB,
        ),
        case(
            "ztxt-bomb.png",
            png_with_chunk(png, b"zTXt", b"Comment\x00\x00" + _zlib_of_repeats(bytes(1 << 20), 64)),
            "PNG with a zTXt chunk inflating to 64 MiB",
            THUMBNAILS,
            CORRUPT,
            BOMB,
        ),
        # Lying about the size, under the limit: decoded (or refused) within the pixel budget.
        case(
            "lying-7000.jpg",
            jpeg_with_size(jpeg, 7000, 7000),
            "JPEG SOF of 7000x7000 (49 Mpx, under the limit) over a 400x600 scan",
            THUMBNAILS,
            TRUNCATED,
            CORRUPT,
        ),
        case(
            "big-7000.png",
            png_flat(7000, 7000, b"\x30\x60\x90"),
            "legitimate flat PNG of 7000x7000 (49 Mpx, just under the limit), 160 KB",
            THUMBNAILS,
            upright=(7000, 7000),
        ),
        case("ispe-60000.heic", heif_with_ispe(heic, 60000, 60000), "HEIC ispe 60000x60000", BOMB),
        case(
            "ispe-4000.heic",
            heif_with_ispe(heic, 4000, 4000),
            "HEIC ispe of 4000x4000 over a 1411x1411 grid",
            CORRUPT,
            THUMBNAILS,
        ),
        case(
            "ispe-100.heic",
            heif_with_ispe(heic, 100, 100),
            "HEIC ispe of 100x100 over a 1411x1411 grid",
            CORRUPT,
            THUMBNAILS,
        ),
        case(
            "canvas-16000.webp",
            webp_with_canvas(webp, 16000, 16000),
            "WebP VP8X canvas of 16000x16000 over a 1000x872 picture",
            BOMB,
        ),
        case(
            "canvas-2000.webp",
            webp_with_canvas(webp, 2000, 1744),
            "WebP VP8X canvas of 2000x1744 over a 1000x872 picture",
            CORRUPT,
            THUMBNAILS,
        ),
        case(
            "frame-16383.webp",
            webp_with_frame_size(webp, 16383, 16383),
            "WebP whose VP8 frame header claims 16383x16383",
            BOMB,
        ),
        # Only the first frame is decoded.
        case(
            "frames-100000.gif",
            gif_many_frames(100_000),
            "GIF of 100000 frames, 2.3 MB",
            THUMBNAILS,
            upright=(16, 16),
        ),
    ]
