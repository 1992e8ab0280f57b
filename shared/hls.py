"""HLS (RFC 8216) for the video stage and the gateway: the rendition ladder, the names of a
rendition's files, and the rewriting of stored playlists for a client (docs/transforms.md; seed
002: HLS streaming). Pure: no I/O.

A video's rendition lives under ``{original key}.hls/`` (``shared.naming.hls_key``): the master
playlist ``master.m3u8``, one media playlist per rendition (``360p.m3u8``) and its MPEG-TS
segments (``360p_00000.ts``). The stored playlists name those files relative to themselves; the
gateway serves them with each name replaced by a URL the client can fetch
(:func:`rewrite_playlist`): media playlists by the gateway's own route, segments by presigned
URLs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Content-Type of a playlist (RFC 8216 §4).
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
#: Content-Type of an MPEG-TS segment.
SEGMENT_TYPE = "video/mp2t"
#: A rendition's name: its short side in pixels and ``p``.
RENDITION_NAME = re.compile(r"^[0-9]{1,4}p$")
#: The only names a stored playlist may list: a media playlist or a segment of a rendition.
FILE_NAME = re.compile(r"^[0-9]{1,4}p(_[0-9]{5}\.ts|\.m3u8)$")
#: Bits per pixel per frame of the H.264 rate ladder (at 30 frames/s: 640x360 → 553 kbit/s).
BITS_PER_PIXEL = 0.08
#: Frame rate the ladder's rates are reckoned at, frames/s.
REFERENCE_FPS = 30
#: ``URI="..."`` in a tag (``EXT-X-MAP``, ``EXT-X-MEDIA``, ``EXT-X-KEY``).
_URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')


@dataclass(frozen=True)
class Rung:
    """One rendition to make: ``name`` (e.g. ``720p``), its size in pixels (even numbers, the
    source's aspect kept) and its H.264 rates in kbit/s (target, peak, VBV buffer)."""

    name: str
    width: int
    height: int
    video_kbps: int

    @property
    def maxrate_kbps(self) -> int:
        """Peak rate, kbit/s (``-maxrate``): 107 % of the target."""
        return self.video_kbps * 107 // 100

    @property
    def bufsize_kbps(self) -> int:
        """VBV buffer, kbit (``-bufsize``): 1.5 s of the target."""
        return self.video_kbps * 3 // 2


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def ladder(width: int, height: int, heights_px: Sequence[int] = (360, 720)) -> list[Rung]:
    """The renditions of a ``width`` x ``height`` video (after its rotation), smallest first: one
    per height of ``heights_px`` (of the short side, so a portrait video keeps its
    orientation), each capped at the source's short side (never upscaled) and listed once. A
    source smaller than every height gets one rendition, at its own size (made even).

    E.g. ``ladder(1280, 720)`` → 360p (640x360) and 720p (1280x720); ``ladder(854, 480)`` →
    360p and 480p; ``ladder(320, 240)`` → 240p only.

    Raises:
        ValueError: a size below 2 pixels.
    """
    if width < 2 or height < 2:
        raise ValueError(f"no rendition of a {width}x{height} video")
    short, long_ = min(width, height), max(width, height)
    shorts: list[int] = []
    for target in sorted(set(heights_px)):
        side = _even(min(target, short)) if target > short else target
        if side not in shorts:
            shorts.append(side)
    rungs = []
    for side in shorts:
        other = _even(long_ * side / short)
        w, h = (other, side) if width >= height else (side, other)
        kbps = max(200, round(w * h * REFERENCE_FPS * BITS_PER_PIXEL / 1000))
        rungs.append(Rung(name=f"{side}p", width=w, height=h, video_kbps=kbps))
    return rungs


def segment_durations(playlist: str) -> list[float]:
    """The ``#EXTINF`` durations of a media playlist, seconds, in order."""
    durations = []
    for line in playlist.splitlines():
        if line.startswith("#EXTINF:"):
            durations.append(float(line[len("#EXTINF:") :].split(",", 1)[0]))
    return durations


def listed_names(playlist: str) -> list[str]:
    """The URIs a playlist lists (its non-tag lines, and ``URI="..."`` attributes), in order."""
    names = []
    for line in playlist.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            names.extend(_URI_ATTRIBUTE.findall(stripped))
        else:
            names.append(stripped)
    return names


def rewrite_playlist(playlist: str, resolve: Callable[[str], str]) -> str:
    """``playlist`` with every URI it lists (a media playlist's or a segment's name) replaced by
    ``resolve(name)``; tags and comments kept, lines ending in ``\\n``.

    Raises:
        ValueError: a URI that is not one of a rendition's own names (:data:`FILE_NAME`: no
            path, no scheme), so a stored playlist can never point a client elsewhere.
    """

    def checked(name: str) -> str:
        if not FILE_NAME.match(name):
            raise ValueError(f"playlist lists {name[:80]!r}, not a rendition's file")
        return resolve(name)

    out = []
    for line in playlist.splitlines():
        stripped = line.strip()
        if not stripped:
            out.append("")
        elif stripped.startswith("#"):
            out.append(_URI_ATTRIBUTE.sub(lambda m: f'URI="{checked(m.group(1))}"', stripped))
        else:
            out.append(checked(stripped))
    return "\n".join(out) + "\n"
