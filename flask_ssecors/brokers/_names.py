"""Names that brokers store: channels and members. One rule for both, in a module of its own
(the broker protocol and presence both need it)."""

from __future__ import annotations

import re
import typing as t

from ..exceptions import ChannelError

#: Control characters (C0, DEL, C1): never part of a name. CR and LF would end an ``event:``
#: line on a stream of several channels, NUL is refused by browsers, and the rest only ever
#: arrive from a decoded URL (``%0A`` in a path segment) or by mistake.
_CONTROL: t.Final = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_name(name: object, limit: int, what: str = "") -> str:
    """Return ``name`` if it is a non-empty ``str`` of at most ``limit`` bytes of UTF-8
    without control characters, else raise :class:`ChannelError` (its reason starting with
    ``what``: ``"a member "`` for members, nothing for channels)."""
    if not isinstance(name, str):
        raise ChannelError(name, f"{what}must be a str, not {type(name).__name__}")
    if not name:
        raise ChannelError(name, f"{what}must not be empty")
    control = _CONTROL.search(name)
    if control is not None:
        raise ChannelError(
            name,
            f"{what}must not contain control characters (found U+{ord(control.group()):04X} "
            f"at {control.start()}); a URL converter passes decoded ones such as %0A through",
        )
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ChannelError(name, f"{what}cannot be encoded as UTF-8 (a lone surrogate)") from None
    if size > limit:
        raise ChannelError(name, f"{what}is {size} bytes long; the limit is {limit}")
    return name
