"""ffmpeg and ffprobe (Debian's ``ffmpeg`` package), run as processes: what a video is, a frame
of it, and its HLS rendition (docs/transforms.md; seed 002: HLS streaming).

Each run is a child process in a session of its own, in a directory the caller gives (a
temporary one), bounded by ``timeout_s``: past it, or when the caller is cancelled (a worker
shutting down), the whole process group is killed with SIGKILL and reaped, so no ffmpeg outlives
its message. Its standard error is kept (the last 2 KiB) for the reason of a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ConfigError, VideoError
from shared.hls import Rung

#: Bytes of a process's standard error kept for an error message.
STDERR_TAIL_BYTES = 2048


@dataclass(frozen=True)
class Probe:
    """What ffprobe says of a video: its display size (rotation applied), duration in seconds,
    codec of its first video stream, and whether it has an audio stream."""

    width: int
    height: int
    duration_s: float
    video_codec: str
    has_audio: bool


def check_installed() -> None:
    """At a worker's start.

    Raises:
        ConfigError: ``ffmpeg`` or ``ffprobe`` is not on the PATH (``scripts/bootstrap.sh``
            installs Debian's ``ffmpeg``).
    """
    missing = [name for name in ("ffmpeg", "ffprobe") if shutil.which(name) is None]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} not installed: apt-get install ffmpeg "
            "(scripts/bootstrap.sh does)"
        )


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def run(args: Sequence[str], *, cwd: Path, timeout_s: float) -> bytes:
    """Run ``args`` (``ffmpeg`` or ``ffprobe`` and its arguments) in ``cwd``; its standard
    output.

    Raises:
        VideoError: it ran past ``timeout_s`` seconds (``"ffmpeg timed out after 600 s"``), was
            killed by a signal (``"ffmpeg killed by SIGKILL"``), or exited non-zero (the last
            line of its standard error).
        ConfigError: the program is not installed.
    """
    program = Path(args[0]).name
    try:
        process = await asyncio.create_subprocess_exec(
            *args,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: killed whole
        )
    except FileNotFoundError:
        raise ConfigError(f"{program} is not installed: apt-get install ffmpeg") from None
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        _kill(process)
        await process.wait()
        raise VideoError(f"{program} timed out after {timeout_s:g} s") from None
    except BaseException:  # cancelled: the worker stops; no ffmpeg outlives its message
        _kill(process)
        with contextlib.suppress(Exception):
            await asyncio.shield(process.wait())
        raise
    code = process.returncode
    if code is not None and code < 0:
        raise VideoError(f"{program} killed by {signal.Signals(-code).name}")
    if code != 0:
        tail = stderr[-STDERR_TAIL_BYTES:].decode("utf-8", "replace").strip().splitlines()
        last = tail[-1] if tail else f"exit status {code}"
        raise VideoError(f"not a decodable video: {last}")
    return stdout


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return int(float(side["rotation"]))
    rotate = (stream.get("tags") or {}).get("rotate")
    return int(float(rotate)) if rotate else 0


def parse_probe(document: dict[str, Any]) -> Probe:
    """The :class:`Probe` of ``ffprobe -print_format json -show_format -show_streams``'s
    output.

    Raises:
        VideoError: no video stream, no size, or no duration.
    """
    streams = document.get("streams") or []
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video"
            and not (s.get("disposition") or {}).get("attached_pic")
        ),
        None,
    )
    if video is None:
        raise VideoError("not a decodable video: no video stream")
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width < 2 or height < 2:
        raise VideoError("not a decodable video: the video stream has no size")
    if _rotation(video) % 180:
        width, height = height, width
    raw = (document.get("format") or {}).get("duration") or video.get("duration")
    try:
        duration = float(raw)
    except (TypeError, ValueError):
        raise VideoError("not a decodable video: unknown duration") from None
    if duration <= 0:
        raise VideoError("not a decodable video: no frames")
    return Probe(
        width=width,
        height=height,
        duration_s=duration,
        video_codec=str(video.get("codec_name") or "unknown")[:64],
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
    )


async def probe(path: Path, *, timeout_s: float) -> Probe:
    """What ffprobe says of the file at ``path``.

    Raises:
        VideoError: not a decodable video (ffprobe's own error, no video stream, no duration),
            or ffprobe past ``timeout_s``.
    """
    out = await run(
        [
            "ffprobe",
            *("-v", "error", "-print_format", "json", "-show_format", "-show_streams"),
            str(path),
        ],
        cwd=path.parent,
        timeout_s=timeout_s,
    )
    try:
        document = json.loads(out)
    except ValueError:
        raise VideoError("not a decodable video: ffprobe gave no JSON") from None
    return parse_probe(document)


async def frame_png(path: Path, at_s: float, *, timeout_s: float, threads: int) -> bytes:
    """The frame at ``at_s`` seconds of the video at ``path``, as PNG (the rotation applied).

    Raises:
        VideoError: no frame could be decoded there, or ffmpeg past ``timeout_s``.
    """
    out = path.parent / "poster.png"
    await run(
        [
            *("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"),
            *("-threads", str(threads), "-ss", f"{at_s:.3f}", "-i", str(path)),
            *("-frames:v", "1", "-an", "-c:v", "png", "-f", "image2", str(out)),
        ],
        cwd=path.parent,
        timeout_s=timeout_s,
    )
    data = await asyncio.to_thread(lambda: out.read_bytes() if out.exists() else b"")
    if not data:
        raise VideoError("not a decodable video: no frame could be decoded")
    return data


def hls_arguments(
    source: Path, out_dir: Path, rungs: Sequence[Rung], *, has_audio: bool, segment_s: int
) -> list[str]:
    """ffmpeg's arguments (without ``-threads``) making one HLS rendition per rung of ``rungs``
    in ``out_dir``: H.264 (High profile, ``veryfast``), a key frame every ``segment_s``
    seconds so each segment starts with one, AAC stereo at 128 kbit/s when ``has_audio``;
    ``{name}.m3u8`` with ``{name}_00000.ts``… per rendition and ``master.m3u8`` (VOD
    playlists, RFC 8216)."""
    count = len(rungs)
    split = f"[0:v]split={count}" + "".join(f"[s{i}]" for i in range(count))
    scales = [
        f"[s{i}]scale={r.width}:{r.height}:flags=bicubic,setsar=1,format=yuv420p[v{i}]"
        for i, r in enumerate(rungs)
    ]
    args = [
        *("-i", str(source), "-filter_complex", ";".join([split, *scales])),
    ]
    for i in range(count):
        args += ["-map", f"[v{i}]"]
        if has_audio:
            args += ["-map", "0:a:0"]
    args += [
        *("-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high"),
        *("-force_key_frames", f"expr:gte(t,n_forced*{segment_s})", "-sc_threshold", "0"),
    ]
    for i, r in enumerate(rungs):
        args += [
            *(f"-b:v:{i}", f"{r.video_kbps}k", f"-maxrate:v:{i}", f"{r.maxrate_kbps}k"),
            *(f"-bufsize:v:{i}", f"{r.bufsize_kbps}k"),
        ]
    if has_audio:
        args += ["-c:a", "aac", "-b:a", "128k", "-ac", "2"]
    streams = " ".join(
        f"v:{i},a:{i},name:{r.name}" if has_audio else f"v:{i},name:{r.name}"
        for i, r in enumerate(rungs)
    )
    args += [
        *("-f", "hls", "-hls_time", str(segment_s), "-hls_playlist_type", "vod"),
        *("-hls_flags", "independent_segments", "-hls_segment_type", "mpegts"),
        *("-hls_segment_filename", str(out_dir / "%v_%05d.ts")),
        *("-master_pl_name", "master.m3u8", "-var_stream_map", streams),
        str(out_dir / "%v.m3u8"),
    ]
    return args


async def make_hls(
    source: Path,
    out_dir: Path,
    rungs: Sequence[Rung],
    *,
    has_audio: bool,
    segment_s: int,
    timeout_s: float,
    threads: int,
) -> None:
    """Write the HLS rendition of ``source`` into ``out_dir`` (:func:`hls_arguments`).

    Raises:
        VideoError: ffmpeg could not decode the source, ran past ``timeout_s``, or was killed.
    """
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    await run(
        [
            *("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"),
            *("-threads", str(threads)),
            *hls_arguments(source, out_dir, rungs, has_audio=has_audio, segment_s=segment_s),
        ],
        cwd=out_dir,
        timeout_s=timeout_s,
    )
    if not await asyncio.to_thread((out_dir / "master.m3u8").exists):
        raise VideoError("not a decodable video: ffmpeg wrote no master playlist")
