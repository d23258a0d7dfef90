"""One Redis connection read and written without redis-py's per-reply machinery: the
listener's (sharded pub/sub) and the publishing pool's (one ``EVALSHA`` per event).

redis-py opens the connection (TLS, ``AUTH``, ``SELECT``, ``CLIENT SETNAME``, asking the
Sentinels for the primary); from then on this class owns its socket: commands are packed and
sent whole, and each ``recv`` is parsed for every complete reply it holds (RESP2: arrays of
bulk strings and integers, simple strings and errors; Redis 7.0 also sends pushes). A listener
reads in one greenlet while another sends ``SSUBSCRIBE``, ``SUNSUBSCRIBE`` and ``PING`` on the
same socket: gevent lets one greenlet wait to read and another to write at once.
"""

from __future__ import annotations

import collections.abc as cabc
import select
import typing as t

import gevent.monkey

#: The operating system's ``poll`` (never gevent's): asked with a zero timeout it never blocks,
#: and unlike ``select`` it takes descriptors past 1,023, which a worker holding thousands of
#: streams hands to its Redis connections.
_poll: t.Final[t.Any] = gevent.monkey.get_original("select", "poll")

#: Bytes asked of the socket per read.
RECV_SIZE: t.Final = 256 * 1024

#: A reply: bytes, an int, None (a null), an error, or a list of replies.
Reply: t.TypeAlias = "bytes | int | ReplyError | list[Reply] | None"


class ReplyError(Exception):
    """An error reply (``-ERR ...``, ``-MOVED ...``), as a value among the replies."""


class ProtocolError(Exception):
    """Bytes that are not RESP2: the connection cannot be read any further."""


class RespConnection:
    """A connection of ``client``'s pool, taken over.

    :param client: a redis-py client of one server (or of Sentinel's primary); its pool opens
        the connection.
    :raises redis.RedisError: or :class:`OSError` when the connection cannot be opened.
    """

    def __init__(self, client: t.Any) -> None:
        self._client = client
        self._connection = client.connection_pool.get_connection()
        self._connection.connect()
        self._socket = self._connection._sock
        self._buffer = bytearray()
        self.closed = False

    def send(self, commands: cabc.Iterable[cabc.Sequence[bytes | str]]) -> None:
        """Send ``commands`` (each a name and its arguments) in one write.

        :raises OSError: when the socket fails (the connection is then closed).
        """
        packed = b"".join(_pack(command) for command in commands)
        if not packed:
            return
        if self.closed:
            raise ConnectionResetError("the connection is closed")
        try:
            self._socket.sendall(packed)
        except BaseException:
            self.close()
            raise

    def read(self) -> list[Reply]:
        """Wait for bytes and return every complete reply they finish (maybe none).

        :raises OSError: on a socket error or timeout; :class:`ConnectionResetError` when the
            server closed the connection.
        :raises ProtocolError: on bytes that are not RESP2.
        """
        if self.closed:
            raise ConnectionResetError("the connection is closed")
        data = self._socket.recv(RECV_SIZE)
        if not data:
            self.close()
            raise ConnectionResetError("Redis closed the connection")
        buffer = self._buffer
        buffer += data
        replies: list[Reply] = []
        position = 0
        while True:
            reply, end = _parse(buffer, position)
            if end < 0:
                break
            replies.append(reply)
            position = end
        if position:
            del buffer[:position]
        return replies

    def stale(self) -> bool:
        """Whether an idle connection has something to read: Redis closed it (a restart, a
        timeout) or sent what nobody asked for. Either way it is not to be reused."""
        if self.closed or self._buffer:
            return True
        try:
            poller = _poll()
            poller.register(self._socket.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        """Close the socket (the pool forgets the connection)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._connection.disconnect()
        finally:
            self._client.connection_pool.release(self._connection)


def _pack(command: cabc.Sequence[bytes | str]) -> bytes:
    parts = [b"*%d\r\n" % len(command)]
    for argument in command:
        raw = argument.encode() if isinstance(argument, str) else argument
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def _parse(buffer: bytearray, position: int) -> tuple[Reply, int]:
    """The reply that starts at ``position`` and where it ends; ``(None, -1)`` when the buffer
    does not hold all of it yet."""
    line_end = buffer.find(b"\r\n", position)
    if line_end < 0:
        return None, -1
    kind = buffer[position]
    head = bytes(buffer[position + 1 : line_end])
    after = line_end + 2
    try:
        if kind == 0x24:  # $ bulk string
            length = int(head)
            if length < 0:
                return None, after
            end = after + length
            if len(buffer) < end + 2:
                return None, -1
            return bytes(buffer[after:end]), end + 2
        if kind == 0x2A or kind == 0x3E:  # * array, or > push (Redis 7.0 sends its sharded
            # pub/sub confirmations as pushes even in RESP2)
            count = int(head)
            if count < 0:
                return None, after
            items: list[Reply] = []
            for _ in range(count):
                item, after = _parse(buffer, after)
                if after < 0:
                    return None, -1
                items.append(item)
            return items, after
        if kind == 0x3A:  # : integer
            return int(head), after
        if kind == 0x2B:  # + simple string
            return head, after
        if kind == 0x2D:  # - error
            return ReplyError(head.decode("utf-8", "replace")), after
    except ValueError:
        pass
    raise ProtocolError(f"not a RESP2 reply: {bytes(buffer[position : position + 40])!r}")
