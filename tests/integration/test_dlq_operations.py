"""Dead-letter filters, show, replay (filters, order, --limit, --rate, --dry-run) and purge,
against the real RabbitMQ under the prefix ``t_dlq_ops``; the commands run as subprocesses
where a user would type them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.events import FileCommitted, FileDeadLetterPurged, parse_event
from shared.ops.deadletters import (
    EVERYTHING,
    Selection,
    list_dead_letters,
    purge,
    replay,
    show_dead_letter,
)
from tests.integration.dlq_support import (
    TRACEPARENT,
    Broker,
    dead_letter,
    fresh_broker,
    received,
    sluice,
)

pytestmark = pytest.mark.integration

RECENT = datetime.now(UTC) - timedelta(minutes=5)
OLD = datetime.now(UTC) - timedelta(days=3)


@pytest.fixture
async def b(services: Any) -> AsyncIterator[Broker]:
    """A freshly declared ``t_dlq_ops`` topology on the real RabbitMQ."""
    async with fresh_broker("t_dlq_ops") as fresh:
        yield fresh


async def mixed(b: Broker) -> dict[str, list[str]]:
    """Dead letters in three stages: message ids by label, each list in queue order."""
    publisher = await b.publisher()
    ids: dict[str, list[str]] = {"scan_old": [], "scan_new": [], "store": [], "commit": []}
    for _ in range(3):
        ids["scan_old"].append(
            await dead_letter(publisher, b.topology, received(), first_failed=OLD)
        )
        ids["scan_new"].append(
            await dead_letter(
                publisher,
                b.topology,
                received(),
                error_type="SourceMissing",
                error_message="spool://x.bin is gone",
                attempts=1,
                first_failed=RECENT,
            )
        )
    ids["store"].append(
        await dead_letter(
            publisher,
            b.topology,
            received("bob"),
            stage="store",
            error_type="ChecksumMismatch",
            first_failed=RECENT,
        )
    )
    ids["commit"].append(
        await dead_letter(
            publisher,
            b.topology,
            b"{not json",
            stage="commit",
            error_type="InvalidEvent",
            first_failed=OLD,
        )
    )
    return ids


def interleaved(ids: dict[str, list[str]]) -> list[str]:
    return [i for pair in zip(ids["scan_old"], ids["scan_new"], strict=True) for i in pair]


async def ids_of(b: Broker, selection: Selection = EVERYTHING) -> list[str | None]:
    return [
        letter.message_id for letter in await list_dead_letters(b.connection, b.topology, selection)
    ]


async def test_list_filters(b: Broker) -> None:
    ids = await mixed(b)
    scan = interleaved(ids)

    assert await ids_of(b) == [*scan, *ids["store"], *ids["commit"]]  # stage by stage
    assert await ids_of(b, Selection(stages=("store", "commit"))) == ids["store"] + ids["commit"]
    assert await ids_of(b, Selection(error_type="SourceMissing")) == ids["scan_new"]
    assert await ids_of(b, Selection(older_than_s=86400)) == ids["scan_old"] + ids["commit"]
    [store] = await list_dead_letters(b.connection, b.topology, Selection(stages=("store",)))
    assert store.file_id is not None and store.owner == "bob"
    assert await ids_of(b, Selection(file_id=store.file_id.upper())) == ids["store"]
    assert await ids_of(b, Selection(file_id=str(uuid.uuid4()))) == []

    code, out, err = await sluice(
        b.env(), "dlq", "list", "--stage", "scan", "--stage", "store",
        "--older-than", "1m", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert [item["message_id"] for item in json.loads(out)] == scan + ids["store"]
    code, out, _ = await sluice(b.env(), "dlq", "list", "--error", "SourceMissing")
    assert code == 0
    assert "scan" in out and out.count("SourceMissing") == 3 and "ChecksumMismatch" not in out
    code, _, err = await sluice(b.env(), "dlq", "list", "--older-than", "soon")
    assert code == 2 and "not a duration" in err
    assert await ids_of(b) == [*scan, *ids["store"], *ids["commit"]]  # nothing moved


async def test_show_gives_the_whole_message_and_exits_1_when_absent(b: Broker) -> None:
    ids = await mixed(b)
    [store_id] = ids["store"]

    shown = await show_dead_letter(b.connection, b.topology, store_id)

    assert shown is not None
    assert (shown.letter.stage, shown.letter.error_type) == ("store", "ChecksumMismatch")
    assert shown.properties["message_id"] == store_id
    assert shown.properties["type"] == "file.received"
    assert shown.headers["traceparent"] == TRACEPARENT
    assert shown.headers["x-sluice-error-type"] == "ChecksumMismatch"
    assert shown.body["owner"] == "bob" and shown.body["event_id"] == store_id
    assert [entry["event"] for entry in shown.history] == ["failed"]
    code, out, err = await sluice(b.env(), "dlq", "show", store_id, "--json")
    assert code == 0, err
    assert json.loads(out)["body"]["owner"] == "bob"
    code, out, _ = await sluice(b.env(), "dlq", "show", store_id)
    assert code == 0 and "ChecksumMismatch" in out and '"owner": "bob"' in out

    [commit_id] = ids["commit"]
    junk = await show_dead_letter(b.connection, b.topology, commit_id)
    assert junk is not None and junk.body == "{not json"
    missing = str(uuid.uuid4())
    assert await show_dead_letter(b.connection, b.topology, missing) is None
    code, _, err = await sluice(b.env(), "dlq", "show", missing)
    assert code == 1 and f"no dead-letter queue holds a message with id {missing}" in err
    assert await ids_of(b) == [*interleaved(ids), *ids["store"], *ids["commit"]]


async def test_filtered_replay_moves_the_matching_and_keeps_the_rest_in_order(b: Broker) -> None:
    publisher = await b.publisher()
    ids = []
    for n in range(40):  # > 32 held: their order would be lost if given back carelessly
        error = "SourceMissing" if n % 3 == 0 else "ScannerUnavailable"
        ids.append(await dead_letter(publisher, b.topology, received(), error_type=error))
    matching = ids[::3]
    rest = [i for i in ids if i not in matching]

    first = await replay(
        b.connection,
        b.topology,
        Selection(error_type="SourceMissing"),
        settings=b.amqp,
        limit=4,
    )
    assert (first.replayed, list(first.message_ids)) == (4, matching[:4])
    code, out, err = await sluice(b.env(), "dlq", "replay", "scan", "--error", "SourceMissing")
    assert code == 0, err
    assert f"replayed {len(matching) - 4} dead letter(s)" in out

    moved = await b.drain(b.topology.queue("scan"))
    assert [m.message_id for m in moved] == matching
    assert await ids_of(b) == rest  # the others, in their order


async def test_the_mirrors_dead_letters_are_listed_and_replayed_to_the_mirror(b: Broker) -> None:
    """The optional mirror's dead-letter queue is declared with the others: its letters are
    listed with the rest and a replay sends them to the mirror's own queue, bound or not."""
    publisher = await b.publisher()
    committed = received().follow(FileCommitted, status="available")
    scan_id = await dead_letter(publisher, b.topology, received())
    mirror_id = await dead_letter(
        publisher,
        b.topology,
        committed,
        stage="mirror",
        error_type="StorageUnavailable",
        error_message="mirror S3 down",
    )

    assert await ids_of(b) == [scan_id, mirror_id]  # stage by stage, the mirror last
    [letter] = await list_dead_letters(b.connection, b.topology, Selection(stages=("mirror",)))
    assert (letter.stage, letter.error_type, letter.file_id) == (
        "mirror",
        "StorageUnavailable",
        str(committed.file_id),
    )
    code, out, err = await sluice(b.env(), "dlq", "replay", "--stage", "mirror")
    assert code == 0, err
    assert "replayed 1 dead letter(s)" in out

    [moved] = await b.drain(b.topology.queue("mirror"))
    assert moved.message_id == mirror_id
    assert parse_event(moved.body).event_id == committed.event_id
    assert await ids_of(b) == [scan_id]


async def test_a_stage_queue_an_older_release_never_declared_is_taken_as_empty(
    b: Broker,
) -> None:
    """A broker still run by services of a release before the mirror has no mirror queues: the
    dead-letter commands take its dead-letter queue as empty rather than failing, while a
    selection of only that stage (or a wrong prefix) is still a configuration error."""
    publisher = await b.publisher()  # declares the topology, the mirror's queues with it
    scan_id = await dead_letter(publisher, b.topology, received())
    channel = await b.connection.channel()
    await channel.queue_delete(b.topology.dead_letter_queue("mirror"))
    await channel.close()

    assert await ids_of(b) == [scan_id]
    code, out, err = await sluice(b.env(), "dlq", "list")
    assert code == 0, err
    assert scan_id in out
    code, out, err = await sluice(b.env(), "dlq", "show", scan_id)
    assert code == 0, err
    code, out, err = await sluice(b.env(), "dlq", "list", "--stage", "mirror")
    assert code != 0
    assert f"no queue {b.topology.dead_letter_queue('mirror')}" in out + err
    code, out, err = await sluice(b.env(), "dlq", "replay")
    assert code == 0, err
    assert "replayed 1 dead letter(s)" in out
    [moved] = await b.drain(b.topology.queue("scan"))
    assert moved.message_id == scan_id


async def test_rate_spaces_the_publishes(b: Broker) -> None:
    publisher = await b.publisher()
    ids = [await dead_letter(publisher, b.topology, received()) for _ in range(6)]

    started = time.monotonic()
    result = await replay(b.connection, b.topology, settings=b.amqp, rate_per_s=10)
    elapsed = time.monotonic() - started

    assert list(result.message_ids) == ids
    assert elapsed >= (6 - 1) / 10
    assert [m.message_id for m in await b.drain(b.topology.queue("scan"))] == ids


async def test_dry_run_moves_nothing(b: Broker) -> None:
    ids = await mixed(b)
    everything = await ids_of(b)

    result = await replay(
        b.connection,
        b.topology,
        Selection(older_than_s=3600),
        settings=b.amqp,
        dry_run=True,
        limit=2,
    )
    assert result.dry_run and result.replayed == 0
    assert list(result.message_ids) == ids["scan_old"][:2]
    code, out, err = await sluice(b.env(), "dlq", "replay", "--dry-run", "--json")
    assert code == 0, err
    planned = json.loads(out)
    assert planned["dry_run"] is True and planned["depth_at_start"] == len(everything)
    assert planned["message_ids"] == everything
    assert [letter["stage"] for letter in planned["letters"]][-2:] == ["store", "commit"]
    code, out, _ = await sluice(b.env(), "dlq", "replay", "--dry-run", "--stage", "store")
    assert code == 0 and "would replay 1 of 1" in out
    assert await ids_of(b) == everything
    for stage in ("scan", "store", "commit"):
        assert await b.depth(b.topology.queue(stage)) == 0


async def test_purge_refuses_without_yes_then_records_each_purge(b: Broker) -> None:
    ids = await mixed(b)
    before = await ids_of(b)

    code, out, err = await sluice(b.env(), "dlq", "purge", "--error", "SourceMissing")
    assert code == 2 and "add --yes" in err
    assert "would purge 3 dead letter(s)" in out
    code, _, err = await sluice(b.env(), "dlq", "purge", "--stage", "commit", "--yes")
    assert code == 2 and "--reason" in err
    assert await ids_of(b) == before

    code, out, err = await sluice(
        b.env(), "dlq", "purge", "--error", "SourceMissing", "--yes",
        "--reason", "upstream deleted the bytes",
    )  # fmt: skip
    assert code == 0, err
    assert "purged 3 dead letter(s), 3 recorded" in out
    assert await ids_of(b) == [*ids["scan_old"], *ids["store"], *ids["commit"]]
    records = [parse_event(m.body) for m in await b.drain(b.topology.queue("commit"))]
    assert all(isinstance(r, FileDeadLetterPurged) for r in records)
    assert [str(r.dead_letter_event_id) for r in records] == ids["scan_new"]  # type: ignore[attr-defined]
    record = records[0]
    assert isinstance(record, FileDeadLetterPurged)
    assert (record.stage, record.error_type, record.reason) == (
        "scan",
        "SourceMissing",
        "upstream deleted the bytes",
    )
    assert record.error_message == "spool://x.bin is gone"

    result = await purge(
        b.connection, b.topology, Selection(stages=("commit",)), settings=b.amqp, reason="junk"
    )
    assert (result.purged, result.recorded) == (1, 0)  # not an event: logged only
    assert await b.depth(b.topology.queue("commit")) == 0
    assert await ids_of(b) == [*ids["scan_old"], *ids["store"]]
