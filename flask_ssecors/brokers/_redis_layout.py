"""How flask-ssecors lays channels out in Redis: keys, shards, ids, and the two Lua scripts.

Shared by :class:`~flask_ssecors.brokers.RedisBroker` and anything else that publishes the same
way, so that every process agrees on where an event goes and what its id means.

Per channel (``<p>`` is the key prefix, ``K`` the channel's shard)::

    <p>{sK}:c:<channel>   a Redis Stream: the channel's backlog (XADD MAXLEN ~ backlog + 1)
    <p>{sK}:g:<channel>   the channel's generation, a random token drawn at its first publish

Per shard (a fixed number, :data:`SHARDS`, whatever the number of channels)::

    <p>{sK}:live          a Redis Stream of every event published on the shard's channels,
                          kept short (MAXLEN ~ LIVE_MAXLEN): what listeners read
    <p>{sK}:n             the shard's event counter, so that a listener notices entries it
                          missed (trimmed while it was away, or lost with Redis' data)

The ``{sK}`` hash tag puts a channel's keys and its shard's keys in one Redis Cluster slot, so
each publish is one atomic script, and a listener reads the shards, never the channels: its cost
does not grow with the number of channels.

An event id is ``<generation>.<stream id>``. The generation changes when a channel is forgotten
(its keys expired, ``SSECORS_CHANNEL_TTL``) or Redis loses its data, so an id from another
channel, an older life of this one, or another Redis is told apart, and gets the reset event.
A channel that has never been published to (or was forgotten) has the generation
:data:`EMPTY_GENERATION`.

Retention: every publish sets the TTL of the channel's two keys; listeners refresh it for the
channels they follow. Nothing ever scans the keyspace.
"""

from __future__ import annotations

import typing as t
import zlib

from ._base import EMPTY_GENERATION as EMPTY_GENERATION

#: Shard streams: a listener reads all of them, whatever the number of channels.
SHARDS: t.Final = 16
#: Entries kept per shard stream (approximately): how far a listener may fall behind before it
#: catches up from the channels' own streams.
LIVE_MAXLEN: t.Final = 10_000

#: A stream id as ``(milliseconds, sequence)``, which orders like Redis orders them.
StreamId: t.TypeAlias = tuple[int, int]
ZERO: t.Final[StreamId] = (0, 0)


def shard_of(channel: str) -> int:
    """The shard of ``channel``: stable across processes and versions of Python."""
    return zlib.crc32(channel.encode("utf-8")) % SHARDS


class Keys:
    """The key names under one prefix.

    :param prefix: the key prefix (``"ssecors:"``).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def channel(self, channel: str) -> str:
        """The stream that keeps ``channel``'s backlog."""
        return f"{self.prefix}{{s{shard_of(channel)}}}:c:{channel}"

    def generation(self, channel: str) -> str:
        """The key that holds ``channel``'s generation."""
        return f"{self.prefix}{{s{shard_of(channel)}}}:g:{channel}"

    def live(self, shard: int) -> str:
        """The shard's live stream."""
        return f"{self.prefix}{{s{shard}}}:live"

    def counter(self, shard: int) -> str:
        """The shard's event counter."""
        return f"{self.prefix}{{s{shard}}}:n"

    def publish_keys(self, channel: str) -> list[str]:
        """The keys :data:`PUBLISH_SCRIPT` takes, in order."""
        shard = shard_of(channel)
        return [
            self.channel(channel),
            self.generation(channel),
            self.live(shard),
            self.counter(shard),
        ]


def publish_args(
    channel: str,
    encoded: bytes,
    *,
    backlog: int,
    ttl: float | None,
    generation: str,
) -> list[object]:
    """The arguments :data:`PUBLISH_SCRIPT` takes, in order."""
    return [
        encoded,
        backlog + 1,
        int(ttl * 1000) if ttl is not None else 0,
        LIVE_MAXLEN,
        channel,
        generation,
    ]


#: Publish one event. KEYS: channel stream, generation, shard live stream, shard counter.
#: ARGV: encoded event (without id), backlog + 1, TTL in ms (0: none), live MAXLEN, channel
#: name, a new generation (used when the channel has none). Returns {generation, stream id}.
PUBLISH_SCRIPT: t.Final = """
local generation = redis.call('GET', KEYS[2])
if not generation then
  generation = ARGV[6]
  redis.call('SET', KEYS[2], generation)
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
local n = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
  'c', ARGV[5], 'g', generation, 'i', id, 'n', n, 'e', ARGV[1])
return {generation, id}
"""

#: Read what a subscriber needs, atomically. KEYS: channel stream, generation. ARGV: the
#: position to replay from (inclusive; '' for none), how many entries at most. Returns
#: {generation or false, last generated id, entries added ever, length, first entry id or
#: '', entries from the position}. (``XADD MAXLEN`` trimming does not update
#: ``max-deleted-entry-id``; entries added beyond the length tell that entries were trimmed.)
SNAPSHOT_SCRIPT: t.Final = """
local generation = redis.call('GET', KEYS[2])
local tail, added, length, first = '0-0', 0, 0, ''
local entries = {}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    local name, value = info[i], info[i + 1]
    if name == 'last-generated-id' then tail = value
    elseif name == 'entries-added' then added = value
    elseif name == 'length' then length = value
    elseif name == 'first-entry' and value then first = value[1]
    end
  end
  if ARGV[1] ~= '' then
    entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
  end
end
return {generation, tail, added, length, first, entries}
"""


def parse_stream_id(value: bytes | str) -> StreamId:
    """``b"1700000000000-3"`` as ``(1700000000000, 3)``."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_stream_id(value: StreamId) -> str:
    """``(1700000000000, 3)`` as ``"1700000000000-3"``."""
    return f"{value[0]}-{value[1]}"


def parse_position(text: str) -> StreamId | None:
    """The stream id of an event id's position, exactly as this layout writes it; None else.

    Only ASCII digits without leading zeros are accepted (``int`` would also take other
    scripts' digits, signs and underscores, and resume from a position the client never held).
    """
    ms, dash, seq = text.partition("-")
    if not (dash and _is_number(ms) and _is_number(seq)):
        return None
    return int(ms), int(seq)


def _is_number(text: str) -> bool:
    return (
        0 < len(text) < 20 and text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")
    )
