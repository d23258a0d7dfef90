"""Every exception flask-ssecors raises.

The hierarchy::

    SSECorsError
     ├── ConfigError          bad configuration, raised at ``init_app`` or decoration time
     ├── EventFieldError      an event field that cannot be sent (CR, LF or NUL in ``id``/``event``)
     ├── ChannelError         a channel name a broker cannot store
     ├── HeaderConflictError  something else tried to set headers this extension owns
     ├── TokenRefused         a stream token does not grant what the request asks for
     ├── SetupError           used where it is not set up (also a RuntimeError)
     ├── UsageError           an argument of the wrong type or value (also a TypeError and a
     │                        ValueError)
     ├── SubscriptionClosed   a subscription was closed or dropped (in flask_ssecors.brokers)
     └── BrokerError          the broker failed
          └── BrokerUnavailable   the broker cannot be reached right now

A hostile or malformed *request* never raises one of these out of the extension: it is
answered (``403``, or the value treated as absent) and logged safely.
"""

from __future__ import annotations

import typing as t

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "ChannelError",
    "ConfigError",
    "ConfigIssue",
    "EventFieldError",
    "HeaderConflictError",
    "SSECorsError",
    "SetupError",
    "TokenRefused",
    "UsageError",
]


class SSECorsError(Exception):
    """The base of every exception that flask-ssecors defines."""


class ConfigIssue(t.NamedTuple):
    """One problem found in the configuration.

    :param key: the configuration key (``SSECORS_ALLOWED_ORIGINS``) or keyword argument.
    :param value: the offending value, as given.
    :param reason: what is wrong and what to do instead.
    """

    key: str
    value: object
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.value!r}: {self.reason}"


class ConfigError(SSECorsError):
    """The configuration was refused.

    Every problem found is collected, so one run shows all of them.

    :param issues: the problems, as :class:`ConfigIssue` items.
    :param where: what was being configured, for the first line of the message.
    """

    #: Every problem found, not just the first.
    issues: tuple[ConfigIssue, ...]

    def __init__(self, issues: t.Iterable[ConfigIssue], where: str = "flask-ssecors") -> None:
        self.issues = tuple(issues)
        count = len(self.issues)
        lines = [f"{where}: {count} configuration problem{'s' if count != 1 else ''}:"]
        lines.extend(f"  - {issue}" for issue in self.issues)
        super().__init__("\n".join(lines))


class EventFieldError(SSECorsError, ValueError):
    """An event field cannot be written to an event stream.

    ``event`` and ``id`` may not contain CR, LF or NUL; ``retry`` must be a non-negative
    integer. The value is refused rather than silently stripped.

    :param field: the field name.
    :param value: the offending value.
    :param reason: what is wrong.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"Event field {field!r} = {value!r}: {reason}")


class ChannelError(SSECorsError, ValueError):
    """A channel name that no broker can store: empty, not a ``str``, with a control character
    (C0, DEL, C1) or a lone surrogate, or longer than
    :data:`flask_ssecors.brokers.MAX_CHANNEL_BYTES`.

    Raised by ``publish`` and ``subscribe`` before anything is stored, so nothing is left
    behind. A stream view that subscribes to such a channel gets ``400`` (the extension
    answers).

    :param channel: the name, as given.
    :param reason: what is wrong.

    .. versionadded:: 0.1
    """

    def __init__(self, channel: object, reason: str) -> None:
        self.channel = channel
        self.reason = reason
        super().__init__(f"channel {channel!r:.80}: {reason}")


class HeaderConflictError(SSECorsError):
    """Something other than this extension set a header that the extension owns.

    Raised when a view, an ``after_request`` hook or another extension (such as flask-cors)
    sets ``Access-Control-*`` on a policed response, or changes a stream response's pinned
    headers after the view returned. In production (neither ``DEBUG`` nor ``TESTING``) the
    ``Access-Control-*`` case is logged as an error instead, and this extension's headers win.

    :param header: the header name.
    :param detail: what happened.
    """

    def __init__(self, header: str, detail: str) -> None:
        self.header = header
        self.detail = detail
        super().__init__(f"{header}: {detail}")


class BrokerError(SSECorsError):
    """The broker failed to publish or subscribe."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached right now; nothing was published.

    Raised by :meth:`~flask_ssecors.SSECors.publish` within a bounded time rather than
    dropping the event silently or hanging the request.
    """


class TokenRefused(SSECorsError):
    """A stream token does not grant what the request asks for.

    Raised by :meth:`~flask_ssecors.SSECors.subscribe` when the request's token does not grant
    the channel. A stream view need not catch it: the extension answers the request with
    :attr:`status` before any byte of the stream is sent, and logs :attr:`reason`. The token
    itself is never part of the message.

    :param reason: one of the :class:`flask_ssecors.tokens.Refusal` labels.
    :param status: the status of the answer (``401`` to authenticate again, ``403`` otherwise).

    .. versionadded:: 0.1
    """

    def __init__(self, reason: str, status: int = 403) -> None:
        self.reason = reason
        self.status = status
        super().__init__(f"stream token refused: {reason}")


class SetupError(SSECorsError, RuntimeError):
    """flask-ssecors is used where it is not set up: outside an application context, on an app
    it is not registered on (or registered twice), through another instance than the app's, or
    for stream tokens without ``SECRET_KEY``. A programming error, raised at once.

    It is also a :class:`RuntimeError`, which these errors were before 0.1.0.

    .. versionadded:: 0.1
    """


class UsageError(SSECorsError, TypeError, ValueError):
    """An argument that flask-ssecors cannot use: of the wrong type (a stream view that returns
    a ``str``, ``subscribe()`` without a channel) or out of range (a token's ``max_age``). A
    programming error, raised at once; never raised because of what a client sent.

    It is also a :class:`TypeError` and a :class:`ValueError`, so code that caught either keeps
    working.

    .. versionadded:: 0.1
    """
