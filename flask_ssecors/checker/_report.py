"""The report of ``ssecors-check``: the checklist as JSON, or as text safe for a terminal.

Everything in a report may come from the server audited (header values, event ids and names,
status reasons), so the text form escapes every character a terminal would act on: C0 and C1
controls (``ESC`` starts the sequences that clear a screen or retitle a window), ``DEL``,
Unicode format characters (bidirectional overrides) and line or paragraph separators. The JSON
form is produced by :mod:`json`, which escapes control characters itself, and is always valid.

Pure module: no Flask, no gevent.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
import typing as t
import unicodedata

from ._audit import Item

if t.TYPE_CHECKING:
    import collections.abc as cabc

_WIDTH: t.Final = 100
_UNSAFE_CATEGORIES: t.Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def printable(text: str) -> str:
    """``text`` with every character a terminal could act on escaped (``\\x1b``, ``\\u202e``).

    Plain ASCII text is returned as it is; other printable characters (``é``) are kept.
    """
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if char == " " or unicodedata.category(char) not in _UNSAFE_CATEGORIES:
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """The result of :func:`~flask_ssecors.checker._check.check_stream`.

    :param url: the URL checked.
    :param origin: the page origin the check played.
    :param items: the checklist, in a stable order.
    """

    url: str
    origin: str
    items: tuple[Item, ...]

    @property
    def ok(self) -> bool:
        """Whether no item failed (warnings do not fail the check)."""
        return all(item.status != "fail" for item in self.items)

    def to_dict(self) -> dict[str, object]:
        """``{"url", "origin", "ok", "items": [{"id", "status", "detail", "fix"}]}``."""
        return {
            "url": self.url,
            "origin": self.origin,
            "ok": self.ok,
            "items": [item.to_dict() for item in self.items],
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON (ASCII only: every other character escaped)."""
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self, style: cabc.Callable[[str, Item], str] | None = None) -> str:
        """The human-readable checklist, wrapped at 100 columns, control characters escaped.

        :param style: called as ``style(label, item)`` to decorate the status label (colour).
        """
        lines = [f"ssecors-check {printable(self.url)}", f"  origin {printable(self.origin)}", ""]
        for item in self.items:
            label = {"pass": "pass", "warn": "WARN", "fail": "FAIL"}[item.status]
            if style is not None:
                label = style(label, item)
            text = printable(f"{item.id}: {item.detail}")
            body = textwrap.wrap(text, _WIDTH - 8, break_on_hyphens=False) or [""]
            lines.append(f"  {label}  {body[0]}")
            lines.extend(f"        {line}" for line in body[1:])
            if item.fix:
                fix = printable(f"fix: {item.fix}")
                lines.extend(
                    f"        {line}"
                    for line in textwrap.wrap(fix, _WIDTH - 8, break_on_hyphens=False)
                )
        counts = {s: sum(i.status == s for i in self.items) for s in ("pass", "warn", "fail")}
        verdict = "OK" if self.ok else "FAILED"
        lines += [
            "",
            f"{counts['pass']} passed, {counts['warn']} warning{'' if counts['warn'] == 1 else 's'}"
            f", {counts['fail']} failed: {verdict}",
        ]
        return "\n".join(lines)
