"""Publishing from processes without the Flask app: :class:`Publisher`."""

from __future__ import annotations

import os
import types
import typing as t

from .._config import check_options
from .._config import default_of
from .._urls import redact
from ..exceptions import BrokerUnavailable
from ..exceptions import ConfigError
from ..exceptions import ConfigIssue

if t.TYPE_CHECKING:
    from ..events import Event


class Publisher:
    """Publish events from a process that has no Flask app: a Celery or RQ worker, a cron
    script, a thread pool.

    .. code-block:: python

        from flask_ssecors import Event, Publisher

        with Publisher("redis://localhost:6379/0") as publisher:
            publisher.publish("user:42", Event({"done": True}, event="job"))

    It writes exactly what :meth:`flask_ssecors.SSECors.publish` writes (the same Redis layout,
    ids and checks), so the app's streams deliver the event, and clients resume across it.
    Give it the settings the app has for :data:`SSECORS_BACKLOG`, :data:`SSECORS_CHANNEL_TTL`,
    :data:`SSECORS_MAX_EVENT_SIZE` and :data:`SSECORS_BROKER_TIMEOUT` (as ``backlog``,
    ``channel_ttl``, ``max_event_size``, ``timeout``) when they are not the defaults.

    It needs neither Flask's app nor gevent: it uses plain redis-py connections, and is safe
    to share between threads. The in-memory broker cannot be published to from another
    process: ``memory://`` is refused.

    :param url: the app's ``SSECORS_BROKER_URL``: ``redis://``, ``rediss://``, ``unix://``,
        ``redis+sentinel://`` or ``redis+cluster://``.
    :param options: ``backlog``, ``channel_ttl``, ``max_event_size``, ``timeout``,
        ``min_replicas`` (``SSECORS_BROKER_MIN_REPLICAS``), ``prefix``.
    :raises ConfigError: for a URL or an option the app would refuse.

    .. versionadded:: 0.1
    """

    def __init__(self, url: str, **options: t.Any) -> None:
        prefix = options.pop("prefix", "ssecors:")
        values = check_options(
            {"broker_url": url, **{_KWARGS.get(k, k): v for k, v in options.items()}},
            allowed=_OPTIONS,
            where="flask_ssecors.Publisher",
        )
        if url.partition("://")[0].lower() == "memory":
            raise ConfigError(
                [
                    ConfigIssue(
                        "url",
                        redact(url),
                        "the in-memory broker lives inside the app's worker process: publish "
                        "with sse.publish() there, or give the app and this publisher a Redis "
                        "URL.",
                    )
                ],
                where="flask_ssecors.Publisher",
            )
        try:
            import redis

            from ._redis_conn import client_for
            from ._redis_layout import PUBLISH_SCRIPT
            from ._redis_publish import RedisPublishing
        except ImportError:
            raise ConfigError(
                [
                    ConfigIssue(
                        "url", redact(url), "install flask-ssecors[redis] to publish to Redis."
                    )
                ],
                where="flask_ssecors.Publisher",
            ) from None

        self.url = url
        self._publishing = RedisPublishing(
            prefix=prefix,
            backlog=t.cast(int, values.get("backlog", default_of("backlog"))),
            channel_ttl=t.cast(
                "float | None", values.get("channel_ttl", default_of("channel_ttl"))
            ),
            max_event_size=t.cast(
                "int | None", values.get("max_event_size", default_of("max_event_size"))
            ),
            min_replicas=t.cast(
                int, values.get("broker_min_replicas", default_of("broker_min_replicas"))
            ),
            timeout=t.cast(float, values.get("broker_timeout", default_of("broker_timeout"))),
        )
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._client: t.Any = client_for(
            url,
            timeout=self._publishing.timeout,
            max_connections=64,
            name=f"ssecors-publisher-{os.getpid()}",
            cooperative=False,
        )
        self._script = self._client.register_script(PUBLISH_SCRIPT)

    @property
    def backlog(self) -> int:
        """``SSECORS_BACKLOG`` as given (or its default)."""
        return self._publishing.backlog

    @property
    def channel_ttl(self) -> float | None:
        """``SSECORS_CHANNEL_TTL`` as given (or its default)."""
        return self._publishing.channel_ttl

    @property
    def max_event_size(self) -> int | None:
        """``SSECORS_MAX_EVENT_SIZE`` as given (or its default)."""
        return self._publishing.max_event_size

    @property
    def timeout(self) -> float:
        """``SSECORS_BROKER_TIMEOUT`` as given (or its default)."""
        return self._publishing.timeout

    @property
    def min_replicas(self) -> int:
        """``SSECORS_BROKER_MIN_REPLICAS`` as given (or its default)."""
        return self._publishing.min_replicas

    def publish(self, channel: str, event: Event) -> str:
        """Publish ``event`` on ``channel``; return the id the app's clients will see.

        :raises ChannelError: for a channel name no broker can store.
        :raises EventFieldError: for an event over ``max_event_size``.
        :raises BrokerUnavailable: when Redis does not confirm within the timeout.
        """
        keys, args = self._publishing.prepare(channel, event)
        try:
            return self._publishing.send(self._client, self._script, keys, args)
        except self._errors as error:
            raise BrokerUnavailable(f"publish: {error}") from error

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.close()


#: Publisher keywords spelt differently from the settings they stand for.
_KWARGS: t.Final = {"timeout": "broker_timeout", "min_replicas": "broker_min_replicas"}
_OPTIONS: t.Final = frozenset(
    {
        "broker_url",
        "backlog",
        "channel_ttl",
        "max_event_size",
        "broker_timeout",
        "broker_min_replicas",
    }
)
