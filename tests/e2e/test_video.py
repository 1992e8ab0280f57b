"""The video stage end to end (docs/transforms.md; seed 002: HLS streaming): one ``sluice run``
with ``SLUICE_VIDEO_ENABLED`` against the real RabbitMQ, PostgreSQL, SeaweedFS, clamd and
Debian's ffmpeg. Every input is made here by ffmpeg: a 10 s 1280x720 test pattern with a sine
tone (MP4), a small silent WebM, and a corrupt MP4 (a real one's first bytes, then garbage).
The test checks what a user would: the file ``available``, a poster to look at, and ffprobe
reading every rendition through the URLs the gateway gives: the signed master playlist URL of
``GET /v1/files/{id}`` alone, no header at all (as Safari, AVPlayer or VLC play it), and the
unsigned route with the API key; a forged, misapplied or expired signature refused; the error of
a corrupt video; another owner's 404; and that deleting a video leaves no object behind and
its signed URLs 404.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from shared import devservices
from shared.adapters.signed_urls import UrlSigner, derived_secret
from shared.devservices import DevServicesConfig
from shared.hls import listed_names, segment_durations
from tests.e2e.pipeline import ROOT, Pipeline, queue_depths, start_pipeline
from tests.e2e.test_text import sluice_status, upload

pytestmark = pytest.mark.e2e


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The test videos, made by ffmpeg's lavfi sources."""
    tmp = tmp_path_factory.mktemp("videos")
    mp4, webm = tmp / "pattern.mp4", tmp / "small.webm"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc=duration=10:size=1280x720:rate=25"),
        *("-f", "lavfi", "-i", "sine=frequency=440:duration=10"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
        *("-c:a", "aac", "-shortest", str(mp4)),
    )
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc=duration=3:size=320x240:rate=25"),
        *("-c:v", "libvpx-vp9", "-deadline", "realtime", str(webm)),
    )
    real = mp4.read_bytes()
    # ftyp and the start of mdat, then garbage: sniffed as MP4, no moov atom to decode.
    corrupt = real[:4096] + bytes(range(256)) * 64
    return {"mp4": real, "webm": webm.read_bytes(), "corrupt": corrupt}


@pytest.fixture(scope="module")
def pipeline(services: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from start_pipeline(
        tmp_path_factory.mktemp("video"), "video", {"SLUICE_VIDEO_ENABLED": "true"}
    )


def wait_video(
    pipeline: Pipeline, file_id: str, owner: str = "alice", timeout_s: float = 180
) -> dict[str, Any]:
    """``GET /v1/files/{id}`` once its HLS artefact or its ``video_error`` is there."""
    deadline = time.monotonic() + timeout_s
    with pipeline.client(owner) as client:
        while True:
            answer = client.get(f"/v1/files/{file_id}")
            if answer.status_code == 200:
                info: dict[str, Any] = answer.json()
                kinds = {a["kind"] for a in info["artefacts"]}
                if "hls" in kinds or info["video_error"]:
                    return info
            assert pipeline.process.poll() is None, f"sluice died; see {pipeline.log_path}"
            assert time.monotonic() < deadline, f"no video after {timeout_s} s: {answer.text}"
            time.sleep(0.3)


@pytest.fixture(scope="module")
def files(pipeline: Pipeline, inputs: dict[str, bytes]) -> dict[str, str]:
    """The inputs, uploaded once; each waited for until ``available`` and its video settled."""
    uploaded = {
        "mp4": upload(pipeline, "pattern.mp4", inputs["mp4"]),
        "webm": upload(pipeline, "small.webm", inputs["webm"]),
        "corrupt": upload(pipeline, "broken.mp4", inputs["corrupt"]),
    }
    for name, file_id in uploaded.items():
        assert pipeline.wait_final(file_id)["status"] == "available", name
        wait_video(pipeline, file_id)
    return uploaded


def hls_of(info: dict[str, Any]) -> dict[str, Any]:
    (hls,) = [a for a in info["artefacts"] if a["kind"] == "hls"]
    return hls


def path_of(url: str) -> str:
    """``url`` without its query (a signed URL's ``expires`` and ``signature``)."""
    return urlsplit(url).path


def ffprobe(pipeline: Pipeline, url: str, owner: str | None = None) -> dict[str, Any]:
    """ffprobe's streams and format of ``url`` (a gateway URL): with no header at all, as a
    player that sends none; or with ``owner``'s API key as a header (ffmpeg's HLS demuxer
    sends it on every request it makes for the playlist, segments included)."""
    headers = ("-headers", f"Authorization: Bearer {pipeline.keys[owner]}\r\n") if owner else ()
    done = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-print_format", "json"),
            *("-show_streams", "-show_format"),
            *headers,
            f"{pipeline.url}{url}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def test_video_gets_a_poster_and_two_renditions(pipeline: Pipeline, files: dict[str, str]) -> None:
    info = wait_video(pipeline, files["mp4"])
    assert info["status"] == "available" and info["video_error"] is None
    hls = hls_of(info)
    assert path_of(hls["url"]) == f"/v1/files/{files['mp4']}/hls/master.m3u8"
    assert "expires=" in hls["url"] and "signature=" in hls["url"]
    assert (hls["width"], hls["height"], hls["has_audio"]) == (1280, 720, True)
    assert abs(hls["duration_s"] - 10) < 0.2
    assert hls["segment_s"] == 6
    assert [(r["name"], r["width"], r["height"]) for r in hls["renditions"]] == [
        ("360p", 640, 360),
        ("720p", 1280, 720),
    ]
    posters = [a for a in info["artefacts"] if a["kind"] == "poster"]
    assert [p["size_px"] for p in posters] == [256, 1024]
    for poster in posters:
        body = httpx.get(poster["url"], timeout=30)
        assert body.status_code == 200
        with Image.open(io.BytesIO(body.content)) as image:
            assert image.size == (poster["width"], poster["height"])
            assert max(image.size) == min(poster["size_px"], 1280)
    kinds = [
        kind
        for (kind,) in pipeline.sql(
            "SELECT event_type FROM file_events WHERE file_id = %s ORDER BY seq", files["mp4"]
        )
    ]
    assert "file.video_processed" in kinds


def test_ffprobe_plays_the_signed_master_url_with_no_header(
    pipeline: Pipeline, files: dict[str, str]
) -> None:
    hls = hls_of(wait_video(pipeline, files["mp4"]))
    master = ffprobe(pipeline, hls["url"])  # the URL of GET /v1/files/{id} alone
    sizes = {(s["width"], s["height"]) for s in master["streams"] if s["codec_type"] == "video"}
    assert sizes == {(640, 360), (1280, 720)}
    served = httpx.get(pipeline.url + hls["url"], timeout=30)  # no API key
    assert served.status_code == 200, served.text
    variants = listed_names(served.text)
    assert [path_of(v) for v in variants] == [path_of(r["url"]) for r in hls["renditions"]]
    assert all("expires=" in v and "signature=" in v for v in variants)
    for rendition, variant in zip(hls["renditions"], variants, strict=True):
        for url in (rendition["url"], variant):
            probed = ffprobe(pipeline, url)
            (video,) = [s for s in probed["streams"] if s["codec_type"] == "video"]
            assert (video["width"], video["height"]) == (rendition["width"], rendition["height"])
            assert abs(float(probed["format"]["duration"]) - 10) < 0.5


def test_a_signature_opens_only_its_own_playlist_until_it_expires(
    pipeline: Pipeline, files: dict[str, str]
) -> None:
    mp4 = hls_of(wait_video(pipeline, files["mp4"]))
    webm = hls_of(wait_video(pipeline, files["webm"]))
    query = urlsplit(mp4["url"]).query
    signature = parse_qs(query)["signature"][0]
    tampered = query.replace(signature, signature[:-1] + ("0" if signature[-1] != "0" else "1"))
    # the gateway's key (SLUICE_STORAGE_SIGNING_SECRET unset, S3 backend: derived from the S3
    # secret), to sign a URL that has already expired
    signer = UrlSigner(derived_secret(DevServicesConfig.from_env(pipeline.env).s3_secret_key))
    master = path_of(mp4["url"])
    expired = signer.resource_query(master, 60, now=time.time() - 120)
    refused = {
        "tampered": (f"{master}?{tampered}", "signature does not match"),
        "another name": (f"{path_of(mp4['renditions'][0]['url'])}?{query}", "does not match"),
        "another file": (f"{path_of(webm['url'])}?{query}", "signature does not match"),
        "expired": (f"{master}?{expired}", "URL expired at"),
        "half": (f"{master}?{query.split('&')[0]}", "needs expires and signature"),
    }
    for case, (url, reason) in refused.items():
        answer = httpx.get(pipeline.url + url, timeout=30)
        assert answer.status_code == 403, (case, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "forbidden", case
        assert error["message"].startswith("playlist URL refused: "), case
        assert reason in error["message"], (case, error)
    assert httpx.get(pipeline.url + mp4["url"], timeout=30).status_code == 200


def test_ffprobe_reads_every_rendition_with_the_api_key(
    pipeline: Pipeline, files: dict[str, str]
) -> None:
    hls = hls_of(wait_video(pipeline, files["mp4"]))
    unsigned = f"/v1/files/{files['mp4']}/hls/master.m3u8"
    master = ffprobe(pipeline, unsigned, owner="alice")
    sizes = {(s["width"], s["height"]) for s in master["streams"] if s["codec_type"] == "video"}
    assert sizes == {(640, 360), (1280, 720)}
    with pipeline.client() as client:
        served = client.get(unsigned)
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    variants = listed_names(served.text)
    assert [path_of(v) for v in variants] == [path_of(r["url"]) for r in hls["renditions"]]
    for rendition in hls["renditions"]:
        probed = ffprobe(pipeline, path_of(rendition["url"]), owner="alice")
        by_type = {s["codec_type"]: s for s in probed["streams"]}
        assert by_type["video"]["codec_name"] == "h264"
        assert (by_type["video"]["width"], by_type["video"]["height"]) == (
            rendition["width"],
            rendition["height"],
        )
        assert by_type["audio"]["codec_name"] == "aac"
        assert abs(float(probed["format"]["duration"]) - 10) < 0.5
        with pipeline.client() as client:
            playlist = client.get(path_of(rendition["url"])).text
        durations = segment_durations(playlist)
        assert len(durations) == 2 and abs(sum(durations) - 10) < 0.2, durations
        assert all(abs(d - 6) < 0.1 for d in durations[:-1]), durations
        # Segments are presigned URLs: fetched without the API key.
        segment = listed_names(playlist)[0]
        assert segment.startswith("http") and "Signature" in segment
        fetched = httpx.get(segment, timeout=30)
        assert fetched.status_code == 200 and fetched.content[:1] == b"\x47"  # MPEG-TS sync


def test_a_small_silent_webm_gets_one_rendition(pipeline: Pipeline, files: dict[str, str]) -> None:
    hls = hls_of(wait_video(pipeline, files["webm"]))
    assert [(r["name"], r["width"], r["height"]) for r in hls["renditions"]] == [("240p", 320, 240)]
    assert hls["has_audio"] is False
    probed = ffprobe(pipeline, hls["url"])
    assert [s["codec_type"] for s in probed["streams"]] == ["video"]


def test_a_corrupt_video_gets_its_error_and_stays_available(
    pipeline: Pipeline, files: dict[str, str]
) -> None:
    info = wait_video(pipeline, files["corrupt"])
    assert info["status"] == "available"
    assert info["video_error"].startswith("not a decodable video:"), info["video_error"]
    assert [a for a in info["artefacts"] if a["kind"] in ("hls", "poster")] == []
    with pipeline.client() as client:
        answer = client.get(f"/v1/files/{files['corrupt']}/hls/master.m3u8")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "hls_failed"
    assert queue_depths(pipeline)[f"{pipeline.prefix}.video.dlq"] == 0  # not a dead letter


def test_another_owner_gets_404_on_the_hls_routes(
    pipeline: Pipeline, files: dict[str, str]
) -> None:
    with pipeline.client("bob") as client:
        for name in ("master.m3u8", "360p.m3u8", "720p.m3u8"):
            answer = client.get(f"/v1/files/{files['mp4']}/hls/{name}")
            assert answer.status_code == 404, name
            assert answer.json()["error"]["code"] == "not_found"
    with pipeline.client(None) as client:
        answer = client.get(f"/v1/files/{files['mp4']}/hls/master.m3u8")  # no key, not signed
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_status_shows_the_video_stage(pipeline: Pipeline, files: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        stages = sluice_status(pipeline)
        if stages["video"]["consumers"] == 1:
            break
        assert time.monotonic() < deadline, stages
        time.sleep(1)
    assert stages["video"]["queue"] == f"{pipeline.prefix}.video"
    assert stages["video"]["dead_letters"] == 0, stages["video"]


def test_gdpr_export_says_what_the_video_stage_made(
    pipeline: Pipeline, files: dict[str, str], inputs: dict[str, bytes], tmp_path: Path
) -> None:
    out = tmp_path / "alice.zip"
    done = subprocess.run(
        [sys.executable, "-m", "services", "gdpr", "export", "--owner", "alice", "--out", str(out)],
        env={**pipeline.env, "SLUICE_LOG_LEVEL": "warning"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(out) as archive:
        by_id = {e["file_id"]: e for e in json.loads(archive.read("metadata.json"))["files"]}
        assert archive.read(f"files/{files['mp4']}/v1-pattern.mp4") == inputs["mp4"]
        assert not [n for n in archive.namelist() if ".hls/" in n or ".poster-" in n]
    video = by_id[files["mp4"]]["versions"][0]["video"]
    assert (video["state"], video["renditions"]) == ("processed", ["360p", "720p"])
    failed = by_id[files["corrupt"]]["versions"][0]["video"]
    assert failed["state"] == "failed" and "not a decodable video" in failed["error"]


def test_reconcile_takes_no_derived_object_for_an_orphan(
    pipeline: Pipeline, files: dict[str, str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services", "reconcile", "--json", "--grace", "0s"],
        env={**pipeline.env, "SLUICE_LOG_LEVEL": "warning"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    document = json.loads(done.stdout)
    assert document["counts"]["orphans"] == 0, document["orphans"]
    assert done.returncode == 0, done.stderr


def test_deleting_a_video_leaves_no_object(pipeline: Pipeline, files: dict[str, str]) -> None:
    file_id = files["mp4"]
    signed = hls_of(wait_video(pipeline, file_id))["url"]
    (key,) = pipeline.sql("SELECT master_key FROM file_videos WHERE file_id = %s", file_id)[0]
    prefix = str(key).split(f"{file_id}-")[0] + f"{file_id}-"
    s3 = devservices.s3_client()
    before = s3.list_objects_v2(Bucket=pipeline.bucket, Prefix=prefix).get("KeyCount", 0)
    assert before >= 1 + 2 + 2 * 3  # original, 2 posters, 2 x (playlist + 2 segments), master
    with pipeline.client() as client:
        assert client.delete(f"/v1/files/{file_id}").status_code == 202
    deadline = time.monotonic() + 60
    while True:
        left = s3.list_objects_v2(Bucket=pipeline.bucket, Prefix=prefix).get("KeyCount", 0)
        rows = pipeline.sql("SELECT 1 FROM file_videos WHERE file_id = %s", file_id)
        if left == 0 and not rows:
            break
        assert time.monotonic() < deadline, f"objects {left}, rows {rows}"
        time.sleep(0.3)
    with pipeline.client() as client:
        assert client.get(f"/v1/files/{file_id}/hls/master.m3u8").status_code == 404
    answer = httpx.get(pipeline.url + signed, timeout=30)  # a valid signature: still gone
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


def test_the_inputs_are_what_the_brief_says(inputs: dict[str, bytes], tmp_path: Path) -> None:
    source = tmp_path / "in.mp4"
    source.write_bytes(inputs["mp4"])
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", str(source)],
        capture_output=True,
        text=True,
        check=True,
    )
    types = sorted(s["codec_type"] for s in json.loads(done.stdout)["streams"])
    assert types == ["audio", "video"]
