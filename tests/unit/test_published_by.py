"""Who published a message, as RabbitMQ verified it, kept across Sluice's own republishes
(shared/adapters/broker.py ``verified_publisher``, ``republished``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.adapters.broker import HEADER_PUBLISHED_BY, republished, verified_publisher


@dataclass
class Incoming:
    """The properties of a delivered message that matter here."""

    user_id: str | None
    headers: dict[str, Any] = field(default_factory=dict)
    body: bytes = b"{}"
    content_type: str = "application/json"
    content_encoding: str | None = None
    message_id: str = "m1"
    correlation_id: str | None = None
    type: str = "file.received"
    timestamp: Any = None
    app_id: str | None = None


def test_an_upstream_message_is_vouched_for_by_its_user_id() -> None:
    assert verified_publisher(Incoming("billing"), "sluice") == "billing"  # type: ignore[arg-type]
    assert verified_publisher(Incoming(None), "sluice") is None  # type: ignore[arg-type]


def test_a_forged_published_by_header_is_ignored() -> None:
    forged = Incoming("mallory", {HEADER_PUBLISHED_BY: "billing"})
    assert verified_publisher(forged, "sluice") == "mallory"  # type: ignore[arg-type]
    unsigned = Incoming(None, {HEADER_PUBLISHED_BY: "billing"})
    assert verified_publisher(unsigned, "sluice") is None  # type: ignore[arg-type]


def test_the_publisher_survives_a_retry_and_a_replay_by_sluice() -> None:
    first = Incoming("billing", {"x-sluice-attempts": 1})
    retry = republished(first, first.headers, own_user="sluice")  # type: ignore[arg-type]
    assert retry.user_id == "sluice"
    assert retry.headers[HEADER_PUBLISHED_BY] == "billing"
    again = Incoming(retry.user_id, dict(retry.headers))
    assert verified_publisher(again, "sluice") == "billing"  # type: ignore[arg-type]
    replay = republished(again, again.headers, own_user="sluice")  # type: ignore[arg-type]
    assert verified_publisher(Incoming(replay.user_id, dict(replay.headers)), "sluice") == (  # type: ignore[arg-type]
        "billing"
    )


def test_without_own_user_the_copy_is_vouched_for_by_nobody() -> None:
    copy = republished(Incoming("billing"), {HEADER_PUBLISHED_BY: "x"})  # type: ignore[arg-type]
    assert copy.user_id is None and HEADER_PUBLISHED_BY not in copy.headers
