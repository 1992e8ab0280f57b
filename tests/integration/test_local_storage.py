"""LocalObjectStorage on a real directory: atomic, checksum-checked writes that leave nothing
behind on a mismatch, head/list/delete with S3's shapes, keys and links that cannot leave the
root, and StorageUnavailable when the root is missing or read-only (so breakers and the
fallback work as with S3)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.adapters.local_storage import LocalObjectStorage
from shared.adapters.signed_urls import KEY_FILE, UrlSigner, secret_from_key_file
from shared.adapters.storage import b64_sha256
from shared.errors import (
    ChecksumMismatch,
    InvalidSource,
    PermanentError,
    SourceMissing,
    StorageUnavailable,
)

BUCKET = "sluice-test"
SIGNER = UrlSigner(b"s" * 32)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def storage_at(root: Path) -> LocalObjectStorage:
    return LocalObjectStorage(root, BUCKET, signer=SIGNER, chunk_bytes=4096)


@pytest.fixture
def storage(tmp_path: Path) -> LocalObjectStorage:
    return storage_at(tmp_path)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_a_write_is_read_back_with_s3s_head_shape(storage: LocalObjectStorage) -> None:
    data = os.urandom(10_000)
    await storage.put_bytes(
        "alice/a.jpg", data, sha256_hex=sha(data), content_type="image/jpeg", metadata={"k": "v"}
    )
    info = await storage.head("alice/a.jpg")
    assert info is not None
    assert (info.key, info.size_bytes, info.content_type) == ("alice/a.jpg", 10_000, "image/jpeg")
    assert info.checksum_sha256 == b64_sha256(sha(data))
    assert info.metadata == {"k": "v"} and info.last_modified is not None
    assert await storage.get_bytes("alice/a.jpg") == data
    async with storage.open_stream("alice/a.jpg", 3000) as (streamed, chunks):
        pieces = [chunk async for chunk in chunks]
    assert streamed.size_bytes == 10_000 and b"".join(pieces) == data
    assert max(len(p) for p in pieces) == 3000
    assert (storage.root / BUCKET / "alice/a.jpg").read_bytes() == data
    for first, last in ((0, 0), (2999, 6001), (9000, 9999)):  # HTTP Range: last inclusive
        async with storage.open_stream("alice/a.jpg", 3000, (first, last)) as (ranged, chunks):
            pieces = [chunk async for chunk in chunks]
        assert ranged.size_bytes == 10_000  # the whole object's
        assert b"".join(pieces) == data[first : last + 1]
        assert max(len(p) for p in pieces) <= 3000


async def test_a_conditional_write_leaves_a_file_that_is_there(
    storage: LocalObjectStorage,
) -> None:
    first, second = b"first bytes", b"second bytes"
    assert await storage.put_new("alice/b.jpg", first, sha256_hex=sha(first), content_type="x/y")
    assert not await storage.put_new(
        "alice/b.jpg", second, sha256_hex=sha(second), content_type="x/y"
    )
    assert await storage.get_bytes("alice/b.jpg") == first


async def test_a_checksum_mismatch_raises_and_leaves_nothing(
    storage: LocalObjectStorage, tmp_path: Path
) -> None:
    with pytest.raises(ChecksumMismatch):
        await storage.put_bytes("alice/a.jpg", b"bytes", sha256_hex=sha(b"other"), content_type="x")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield os.urandom(4096)

    with pytest.raises(ChecksumMismatch):
        await storage.put_multipart("alice/b.jpg", chunks(), sha256_hex=sha(b""), content_type="x")
    assert await storage.head("alice/a.jpg") is None
    assert [p for p in files_under(tmp_path) if p != KEY_FILE] == []


async def test_a_failing_stream_leaves_nothing(storage: LocalObjectStorage, tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 4096
        raise ConnectionResetError("upstream went away")

    with pytest.raises(ConnectionResetError):
        await storage.put_multipart("alice/c.jpg", broken(), sha256_hex=sha(b""), content_type="x")
    assert files_under(tmp_path) == []


async def test_a_multipart_write_keeps_the_whole_sha256(storage: LocalObjectStorage) -> None:
    parts = [os.urandom(4096) for _ in range(30)]

    async def chunks() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    whole = b"".join(parts)
    await storage.put_multipart("alice/big", chunks(), sha256_hex=sha(whole), content_type="x")
    info = await storage.head("alice/big")
    assert info is not None and info.metadata == {"sha256": sha(whole)}
    assert info.checksum_sha256 == b64_sha256(sha(whole))
    assert await storage.get_bytes("alice/big") == whole


async def test_an_overwrite_is_atomic_and_leaves_no_temporary_file(
    storage: LocalObjectStorage, tmp_path: Path
) -> None:
    for data in (b"first version", b"second"):
        await storage.put_bytes("k", data, sha256_hex=sha(data), content_type="text/plain")
    assert await storage.get_bytes("k") == b"second"
    names = os.listdir(tmp_path / BUCKET)
    assert sorted(names) == [".sluice-meta.k.json", "k"]


async def test_a_sidecar_of_other_bytes_is_not_trusted(storage: LocalObjectStorage) -> None:
    await storage.put_bytes("k", b"one", sha256_hex=sha(b"one"), content_type="text/plain")
    (storage.root / BUCKET / "k").unlink()
    (storage.root / BUCKET / "k").write_bytes(b"two")  # another inode: a torn overwrite
    info = await storage.head("k")
    assert info is not None and info.size_bytes == 3 and info.checksum_sha256 is None


async def test_missing_objects_answer_as_s3_does(storage: LocalObjectStorage) -> None:
    assert await storage.head("nobody/x") is None
    with pytest.raises(SourceMissing):
        await storage.get_bytes("nobody/x")
    with pytest.raises(SourceMissing):
        async with storage.open_stream("nobody/x"):
            pass
    await storage.delete("nobody/x")  # no error, as DeleteObject


async def test_list_is_in_segment_order_and_delete_prunes(storage: LocalObjectStorage) -> None:
    for key in ("b/2", "a-x/1", "a/9", "a/1", "a/sub/z"):
        await storage.put_bytes(key, key.encode(), sha256_hex=sha(key.encode()), content_type="x")
    assert [i.key async for i in storage.list_objects()] == [
        "a/1",
        "a/9",
        "a/sub/z",
        "a-x/1",
        "b/2",
    ]
    assert [i.key async for i in storage.list_objects("a/")] == ["a/1", "a/9", "a/sub/z"]
    listed = [i async for i in storage.list_objects("b/")]
    assert [(i.key, i.size_bytes) for i in listed] == [("b/2", 3)]
    await storage.delete("a/sub/z")
    assert not (storage.root / BUCKET / "a" / "sub").exists()
    assert await storage.head("a/sub/z") is None
    assert [i.key async for i in storage.list_objects("a/")] == ["a/1", "a/9"]


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../x", "a\\b", "a/\x00"])
async def test_keys_that_leave_the_root_are_refused(
    storage: LocalObjectStorage, tmp_path: Path, key: str
) -> None:
    with pytest.raises(InvalidSource):
        await storage.put_bytes(key, b"x", sha256_hex=sha(b"x"), content_type="x")
    with pytest.raises(InvalidSource):
        await storage.get_bytes(key)
    assert files_under(tmp_path.parent / tmp_path.name) == []


async def test_symbolic_links_are_never_followed(
    storage: LocalObjectStorage, tmp_path: Path
) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not yours")
    await storage.ping()
    os.symlink(outside, tmp_path / BUCKET / "linked")
    os.symlink(outside / "secret", tmp_path / BUCKET / "file-link")
    assert await storage.head("linked/secret") is None
    assert await storage.head("file-link") is None
    with pytest.raises(SourceMissing):
        await storage.get_bytes("linked/secret")
    with pytest.raises(PermanentError):
        await storage.put_bytes("linked/new", b"x", sha256_hex=sha(b"x"), content_type="x")
    assert os.listdir(outside) == ["secret"]
    assert [i.key async for i in storage.list_objects()] == []


async def test_a_key_under_an_object_is_a_permanent_error(storage: LocalObjectStorage) -> None:
    await storage.put_bytes("a", b"x", sha256_hex=sha(b"x"), content_type="x")
    with pytest.raises(PermanentError) as caught:
        await storage.put_bytes("a/b", b"y", sha256_hex=sha(b"y"), content_type="x")
    assert not isinstance(caught.value, StorageUnavailable)
    assert await storage.head("a/b") is None


async def test_a_missing_root_is_storage_unavailable(tmp_path: Path) -> None:
    storage = storage_at(tmp_path / "not-mounted")
    for call in (
        storage.ping(),
        storage.head("a/b"),
        storage.get_bytes("a/b"),
        storage.put_bytes("a/b", b"x", sha256_hex=sha(b"x"), content_type="x"),
    ):
        with pytest.raises(StorageUnavailable, match="storage root unreachable"):
            await call
    assert not (tmp_path / "not-mounted").exists()
    with pytest.raises(StorageUnavailable):
        secret_from_key_file(tmp_path / "not-mounted")


@pytest.fixture
def read_only_root(tmp_path: Path) -> Iterator[Path]:
    """A directory that cannot be written, even by root: a read-only tmpfs when running as root
    (permissions do not stop root), a mode-0555 directory otherwise."""
    root = tmp_path / "ro"
    root.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(root)], check=True)
        try:
            yield root
        finally:
            subprocess.run(["umount", str(root)], check=True)
    else:
        root.chmod(0o555)
        try:
            yield root
        finally:
            root.chmod(0o755)


async def test_a_read_only_root_is_storage_unavailable(read_only_root: Path) -> None:
    storage = storage_at(read_only_root)
    with pytest.raises(StorageUnavailable):
        await storage.ping()
    with pytest.raises(StorageUnavailable):
        await storage.put_bytes("a/b", b"x", sha256_hex=sha(b"x"), content_type="x")
    assert await storage.head("a/b") is None  # reads still answer


def test_every_process_gets_the_same_key_file(tmp_path: Path) -> None:
    first = secret_from_key_file(tmp_path)
    assert secret_from_key_file(tmp_path) == first and len(first) == 64
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == [KEY_FILE]
