"""``sluice upload``'s argument checks and its outcome table (no gateway needed: nothing is sent
when an argument is refused)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from services.cli import app
from services.cli._follow import Followed
from services.cli.upload import Uploaded, render

runner = CliRunner()
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "photo.webp"


def run(*args: str, **env: str) -> tuple[int, str]:
    done = runner.invoke(app, ["upload", *args], env={"SLUICE_API_KEY": "", **env})
    return done.exit_code, done.output


def test_metadata_that_is_not_a_json_object_is_refused_before_anything_is_sent() -> None:
    code, output = run(str(SAMPLE), "--metadata", "[1, 2]", "--api-key", "k", "--url", "http://x:9")
    assert code == 2 and "must be a JSON object, got list" in output, output
    code, output = run(str(SAMPLE), "--metadata", "{nope", "--api-key", "k")
    assert code == 2 and "not JSON" in output, output


def test_no_api_key_is_refused_and_no_key_is_ever_printed() -> None:
    code, output = run(str(SAMPLE))
    assert code == 2 and "SLUICE_API_KEY" in output
    code, output = run("/nonexistent.jpg", SLUICE_API_KEY="slk_secret")
    assert code == 2 and "does not exist" in output and "slk_secret" not in output


def test_the_table_says_match_only_for_an_available_file_with_the_local_sha256() -> None:
    good = Uploaded(Path("a.jpg"), "ab" * 32, "id-a", followed=Followed(done=True))
    good.followed.status, good.followed.recorded_sha256 = "available", "ab" * 32
    bad = Uploaded(Path("b.pdf"), "cd" * 32, "id-b", followed=Followed(done=True))
    bad.followed.status, bad.followed.reason = "rejected", "infected: Eicar-Test-Signature"
    table, ok = render([good])
    assert ok
    table, ok = render([good, bad])
    assert not ok
    statuses = list(table.columns[2].cells)
    assert "rejected: infected: Eicar-Test-Signature" in str(statuses[1])
    assert list(table.columns[3].cells) == ["match", "—"]
    mismatch = Uploaded(Path("c.jpg"), "ef" * 32, "id-c", followed=Followed(done=True))
    mismatch.followed.status, mismatch.followed.recorded_sha256 = "available", "00" * 32
    table, ok = render([mismatch])
    assert not ok and list(table.columns[3].cells) == ["MISMATCH"]
