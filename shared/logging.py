"""structlog configuration: JSON lines in production, pretty on a terminal.

The chain is structlog's production one (``merge_contextvars → add_log_level →
TimeStamper(utc) → JSONRenderer``, structlog docs "Performance"). The run loop clears the
context vars per message and binds ``file_id``, ``event_id`` and ``stage``.
"""

from __future__ import annotations

import logging
import sys

import structlog

from shared.settings import LogSettings

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def configure(settings: LogSettings | None = None) -> None:
    """Configure structlog once for this process (stderr, level and format from settings)."""
    settings = settings or LogSettings()
    pretty = settings.format == "console" or (settings.format == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if pretty else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            _LEVELS.get(settings.level, logging.ERROR)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
