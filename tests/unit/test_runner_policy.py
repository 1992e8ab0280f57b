"""Retry policy and topology names: pure functions the run loop relies on."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.runner import backoff_delay_s, retry_budget_s
from shared.topology import STAGES, Topology


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
    for stage in STAGES:
        args = topology.stage_queue_arguments(stage)
        assert args["x-queue-type"] == "quorum"
        assert args["x-dead-letter-exchange"] == "sluice.dlx"
        assert args["x-dead-letter-strategy"] == "at-least-once"
        assert args["x-overflow"] == "reject-publish"
        assert args["x-delivery-limit"] == 5
        retry = topology.retry_queue_arguments(stage)
        assert retry["x-dead-letter-exchange"] == ""
        assert retry["x-dead-letter-routing-key"] == topology.queue(stage)
    assert len(set(topology.all_queues())) == 3 * len(STAGES) + 2
    fallback = topology.stage_queue_arguments("fallback")
    assert fallback["x-dead-letter-routing-key"] == "store"  # its failures: the store DLQ
