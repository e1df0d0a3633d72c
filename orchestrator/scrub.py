"""Text made safe to keep: key-shaped substrings redacted, lone surrogates replaced.

``keys`` runs where a server's words enter our errors (``errors.APIError``), so a key the server
quotes back (OpenAI's 401 names the first 8 and last 4 characters of a wrong key) reaches no log
line, exception message or stored ``last_error``. ``surrogates`` makes any ``str`` encodable as
UTF-8 (``os.fsdecode`` of an undecodable file name gives lone surrogates, which JSON encoders,
SQLite and sockets refuse).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["REDACTED", "keys", "surrogates"]

#: What a redacted secret is replaced by.
REDACTED: Final = "[redacted]"

_KEY_SHAPES: Final = re.compile(
    "|".join(
        (
            # OpenAI keys, whole or masked (sk-abcd1***wxyz, sk-proj-abc****wxyz, sk-svcacct-...)
            r"(?<![\w-])sk-[\w*\-]{8,}",
            # a JWT (Azure AD and other bearer tokens)
            r"\beyJ[\w-]{6,}\.[\w-]{6,}(?:\.[\w-]*)?",
        )
    )
)
#: ``Bearer <token>`` and ``api-key: <value>`` style credentials: the name stays, the value goes.
_NAMED: Final = re.compile(
    r"(?i)\b((?:api[-_ ]?key|authorization)[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?|bearer\s+)"
    r"(?!\[redacted\])[^\s\"',;]+"
)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def keys(text: str) -> str:
    """``text`` with every key-shaped substring replaced by ``[redacted]``."""
    if "sk-" not in text and "eyJ" not in text and not _maybe_named(text):
        return text  # the usual case: one pass of cheap substring tests
    text = _KEY_SHAPES.sub(REDACTED, text)
    return _NAMED.sub(lambda m: m.group(1) + REDACTED, text)


def _maybe_named(text: str) -> bool:
    lowered = text.lower()
    return "bearer" in lowered or "key" in lowered or "authorization" in lowered


def surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, so that it encodes as UTF-8."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text
