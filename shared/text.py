"""Free text made safe to carry in an event and to store in PostgreSQL.

Error texts, reasons and details often come from a library (a decoder's message, a server's
answer) and can hold anything: NUL (U+0000), which PostgreSQL ``text`` and ``jsonb`` cannot
store (``CharacterNotInRepertoireError``), other control characters, lone surrogates that do not
encode to UTF-8, or megabytes of text. :func:`make_safe` turns such a text into one that can
always be stored and shown, keeping what it said readable: each unsafe character becomes its
escape (``\\x00``, ``\\x1b``, ``\\ud800``), and the whole is cut to a bound with a ``…``.
Its validator, :func:`safe_text`, applies it at the event models' boundary (``shared.events``),
so no library text reaches the database raw: a real HEIC's decoder message with NUL bytes once
made every commit of its file fail, and the file stayed ``stored``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

#: C0 controls but tab and line feed, DEL and C1 controls, and lone surrogates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
ELLIPSIS = "…"


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def make_safe(text: str, max_chars: int) -> str:
    """``text`` with every unsafe character escaped, cut to at most ``max_chars`` characters.

    Unsafe: NUL and the other C0 control characters except tab (U+0009) and line feed (U+000A),
    DEL and the C1 controls (U+007F to U+009F), and lone surrogates (U+D800 to U+DFFF). The result
    encodes to UTF-8 and PostgreSQL can store it. A text longer than ``max_chars`` once escaped
    keeps its first ``max_chars - 1`` characters and ends with ``…``.

    Raises:
        ValueError: ``max_chars`` < 1.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    safe = _UNSAFE.sub(_escape, text)
    if len(safe) > max_chars:
        safe = safe[: max_chars - 1] + ELLIPSIS
    return safe


def has_unstorable(text: str) -> bool:
    """Whether ``text`` holds a character PostgreSQL cannot store or UTF-8 cannot encode: NUL or
    a lone surrogate."""
    return "\x00" in text or any("\ud800" <= char <= "\udfff" for char in text)


def safe_text(max_chars: int) -> BeforeValidator:
    """The validator of a free-text field made safe on the way in (:func:`make_safe`, at most
    ``max_chars``), for texts Sluice writes from what a library or a server said (errors,
    reasons, details): ``detail: Annotated[str, safe_text(2048)] = Field(max_length=2048)``."""

    def clean(value: object) -> object:
        return make_safe(value, max_chars) if isinstance(value, str) else value

    return BeforeValidator(clean)


def _storable(value: str) -> str:
    if has_unstorable(value):
        raise ValueError("must not contain NUL (U+0000) or a lone surrogate")
    return value


#: A caller's own text (a name, a kind, a metadata string) is refused, not rewritten, when it
#: holds what cannot be stored: the caller hears why (422, or the event dead-lettered as
#: invalid) instead of finding it changed.
StorableText = Annotated[str, AfterValidator(_storable)]


#: Unicode categories a file name loses: control (Cc), format (Cf: bidi overrides such as
#: U+202E, zero-width characters), line and paragraph separators (Zl, Zp).
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def visible_name(name: str) -> str:
    """``name`` without control, format (bidi, zero-width) and separator characters, stripped:
    what a person reading it sees is what it is ("invoice\\u202egpj.exe" cannot pass for a
    ``.jpg``). Empty if nothing visible is left."""
    return "".join(
        ch for ch in name if unicodedata.category(ch) not in INVISIBLE_CATEGORIES
    ).strip()
