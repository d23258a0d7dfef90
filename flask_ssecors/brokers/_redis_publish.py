"""Publishing to Redis: the one path that :class:`~flask_ssecors.brokers.RedisBroker` and
:class:`~flask_ssecors.Publisher` share, so that both write the same layout, ids and checks."""

from __future__ import annotations

import contextlib
import hashlib
import typing as t

from .._wire import encode_without_id
from ._base import check_channel
from ._base import check_event_size
from ._base import new_generation
from ._redis_conn import publish_acknowledged
from ._redis_conn import redis
from ._redis_layout import Keys
from ._redis_layout import publish_args
from ._redis_layout import PUBLISH_SCRIPT
from ._redis_resp import Reply
from ._redis_resp import ReplyError
from ._redis_resp import RespConnection

if t.TYPE_CHECKING:
    from ..events import Event


class RedisPublishing:
    """How one app publishes: its key prefix and the settings that shape each publish.

    :param prefix: the key prefix.
    :param backlog: ``SSECORS_BACKLOG``.
    :param channel_ttl: ``SSECORS_CHANNEL_TTL``.
    :param max_event_size: ``SSECORS_MAX_EVENT_SIZE``.
    :param min_replicas: ``SSECORS_BROKER_MIN_REPLICAS``.
    :param timeout: ``SSECORS_BROKER_TIMEOUT``, the bound on ``WAIT``.
    """

    __slots__ = (
        "backlog",
        "channel_ttl",
        "keys",
        "max_event_size",
        "min_replicas",
        "timeout",
    )

    def __init__(
        self,
        *,
        prefix: str,
        backlog: int,
        channel_ttl: float | None,
        max_event_size: int | None,
        min_replicas: int,
        timeout: float,
    ) -> None:
        self.keys = Keys(prefix)
        self.backlog = backlog
        self.channel_ttl = channel_ttl
        self.max_event_size = max_event_size
        self.min_replicas = min_replicas
        self.timeout = timeout

    def prepare(self, channel: str, event: Event) -> tuple[list[str], list[object]]:
        """The keys and arguments of the publish script for ``event`` on ``channel``.

        :raises ChannelError: for a channel name no broker can store.
        :raises EventFieldError: for an event above ``max_event_size``.
        """
        check_channel(channel)
        encoded = encode_without_id(event)
        check_event_size(encoded, self.max_event_size)
        args = publish_args(
            encoded, backlog=self.backlog, ttl=self.channel_ttl, generation=new_generation()
        )
        return self.keys.publish_keys(channel), args

    def send(self, client: t.Any, script: t.Any, keys: list[str], args: list[object]) -> str:
        """Run the publish (and ``WAIT`` for ``min_replicas``) on ``client``; return the id.

        :param client: a redis-py client (of one server, Sentinel's primary, or a cluster).
        :param script: the publish script registered on ``client``'s connections.
        :raises redis.RedisError: or :class:`OSError`, as redis-py raises them; the caller
            turns them into ``BrokerUnavailable``.
        """
        if self.min_replicas:
            generation, stream_id = publish_acknowledged(
                client,
                keys=keys,
                args=args,
                replicas=self.min_replicas,
                timeout=self.timeout,
            )
        else:
            generation, stream_id = script(keys=keys, args=args, client=client)
        return f"{generation.decode()}.{stream_id.decode()}"


class LeanSender:
    """Runs the publish script on connections of its own, without redis-py's per-command
    machinery (a third of a publish's CPU): for one server or Sentinel's primary, from the
    broker's own thread, without ``WAIT``. Each connection runs one command at a time; the
    caller bounds how many run at once (the broker's pool size).

    :param client: a redis-py client whose pool opens the connections (``AUTH``, TLS,
        ``SELECT``, the Sentinels' primary).
    """

    def __init__(self, client: t.Any) -> None:
        self._client = client
        self._idle: list[RespConnection] = []
        self._sha = hashlib.sha1(PUBLISH_SCRIPT.encode()).hexdigest()

    def send(self, keys: list[str], args: list[object]) -> str:
        """Run the publish script; return the event's id.

        :raises redis.RedisError: or :class:`OSError` or :class:`ProtocolError`; the caller
            turns them into ``BrokerUnavailable``.
        """
        tail = [str(len(keys)), *keys, *(a if isinstance(a, bytes) else str(a) for a in args)]
        reply = self._call(["EVALSHA", self._sha, *tail])
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            reply = self._call(["EVAL", PUBLISH_SCRIPT, *tail])
        if isinstance(reply, ReplyError):
            raise redis.exceptions.ResponseError(str(reply))
        if not isinstance(reply, list) or len(reply) != 2:
            raise redis.exceptions.ResponseError(f"unexpected answer {reply!r:.80}")
        generation, stream_id = reply
        return f"{t.cast(bytes, generation).decode()}.{t.cast(bytes, stream_id).decode()}"

    def _call(self, command: list[bytes | str]) -> Reply:
        connection = self._idle.pop() if self._idle else None
        if connection is not None and connection.stale():
            connection.close()  # closed by Redis while idle (a restart): open another
            connection = None
        if connection is not None:
            try:
                connection.send([command])
            except OSError:
                connection = None  # failed to send: nothing was sent, open another
        if connection is None:
            connection = RespConnection(self._client)
            connection.send([command])
        try:
            replies: list[Reply] = []
            while not replies:
                replies = connection.read()
        except BaseException:
            connection.close()  # it may still owe the answer: never reused
            raise
        self._idle.append(connection)
        return replies[0]

    def close(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for connection in idle:
            with contextlib.suppress(Exception):
                connection.close()
