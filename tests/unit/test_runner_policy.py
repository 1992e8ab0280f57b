"""Retry policy and topology names: pure functions the run loop relies on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.retry import (
    HEADER_ATTEMPTS,
    HEADER_ERROR_MESSAGE,
    HEADER_ERROR_TYPE,
    HEADER_FIRST_FAILED_AT,
    HEADER_LAST_FAILED_AT,
    HEADER_STAGE,
    FailureHistory,
    attempt_of,
    backoff_delay_s,
    failure_headers,
    retry_budget_s,
)
from shared.topology import (
    STAGE_BINDINGS,
    STAGES,
    TRANSFORMS,
    WORKERS,
    Topology,
    accepted_event_types,
)


@given(st.integers(min_value=1, max_value=40), st.floats(0.01, 10), st.floats(0.01, 600))
def test_backoff_is_jittered_between_half_and_all_of_the_exponential_ceiling(
    attempt: int, base: float, ceiling: float
) -> None:
    delay = backoff_delay_s(attempt, base, ceiling)
    cap = min(ceiling, base * 2 ** (attempt - 1))
    assert cap / 2 - 1e-9 <= delay <= cap + 1e-9


def test_retry_budget_is_the_sum_of_the_backoff_floors() -> None:
    assert retry_budget_s(3, 1.0, 60.0) == 0.5 + 1.0
    assert retry_budget_s(5, 2.0, 10.0) == 1.0 + 2.0 + 4.0 + 5.0
    assert retry_budget_s(1, 1.0, 60.0) == 0


def test_backoff_is_random() -> None:
    assert len({backoff_delay_s(5, 1.0, 60.0) for _ in range(20)}) > 1


def test_every_stage_has_quorum_queue_with_dead_lettering() -> None:
    topology = Topology(prefix="sluice", delivery_limit=5)
    for stage in (*STAGES, *TRANSFORMS):
        args = topology.stage_queue_arguments(stage)
        assert args["x-queue-type"] == "quorum"
        assert args["x-dead-letter-exchange"] == "sluice.dlx"
        assert args["x-dead-letter-strategy"] == "at-least-once"
        assert args["x-overflow"] == "reject-publish"
        assert args["x-delivery-limit"] == 5
        retry = topology.retry_queue_arguments(stage)
        assert retry["x-dead-letter-exchange"] == ""
        assert retry["x-dead-letter-routing-key"] == topology.queue(stage)
    # + the ingress; the optional text transforms have their three queues each too.
    assert len(set(topology.all_queues())) == 3 * (len(STAGES) + 1 + len(TRANSFORMS) + 1) + 2
    fallback = topology.stage_queue_arguments("fallback")
    assert fallback["x-dead-letter-routing-key"] == "store"  # its failures: the store DLQ


def test_each_worker_takes_the_event_types_its_queue_receives() -> None:
    for stage in STAGES:
        assert accepted_event_types(stage) == set(STAGE_BINDINGS[stage])
    assert accepted_event_types("scan") == {"file.received", "file.rescan_requested"}
    # The fallback's queue takes the store stage's dead letters: file.scanned events.
    assert accepted_event_types("fallback") == {"file.scanned"}
    assert "file.committed" not in accepted_event_types("commit")
    # The ingress takes upstream services' file.received, from its own exchange.
    assert accepted_event_types("ingress") == {"file.received"}
    # The text transforms read stored originals; the commit stage records what they found.
    assert accepted_event_types("pdftext") == accepted_event_types("ocr") == {"file.stored"}
    assert {"file.text_extracted", "file.text_failed"} <= accepted_event_types("commit")
    assert set(WORKERS) == {"ingress", *STAGES, "fallback"}
    with pytest.raises(KeyError):
        accepted_event_types("gateway")


def test_attempts_count_per_stage() -> None:
    assert attempt_of({}, "store") == 1
    assert attempt_of({HEADER_STAGE: "store", HEADER_ATTEMPTS: 3}, "store") == 3
    # A store dead letter handed on to the fallback worker starts the fallback at attempt 1.
    assert attempt_of({HEADER_STAGE: "store", HEADER_ATTEMPTS: 3}, "fallback") == 1


def test_failure_headers_keep_the_first_failure_and_cut_long_messages() -> None:
    first = failure_headers(
        {"traceparent": "t"}, stage="scan", error_type="E", error_message="x" * 5000, attempts=2
    )
    assert first["traceparent"] == "t"
    assert (first[HEADER_STAGE], first[HEADER_ERROR_TYPE], first[HEADER_ATTEMPTS]) == (
        "scan",
        "E",
        2,
    )
    assert len(first[HEADER_ERROR_MESSAGE]) == 1000 and first[HEADER_ERROR_MESSAGE].endswith("…")
    again = failure_headers(first, stage="scan", error_type="E", error_message="y", attempts=3)
    assert again[HEADER_FIRST_FAILED_AT] == first[HEADER_FIRST_FAILED_AT]
    assert again[HEADER_LAST_FAILED_AT] >= first[HEADER_LAST_FAILED_AT]


def test_failure_history_reads_back_what_the_headers_record() -> None:
    headers = failure_headers({}, stage="store", error_type="E", error_message="m", attempts=3)
    assert FailureHistory.from_headers(headers) == FailureHistory("store", "E", "m", 3)
    assert FailureHistory.from_headers({HEADER_ERROR_TYPE: b"E"}).error_type == "E"
    assert FailureHistory.from_headers({}) == FailureHistory()
