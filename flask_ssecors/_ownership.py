"""One owner of the headers: find other code registered to set them, at ``init_app``.

flask-ssecors owns the ``Access-Control-*`` headers of the routes it polices, and a stream's
framing. Two owners give the bugs this library exists to prevent (a reflected origin next to
ours, ``*`` with credentials, a stream buffered by a compressor), so when ``init_app`` runs it
looks at the app's ``after_request`` hooks (the app's and its blueprints').

It raises :class:`~flask_ssecors.exceptions.ConfigError` for what it knows for sure:

- flask-cors (``CORS(app)``): remove it, and police the endpoints pages call with
  ``@sse.cors()`` instead;
- flask-compress configured to compress ``text/event-stream``: a compressed stream is buffered
  by the compressor, so events arrive late and in bursts. Leave ``text/event-stream`` out of
  ``COMPRESS_MIMETYPES``.

It logs a warning for what it can only guess: another hook whose code names an
``Access-Control-*`` header may set one (or only log or delete it). The warning names the hook;
``SSECORS_WARN_CORS_HOOKS = False`` silences it once you have checked. A hook that does set
such a header on a policed response is caught when it acts (below), whatever the setting.

Hooks registered after ``init_app`` cannot be seen here; they are caught when they act: an
``Access-Control-*`` header set on a policed response is a
:class:`~flask_ssecors.exceptions.HeaderConflictError` in debug and testing and a logged error
in production, and a ``Content-Encoding`` added to a stream is always refused with
:class:`~flask_ssecors.exceptions.HeaderConflictError` (an error, never a silent buffer).
WSGI middleware that compresses responses cannot be detected at all: exclude
``text/event-stream`` in its configuration.

.. versionadded:: 0.1
"""

from __future__ import annotations

import functools
import types
import typing as t

from ._fetch import CORS_HEADER_PREFIX
from .exceptions import ConfigIssue

if t.TYPE_CHECKING:
    import collections.abc as cabc

    from flask import Flask

_STREAM_TYPE: t.Final = "text/event-stream"


def _target(hook: object) -> object:
    """The function behind a hook (bound methods, partials and decorated functions)."""
    seen = 0
    while seen < 10:
        seen += 1
        if isinstance(hook, functools.partial):
            hook = hook.func
        elif isinstance(hook, types.MethodType):
            hook = hook.__func__
        elif getattr(hook, "__wrapped__", None) is not None:
            hook = hook.__wrapped__  # type: ignore[attr-defined]
        else:
            break
    return hook


def _module_of(hook: object) -> str:
    return str(getattr(_target(hook), "__module__", "") or "")


def _names_cors_header(code: types.CodeType, depth: int = 0) -> bool:
    """Whether ``code`` (or a function nested in it) holds an ``Access-Control-*`` literal."""
    for const in code.co_consts:
        if isinstance(const, str) and const.lower().startswith(CORS_HEADER_PREFIX):
            return True
        if isinstance(const, types.CodeType) and depth < 5 and _names_cors_header(const, depth + 1):
            return True
    return False


def _describe(hook: object) -> str:
    target = _target(hook)
    name = getattr(target, "__qualname__", None) or type(target).__name__
    return f"{_module_of(hook) or '?'}.{name}"


def _hooks(app: Flask) -> cabc.Iterator[tuple[str, object]]:
    for scope, hooks in app.after_request_funcs.items():
        for hook in hooks:
            yield ("app" if scope is None else f"blueprint {scope!r}"), hook


def other_owners(app: Flask) -> tuple[list[ConfigIssue], list[str]]:
    """Look at the ``after_request`` hooks registered on ``app`` so far.

    :return: the problems found for sure (raised at ``init_app``), and the warnings for hooks
        that only may set ``Access-Control-*`` headers.
    """
    issues: list[ConfigIssue] = []
    warnings: list[str] = []
    for scope, hook in _hooks(app):
        module = _module_of(hook)
        if module.startswith("flask_ssecors"):
            continue
        if module.split(".")[0] == "flask_cors":
            issues.append(
                ConfigIssue(
                    "after_request",
                    _describe(hook),
                    f"flask-cors is registered on this app ({scope}): it sets Access-Control-* "
                    "headers that flask-ssecors owns on the routes it polices, and two owners "
                    "disagree (a reflected origin, '*' with credentials). Remove CORS(app) and "
                    "decorate the endpoints pages call with @sse.cors().",
                )
            )
            continue
        if module.split(".")[0] == "flask_compress":
            if _compresses_streams(app):
                issues.append(
                    ConfigIssue(
                        "COMPRESS_MIMETYPES",
                        _describe(hook),
                        "flask-compress is configured to compress text/event-stream: a "
                        "compressor buffers a stream, so events arrive late and in bursts. "
                        "Remove 'text/event-stream' from COMPRESS_MIMETYPES.",
                    )
                )
            continue
        code = getattr(_target(hook), "__code__", None)
        if isinstance(code, types.CodeType) and _names_cors_header(code):
            warnings.append(
                f"the after_request hook {_describe(hook)} ({scope}) names an "
                "Access-Control-* header: if it sets one, flask-ssecors, which owns them on the "
                "routes it polices, reports a conflict when it does; police the endpoints pages "
                "call with @sse.cors() instead. Set SSECORS_WARN_CORS_HOOKS = False to silence "
                "this warning."
            )
    return issues, warnings


def _compresses_streams(app: Flask) -> bool:
    mimetypes = app.config.get("COMPRESS_MIMETYPES") or ()
    if isinstance(mimetypes, str):
        mimetypes = (mimetypes,)
    return any(
        isinstance(m, str) and m.split(";")[0].strip().lower() in (_STREAM_TYPE, "text/*", "*/*")
        for m in mimetypes
    )
