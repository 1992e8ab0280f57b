"""The log redactor and the trace-context processor (pure functions; no services)."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider

from shared.telemetry.logging import MASK, Redactor, add_trace_context

PRESIGNED = (
    "http://127.0.0.1:8333/sluice/alice/f.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=sluice%2F20300101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20300101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=" + "ab12" * 16
)


def test_secret_shapes_are_masked_wherever_they_sit() -> None:
    redact = Redactor().redact
    assert redact("postgresql://postgres:hunter2-pass@db:5432/x") == (
        f"postgresql://postgres:{MASK}@db:5432/x"
    )
    masked = redact(f"url={PRESIGNED} next")
    assert "ab12ab12" not in masked and f"X-Amz-Signature={MASK} next" in masked
    assert "X-Amz-Expires=900" in masked, "the rest of the URL stays readable"
    key = "slk_" + "A" * 43
    assert redact(f"bad key {key}!") == f"bad key slk_{MASK}!"
    assert redact("Authorization: Bearer abcdefgh12345678") == f"Authorization: Bearer {MASK}"


def test_known_secrets_and_secret_named_fields_are_masked_in_nested_values() -> None:
    redactor = Redactor(secrets=["s3-secret-value-42", "short"])
    event = redactor(
        None,
        "info",
        {
            "event": "boto said s3-secret-value-42",
            "context": {"password": "anything", "detail": ["x s3-secret-value-42 y"]},
            "api_key": "k",
            "owner": "short",  # too short to search for: masked only where it has a shape
            "size_bytes": 12,
        },
    )
    assert event == {
        "event": f"boto said {MASK}",
        "context": {"password": MASK, "detail": [f"x {MASK} y"]},
        "api_key": MASK,
        "owner": "short",
        "size_bytes": 12,
    }


def test_trace_context_is_added_inside_a_span_only() -> None:
    assert add_trace_context(None, "info", {"event": "x"}) == {"event": "x"}
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        event = add_trace_context(None, "info", {"event": "x"})
    context = span.get_span_context()
    assert event["trace_id"] == f"{context.trace_id:032x}"
    assert event["span_id"] == f"{context.span_id:016x}"


def test_known_secrets_include_the_mirror_key_and_each_fallback_key(monkeypatch: object) -> None:
    """``known_secrets`` (what every command masks): without fallback keys it still works; with
    them, the JSON and each key are masked."""
    import pytest

    from services.cli._common import known_secrets
    from shared.settings import Settings

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("SLUICE_MIRROR_SECRET_KEY", "mirror-secret-1234")
    plain = known_secrets(Settings.from_env())
    assert "mirror-secret-1234" in plain
    monkeypatch.setenv("SLUICE_FALLBACK_ENCRYPTION_KEYS", '{"k1": "c2VjcmV0LWtleS1iYXNlNjQ="}')
    assert "c2VjcmV0LWtleS1iYXNlNjQ=" in known_secrets(Settings.from_env())
