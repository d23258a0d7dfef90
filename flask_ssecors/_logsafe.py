"""Making untrusted values safe to put in a log line.

Request values (origins, ids, paths) are attacker-controlled. Written raw, a CR or LF would start a
forged log line (flask-cors CVE-2024-1681). :func:`escape` renders any string on one line, with
every control character, backslash and non-ASCII character escaped, and bounds its length.
"""

from __future__ import annotations

import typing as t

#: Longest escaped value put in a log line.
MAX_LOGGED_LENGTH: t.Final = 200

_SAFE: t.Final = frozenset(chr(c) for c in range(0x20, 0x7F)) - {"\\", '"'}


def escape(value: object, limit: int = MAX_LOGGED_LENGTH) -> str:
    """Return ``value`` as a double-quoted, single-line, printable ASCII string.

    :param value: usually a header or query value; None is rendered as ``-``.
    :param limit: how many characters of the original to keep; longer values end in ``...``.
    """
    if value is None:
        return "-"
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    if all(char in _SAFE for char in text):
        body = text
    else:
        body = "".join(char if char in _SAFE else _escape_char(char) for char in text)
    return f'"{body}..."' if cut else f'"{body}"'


def _escape_char(char: str) -> str:
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if char == '"':
        return '\\"'
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
