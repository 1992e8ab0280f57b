"""structlog configuration: JSON lines in production, pretty on a terminal.

The chain is structlog's production one (``merge_contextvars → add_log_level →
TimeStamper(utc) → JSONRenderer``, structlog docs "Performance") with two additions:

- :func:`add_trace_context` adds ``trace_id`` and ``span_id`` (lowercase hex) of the current
  OpenTelemetry span, so a log line leads to its trace and back;
- :class:`Redactor`, last before rendering, masks secrets that should never be written in
  the first place (belt and braces: the code does not log them): URL passwords
  (``scheme://user:***@host``), presigned URL signatures and tokens
  (``X-Amz-Signature=***``), Sluice API keys (``slk_***``), bearer tokens, the values of keys
  named like ``password``/``secret``/``authorization``, and the process's own configured
  secrets wherever they appear.

The run loop clears the context vars per message and binds ``file_id``, ``event_id`` and
``stage``. Records of other libraries (the standard ``logging`` module: uvicorn, aio-pika,
OpenTelemetry's exporter) go through the same chain and renderer, at ``warning`` or above.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from shared.settings import LogSettings
from shared.telemetry.tracing import current_ids

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
MASK = "***"
#: Configured secrets shorter than this are not searched for in log lines (too likely to
#: match ordinary words); the patterns still mask them where they sit in a URL.
MIN_SECRET_CHARS = 8
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host → scheme://user:***@host (RFC 3986 userinfo)
    (re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@"), rf"\g<head>{MASK}@"),
    # presigned URLs: SigV4 signature and session token, SigV2 signature, and the local storage
    # backend's signed URLs (``signature=``)
    (
        re.compile(
            r"(?P<head>[?&](?:X-Amz-Signature|X-Amz-Security-Token|Signature|signature)=)"
            r"[^&\s\"']+"
        ),
        rf"\g<head>{MASK}",
    ),
    (re.compile(r"\bslk_[A-Za-z0-9_-]{8,}"), f"slk_{MASK}"),
    (re.compile(r"(?i)\b(?P<head>bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\g<head>{MASK}"),
)
#: Substrings without which none of the patterns can match (a cheap test first).
_MARKERS = ("://", "Signature=", "Token=", "slk_", "earer", "EARER")
_SECRET_KEYS = re.compile(r"(?i)(password|passwd|secret|authorization|api_?key)")


def add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id`` and ``span_id`` of the current span (nothing outside a span)."""
    ids = current_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


class Redactor:
    """A structlog processor masking secrets in every string of the event dict (see module
    docstring); ``secrets`` are exact values to mask wherever they appear."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted(
            {s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True
        )

    def redact(self, text: str) -> str:
        """``text`` with every known secret and secret shape masked."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        if any(marker in text for marker in _MARKERS):
            for pattern, replacement in _PATTERNS:
                text = pattern.sub(replacement, text)
        return text

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._item(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(v) for v in value]
        return value

    def _item(self, key: str, value: Any) -> Any:
        if value and _SECRET_KEYS.search(key):
            return MASK
        return self._value(value)

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        return {k: self._item(k, v) for k, v in event_dict.items()}


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def configure(settings: LogSettings | None = None, *, secrets: Iterable[str] = ()) -> None:
    """Configure structlog, and the standard ``logging`` root, once for this process (stderr,
    level and format from settings). ``secrets`` (the S3 secret key, passwords in URLs) are
    masked wherever they would appear."""
    settings = settings or LogSettings()
    pretty = settings.format == "console" or (settings.format == "auto" and sys.stderr.isatty())
    renderer: Processor = (
        structlog.dev.ConsoleRenderer() if pretty else structlog.processors.JSONRenderer()
    )
    redactor = Redactor(secrets)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    level = _LEVELS.get(settings.level, logging.ERROR)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            add_trace_context,
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = _StderrHandler()
    handler.set_name("sluice")
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
                add_trace_context,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redactor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "sluice"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(level, logging.WARNING))
