"""Publishing from processes without the Flask app: :class:`Publisher`."""

from __future__ import annotations

import os
import types
import typing as t

from .._config import check_options
from .._config import default_of
from .._urls import POSTGRES_SCHEMES
from .._urls import redact
from ..exceptions import BrokerUnavailable
from ..exceptions import ConfigError
from ..exceptions import ConfigIssue
from ..exceptions import UsageError

if t.TYPE_CHECKING:
    from ..events import Event


class Publisher:
    """Publish events from a process that has no Flask app: a Celery or RQ worker, a cron
    script, a thread pool.

    .. code-block:: python

        from flask_ssecors import Event, Publisher

        with Publisher("redis://localhost:6379/0") as publisher:
            publisher.publish("user:42", Event({"done": True}, event="job"))

    It writes exactly what :meth:`flask_ssecors.SSECors.publish` writes (the same Redis layout
    or PostgreSQL rows, ids and checks), so the app's streams deliver the event, and clients
    resume across it. Give it the settings the app has for :data:`SSECORS_BACKLOG`,
    :data:`SSECORS_CHANNEL_TTL`, :data:`SSECORS_MAX_EVENT_SIZE`, :data:`SSECORS_BROKER_TIMEOUT`
    and, for PostgreSQL, :data:`SSECORS_BROKER_SCHEMA` (as ``backlog``, ``channel_ttl``,
    ``max_event_size``, ``timeout``, ``schema``) when they are not the defaults.

    It needs neither Flask's app nor gevent: it uses plain redis-py connections, or one
    blocking psycopg connection (opened at the first publish; a kept connection found lost is
    replaced once), and is safe to share between threads. With PostgreSQL, the first publish
    creates the broker's schema if it is missing, as the app's broker does. The in-memory
    broker cannot be published to from another process: ``memory://`` is refused.

    With PostgreSQL, :meth:`publish` also takes ``transaction=`` (a psycopg connection, an
    SQLAlchemy ``Connection`` or ``Session``): the event is then kept and delivered if and
    only if that transaction commits.

    :param url: the app's ``SSECORS_BROKER_URL``: ``redis://``, ``rediss://``, ``unix://``,
        ``redis+sentinel://``, ``redis+cluster://``, ``postgresql://`` or ``postgres://``.
    :param options: ``backlog``, ``channel_ttl``, ``max_event_size``, ``timeout``;
        for Redis ``min_replicas`` (``SSECORS_BROKER_MIN_REPLICAS``) and ``prefix``; for
        PostgreSQL ``schema`` (``SSECORS_BROKER_SCHEMA``, default ``"ssecors"``).
    :raises ConfigError: for a URL or an option the app would refuse, an option of the other
        kind of broker set to anything but its default, or a missing ``redis`` or ``psycopg``
        package.

    .. versionadded:: 0.1
    """

    def __init__(self, url: str, **options: t.Any) -> None:
        scheme = url.partition("://")[0].lower()
        postgres = scheme in POSTGRES_SCHEMES
        others = _REDIS_ONLY if postgres else _POSTGRES_ONLY
        foreign = [
            name
            for name in sorted(set(options) & others.keys())
            if scheme != "memory" and options[name] != others[name]
        ]
        if foreign:
            kind, other = ("PostgreSQL", "Redis") if postgres else ("Redis", "PostgreSQL")
            raise ConfigError(
                [
                    ConfigIssue(
                        name,
                        options[name],
                        f"is an option of the {other} broker; this URL names {kind}.",
                    )
                    for name in foreign
                ],
                where="flask_ssecors.Publisher",
            )
        prefix = options.pop("prefix", "ssecors:")
        values = check_options(
            {"broker_url": url, **{_KWARGS.get(k, k): v for k, v in options.items()}},
            allowed=_OPTIONS,
            where="flask_ssecors.Publisher",
        )
        if scheme == "memory":
            raise ConfigError(
                [
                    ConfigIssue(
                        "url",
                        redact(url),
                        "the in-memory broker lives inside the app's worker process: publish "
                        "with sse.publish() there, or give the app and this publisher a Redis "
                        "or PostgreSQL URL.",
                    )
                ],
                where="flask_ssecors.Publisher",
            )
        self.url = url
        self._backlog = t.cast(int, values.get("backlog", default_of("backlog")))
        self._channel_ttl = t.cast(
            "float | None", values.get("channel_ttl", default_of("channel_ttl"))
        )
        self._max_event_size = t.cast(
            "int | None", values.get("max_event_size", default_of("max_event_size"))
        )
        self._min_replicas = t.cast(
            int, values.get("broker_min_replicas", default_of("broker_min_replicas"))
        )
        self._timeout = t.cast(float, values.get("broker_timeout", default_of("broker_timeout")))
        schema = t.cast(str, values.get("broker_schema", default_of("broker_schema")))
        self._sender: _Sender = self._postgres(schema) if postgres else self._redis(prefix)

    def _redis(self, prefix: str) -> _Sender:
        try:
            import redis

            from ._redis_conn import client_for
            from ._redis_layout import PUBLISH_SCRIPT
            from ._redis_publish import RedisPublishing
        except ImportError:
            raise _missing(self.url, "redis", "Redis") from None
        publishing = RedisPublishing(
            prefix=prefix,
            backlog=self._backlog,
            channel_ttl=self._channel_ttl,
            max_event_size=self._max_event_size,
            min_replicas=self._min_replicas,
            timeout=self._timeout,
        )
        client: t.Any = client_for(
            self.url,
            timeout=self._timeout,
            max_connections=64,
            name=f"ssecors-publisher-{os.getpid()}",
            cooperative=False,
        )
        return _RedisSender(publishing, client, client.register_script(PUBLISH_SCRIPT), redis)

    def _postgres(self, schema: str) -> _Sender:
        try:
            from ._postgres_publish import PostgresPublishing
            from ._postgres_publisher import PostgresSender
        except ImportError:
            raise _missing(self.url, "postgres", "PostgreSQL") from None
        publishing = PostgresPublishing(
            schema=schema, backlog=self._backlog, max_event_size=self._max_event_size
        )
        return PostgresSender(self.url, publishing=publishing, timeout=self._timeout)

    @property
    def backlog(self) -> int:
        """``SSECORS_BACKLOG`` as given (or its default)."""
        return self._backlog

    @property
    def channel_ttl(self) -> float | None:
        """``SSECORS_CHANNEL_TTL`` as given (or its default)."""
        return self._channel_ttl

    @property
    def max_event_size(self) -> int | None:
        """``SSECORS_MAX_EVENT_SIZE`` as given (or its default)."""
        return self._max_event_size

    @property
    def timeout(self) -> float:
        """``SSECORS_BROKER_TIMEOUT`` as given (or its default)."""
        return self._timeout

    @property
    def min_replicas(self) -> int:
        """``SSECORS_BROKER_MIN_REPLICAS`` as given (or its default)."""
        return self._min_replicas

    def publish(self, channel: str, event: Event, *, transaction: object = None) -> str:
        """Publish ``event`` on ``channel``; return the id the app's clients will see.

        :param transaction: PostgreSQL only: publish inside this transaction (a psycopg
            connection, an SQLAlchemy ``Connection`` or ``Session``); the event is kept and
            delivered if and only if it commits. Other publishes to the channel wait for the
            transaction to end: keep it short.
        :raises ChannelError: for a channel name no broker can store.
        :raises EventFieldError: for an event over ``max_event_size``.
        :raises BrokerUnavailable: when the broker does not confirm within the timeout.
        :raises BrokerError: with PostgreSQL, when the schema is missing and the role may not
            create it.
        :raises UsageError: for ``transaction`` with a Redis URL.

        .. versionadded:: 0.1
            The ``transaction`` parameter.
        """
        return self._sender.publish(channel, event, transaction)

    def close(self) -> None:
        """Close the connections."""
        self._sender.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.close()


class _Sender(t.Protocol):
    """How :class:`Publisher` reaches one kind of broker."""

    def publish(self, channel: str, event: Event, transaction: object) -> str: ...

    def close(self) -> None: ...


class _RedisSender:
    """Publishes with redis-py's client (a pool of plain connections)."""

    def __init__(self, publishing: t.Any, client: t.Any, script: t.Any, redis: t.Any) -> None:
        self._publishing = publishing
        self._client = client
        self._script = script
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def publish(self, channel: str, event: Event, transaction: object) -> str:
        if transaction is not None:
            raise UsageError(
                "publish(transaction=...) needs the PostgreSQL broker, and this publisher's "
                "URL names Redis: give the app and the publisher a postgresql:// URL, or "
                "publish without transaction= (after your transaction commits)."
            )
        keys, args = self._publishing.prepare(channel, event)
        try:
            return t.cast(str, self._publishing.send(self._client, self._script, keys, args))
        except self._errors as error:
            raise BrokerUnavailable(f"publish: {error}") from error

    def close(self) -> None:
        self._client.close()


def _missing(url: str, extra: str, name: str) -> ConfigError:
    return ConfigError(
        [ConfigIssue("url", redact(url), f"install flask-ssecors[{extra}] to publish to {name}.")],
        where="flask_ssecors.Publisher",
    )


#: Publisher keywords spelt differently from the settings they stand for.
_KWARGS: t.Final = {
    "timeout": "broker_timeout",
    "min_replicas": "broker_min_replicas",
    "schema": "broker_schema",
}
_OPTIONS: t.Final = frozenset(
    {
        "broker_url",
        "backlog",
        "channel_ttl",
        "max_event_size",
        "broker_timeout",
        "broker_min_replicas",
        "broker_schema",
    }
)
#: Keywords that only one kind of broker reads, with their defaults (which the other kind of
#: broker accepts, so that one set of settings serves both).
_REDIS_ONLY: t.Final = {"prefix": "ssecors:", "min_replicas": default_of("broker_min_replicas")}
_POSTGRES_ONLY: t.Final = {"schema": default_of("broker_schema")}
