"""The video transform's pure parts (docs/transforms.md): the rendition ladder, playlist
reading and rewriting, ffprobe's answer read, ffmpeg's HLS arguments, the claims on
``file.video_processed``, the history lines, event ids, and the handler's answer to a file it
does not read."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.commit.videos import detail_of
from services.video import handler as video
from shared.adapters.ffmpeg import hls_arguments, parse_probe
from shared.claims import check_stored_object
from shared.errors import ForgedEvent, VideoError
from shared.events import FileReceived, FileScanned, FileStored, FileVideoProcessed, HlsRendition
from shared.hls import FILE_NAME, ladder, listed_names, rewrite_playlist, segment_durations
from shared.naming import HLS_MASTER, hls_key, object_key, poster_key
from shared.settings import ThumbnailSettings
from shared.transform_settings import VideoSettings

DATA = b"\x00\x00\x00\x18ftypmp42 not really a video"
MASTER = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-STREAM-INF:BANDWIDTH=1020800,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2"
360p.m3u8

#EXT-X-STREAM-INF:BANDWIDTH=3220800,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2"
720p.m3u8
"""
MEDIA = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:6
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXTINF:6.000000,
360p_00000.ts
#EXTINF:4.000000,
360p_00001.ts
#EXT-X-ENDLIST
"""


def stored(content_type: str = "video/mp4") -> FileStored:
    received = FileReceived.new(
        file_id=uuid.UUID("0b5e9d4c-6b7e-4d0a-9f55-2f1c8f1e0a02"),
        owner="alice",
        received_at=datetime(2026, 12, 3, 10, 15, tzinfo=UTC),
        source="spool://0b5e9d4c-6b7e-4d0a-9f55-2f1c8f1e0a02",
        size_bytes=len(DATA),
        sha256=hashlib.sha256(DATA).hexdigest(),
        content_type=content_type,
        original_name="clip.mp4",
    )
    key = object_key("alice", received.file_id, received.received_at, "clip.mp4")
    scanned = received.follow(FileScanned, scanner="ClamAV", signature_version="1")
    return scanned.follow(FileStored, bucket="sluice", key=key)


def processed(event: FileStored, **changes: Any) -> FileVideoProcessed:
    fields: dict[str, Any] = {
        "bucket": event.bucket,
        "key": event.key,
        "duration_s": 10.0,
        "width": 1280,
        "height": 720,
        "video_codec": "h264",
        "has_audio": True,
        "master_key": hls_key(event.key, HLS_MASTER),
        "segment_s": 6,
        "renditions": (
            HlsRendition(
                name="360p",
                playlist_key=hls_key(event.key, "360p.m3u8"),
                width=640,
                height=360,
                bandwidth=1_020_800,
                segments=2,
            ),
        ),
        "poster": (),
        **changes,
    }
    return event.follow(
        FileVideoProcessed, event_id=video.event_id_of(event, "file.video_processed"), **fields
    )


# -- the ladder ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1280, 720), [("360p", 640, 360), ("720p", 1280, 720)]),
        ((1920, 1080), [("360p", 640, 360), ("720p", 1280, 720)]),
        ((854, 480), [("360p", 640, 360), ("480p", 854, 480)]),  # capped at the source
        ((640, 360), [("360p", 640, 360)]),  # 720p would upscale: one rendition
        ((320, 240), [("240p", 320, 240)]),  # smaller than every height: its own size
        ((720, 1280), [("360p", 360, 640), ("720p", 720, 1280)]),  # portrait keeps its shape
        ((321, 241), [("240p", 320, 240)]),  # odd sizes made even (H.264 4:2:0)
    ],
)
def test_the_ladder_never_upscales(
    size: tuple[int, int], expected: list[tuple[str, int, int]]
) -> None:
    assert [(r.name, r.width, r.height) for r in ladder(*size)] == expected


@given(st.integers(2, 4096), st.integers(2, 4096))
def test_every_rung_is_even_and_within_the_source(width: int, height: int) -> None:
    rungs = ladder(width, height)
    assert 1 <= len(rungs) <= 2
    for rung in rungs:
        assert rung.width % 2 == 0 and rung.height % 2 == 0
        assert min(rung.width, rung.height) <= max(2, min(width, height) + 1)
        assert FILE_NAME.match(f"{rung.name}.m3u8")
    assert [r.video_kbps for r in rungs] == sorted(r.video_kbps for r in rungs)


def test_the_heights_setting_is_checked() -> None:
    assert VideoSettings(rendition_heights_px=(720, 360, 360)).rendition_heights_px == (360, 720)
    with pytest.raises(ValueError, match="even heights"):
        VideoSettings(rendition_heights_px=(361,))


# -- playlists -----------------------------------------------------------------------------


def test_segment_durations_and_names() -> None:
    assert segment_durations(MEDIA) == [6.0, 4.0]
    assert listed_names(MEDIA) == ["360p_00000.ts", "360p_00001.ts"]
    assert listed_names(MASTER) == ["360p.m3u8", "720p.m3u8"]


def test_a_master_is_rewritten_to_the_gateway_route() -> None:
    served = rewrite_playlist(MASTER, lambda name: f"/v1/files/f/hls/{name}")
    assert listed_names(served) == ["/v1/files/f/hls/360p.m3u8", "/v1/files/f/hls/720p.m3u8"]
    assert served.count("#EXT-X-STREAM-INF:BANDWIDTH=") == 2  # tags kept as they were


def test_a_media_playlist_gets_fetchable_segment_urls() -> None:
    urls = {n: f"https://s3/b/k.hls/{n}?X-Amz-Signature=abc" for n in listed_names(MEDIA)}
    served = rewrite_playlist(MEDIA, urls.__getitem__)
    assert listed_names(served) == list(urls.values())
    assert segment_durations(served) == [6.0, 4.0]
    assert served.endswith("#EXT-X-ENDLIST\n")


@pytest.mark.parametrize(
    "foreign",
    ["https://evil.example/x.ts", "../../bob/secret.jpg", "/etc/passwd", "360p_1.ts", "x.m3u8"],
)
def test_a_playlist_naming_anything_else_is_refused(foreign: str) -> None:
    with pytest.raises(ValueError, match="not a rendition's file"):
        rewrite_playlist(MEDIA.replace("360p_00001.ts", foreign), lambda n: n)
    tagged = '#EXTM3U\n#EXT-X-MAP:URI="' + foreign + '"\n'
    with pytest.raises(ValueError):
        rewrite_playlist(tagged, lambda n: n)


# -- ffprobe and ffmpeg --------------------------------------------------------------------


def test_the_probe_reads_size_rotation_duration_and_audio() -> None:
    document = {
        "streams": [
            {"codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080,
             "side_data_list": [{"rotation": -90}]},
            {"codec_type": "audio", "codec_name": "aac"},
        ],
        "format": {"duration": "12.480000"},
    }  # fmt: skip
    probe = parse_probe(document)
    assert (probe.width, probe.height) == (1080, 1920)  # a phone held upright
    assert (probe.duration_s, probe.video_codec, probe.has_audio) == (12.48, "h264", True)


COVER_ART = {
    "streams": [
        {"codec_type": "video", "width": 300, "height": 300, "disposition": {"attached_pic": 1}}
    ],
    "format": {"duration": "3"},
}


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"streams": [{"codec_type": "audio"}], "format": {"duration": "3"}}, "no video stream"),
        (COVER_ART, "no video stream"),  # an audio file's cover art is not a video
        (
            {"streams": [{"codec_type": "video", "width": 0, "height": 0}]},
            "the video stream has no size",
        ),
        ({"streams": [{"codec_type": "video", "width": 64, "height": 64}]}, "unknown duration"),
    ],
)
def test_what_is_not_a_video_is_a_video_error(document: dict[str, Any], reason: str) -> None:
    with pytest.raises(VideoError, match=f"not a decodable video: {reason}"):
        parse_probe(document)


def test_hls_arguments_map_audio_only_when_there_is_some(tmp_path: Any) -> None:
    rungs = ladder(1280, 720)
    with_audio = hls_arguments(tmp_path / "in", tmp_path, rungs, has_audio=True, segment_s=6)
    silent = hls_arguments(tmp_path / "in", tmp_path, rungs, has_audio=False, segment_s=6)
    assert with_audio.count("0:a:0") == 2 and "0:a:0" not in silent
    assert with_audio[with_audio.index("-var_stream_map") + 1] == (
        "v:0,a:0,name:360p v:1,a:1,name:720p"
    )
    assert silent[silent.index("-var_stream_map") + 1] == "v:0,name:360p v:1,name:720p"
    assert with_audio[with_audio.index("-hls_time") + 1] == "6"
    assert "expr:gte(t,n_forced*6)" in with_audio  # a key frame starts every segment


# -- events and claims ---------------------------------------------------------------------


def test_the_claims_on_a_processed_video_hold_its_own_keys() -> None:
    event = stored()
    check_stored_object(processed(event), "sluice")
    other = "bob/" + event.key.split("/", 1)[1]
    with pytest.raises(ForgedEvent, match=r"file\.video_processed names key"):
        check_stored_object(processed(event, master_key=hls_key(other, HLS_MASTER)), "sluice")
    forged_poster = processed(
        event,
        poster=(
            {
                "size_px": 256,
                "key": poster_key(other, 256),
                "width": 256,
                "height": 144,
                "size_bytes": 10,
            },
        ),
    )
    with pytest.raises(ForgedEvent):
        check_stored_object(forged_poster, "sluice")


def test_history_lines_and_event_ids() -> None:
    event = stored()
    assert detail_of(processed(event)) == "video: 10.0 s, HLS 360p"
    failed = video.video_failed(event, "not a decodable video: moov atom not found")
    assert detail_of(failed) == "no video: not a decodable video: moov atom not found"
    assert failed.event_id == video.video_failed(event, "other").event_id  # a redelivery
    assert failed.event_id != processed(event).event_id


class _NoStore:
    bucket = "sluice"
    reads = 0

    async def get_bytes(self, key: str, *, bucket: str | None = None) -> bytes:
        self.reads += 1
        raise AssertionError("nothing to read")


def test_the_video_stage_passes_over_what_it_does_not_read() -> None:
    store = _NoStore()
    deps = video.Deps(
        storage=store,  # type: ignore[arg-type]
        settings=VideoSettings(),
        thumbnails=ThumbnailSettings(),
        slots=asyncio.Semaphore(1),
    )
    for content_type in ("application/pdf", "image/png"):
        assert asyncio.run(video.handle(stored(content_type), deps)) == []
    assert store.reads == 0
