"""Pinned response headers: a stream's headers cannot change once its view returned.

A stream response's headers are complete when the view returns. Afterwards, through
:class:`PinnedHeaders`:

- the stream headers (``Content-Type``, ``Cache-Control``, ``X-Accel-Buffering``) cannot change,
  and ``Vary`` cannot lose ``Origin``: attempting it raises :class:`HeaderConflictError`;
- hop-by-hop headers (``Connection``, ``Keep-Alive``, ``Transfer-Encoding``…), illegal in WSGI
  and in HTTP/2, and ``Content-Length`` / ``Content-Encoding``, which would make proxies or
  browsers buffer or mangle the stream, can never be added;
- ``Access-Control-*`` belong to this extension: a change raises in debug/testing, and in
  production is logged as an error and ignored, never silently applied;
- other headers (``Set-Cookie`` from the session, say) may still be added until the response
  starts; from then on every change raises, since it could no longer reach the client.
"""

from __future__ import annotations

import functools
import typing as t

from werkzeug.datastructures import Headers

from ._fetch import CORS_HEADER_PREFIX
from ._log import get_logger
from .exceptions import HeaderConflictError

#: Headers that a stream response sets and nobody may change.
PINNED: t.Final = frozenset({"content-type", "cache-control", "x-accel-buffering"})
#: Headers that a stream response never carries.
FORBIDDEN: t.Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "content-encoding",
    }
)
logger = get_logger(__name__)


def _values(items: t.Iterable[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in items if k.lower() == name]


def _cors_items(items: t.Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in items if k.lower().startswith(CORS_HEADER_PREFIX)]


def _vary_has_origin(items: t.Iterable[tuple[str, str]]) -> bool:
    return any(
        token.strip().lower() in ("origin", "*")
        for value in _values(items, "vary")
        for token in value.split(",")
    )


def _guard(name: str) -> t.Callable[..., t.Any]:
    original = getattr(Headers, name)

    @functools.wraps(original)
    def guarded(self: PinnedHeaders, *args: t.Any, **kwargs: t.Any) -> t.Any:
        if not self._pinned:
            return original(self, *args, **kwargs)
        before = list(self._list)
        result = original(self, *args, **kwargs)
        self._check(before)
        return result

    return guarded


class PinnedHeaders(Headers):
    """Response headers that enforce the rules above once :meth:`pin` was called.

    :param defaults: the initial headers.
    :param strict: raise on ``Access-Control-*`` changes (debug/testing) instead of logging.
    """

    def __init__(self, defaults: t.Any = None, *, strict: bool = True) -> None:
        self._pinned = False
        self._locked = False
        self._strict = strict
        super().__init__(defaults)

    def pin(self) -> None:
        """Pin the headers as they are now (called when the view returns)."""
        problems = [k for k, _ in self._list if k.lower() in FORBIDDEN]
        if problems:
            raise HeaderConflictError(problems[0], "a stream response cannot carry this header")
        self._pinned = True

    def lock(self) -> None:
        """Refuse every change from now on (called when the response starts)."""
        self._pinned = True
        self._locked = True

    @property
    def locked(self) -> bool:
        """Whether the response started (every change is refused)."""
        return self._locked

    def _check(self, before: list[tuple[str, str]]) -> None:
        after = self._list
        if after == before:
            return
        if self._locked:
            self._list[:] = before
            raise HeaderConflictError(
                "headers", "the stream has started; its headers can no longer change"
            )
        for name in PINNED:
            if _values(before, name) != _values(after, name):
                self._list[:] = before
                raise HeaderConflictError(name, "a stream response's headers are pinned")
        for key, _ in after:
            if key.lower() in FORBIDDEN:
                self._list[:] = before
                raise HeaderConflictError(key, "a stream response cannot carry this header")
        if not _vary_has_origin(after):
            self._list[:] = before
            raise HeaderConflictError("Vary", "a stream response's Vary must keep Origin")
        if _cors_items(before) != _cors_items(after):
            self._list[:] = before
            detail = (
                "set by something other than flask-ssecors (a view, an after_request hook or "
                "another CORS extension); flask-ssecors owns the CORS headers of policed routes"
            )
            if self._strict:
                raise HeaderConflictError("Access-Control-*", detail)
            logger.error("header conflict ignored: Access-Control-*: %s", detail)

    __setitem__ = _guard("__setitem__")
    __delitem__ = _guard("__delitem__")
    add = _guard("add")
    set = _guard("set")
    setlist = _guard("setlist")
    setdefault = _guard("setdefault")
    setlistdefault = _guard("setlistdefault")
    extend = _guard("extend")
    update = _guard("update")
    remove = _guard("remove")
    pop = _guard("pop")
    popitem = _guard("popitem")
    clear = _guard("clear")
    __ior__ = _guard("__ior__")
