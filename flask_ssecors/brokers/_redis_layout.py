"""How flask-ssecors lays channels out in Redis: keys, pub/sub channels, ids, and the two Lua
scripts.

Shared by :class:`~flask_ssecors.brokers.RedisBroker` and anything else that publishes the same
way, so that every process agrees on where an event goes and what its id means.

Per channel (``<p>`` is the key prefix, ``K`` the channel's shard, :func:`shard_of`)::

    <p>{sK}:c:<channel>   a Redis Stream: the channel's backlog (XADD MAXLEN backlog + 1,
                          exact: the oldest kept entry is the last one a client may resume
                          from, so a replay never goes back more than the backlog); also the
                          name of the channel's sharded pub/sub channel (SPUBLISH), which
                          carries each event to the workers that follow the channel
    <p>{sK}:g:<channel>   the channel's generation, a random token drawn at its first publish

A publish is one atomic script: it appends the event to the channel's stream and ``SPUBLISH``-es
it, with its generation and stream id, to the workers subscribed to that channel (and nobody
else: Redis filters by channel, so a worker pays nothing for the channels it does not follow).
Pub/sub delivers at most once; a listener that lost its connection (a restart, a failover, a
slot that moved) catches up from the channel's stream, which keeps the backlog. The ``{sK}``
hash tag puts a channel's keys and its pub/sub channel in one Redis Cluster slot, so the script
runs on one node and ``SSUBSCRIBE`` reaches the node that publishes. Nothing else is kept: no
per-deployment stream that every worker reads.

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

from .._wire import Frame
from .._wire import frame
from .._wire import frame_of
from .._wire import stored_type
from ..events import Event
from ..events import RESET_EVENT
from ._base import EMPTY_GENERATION as EMPTY_GENERATION
from ._base import is_number

#: Shards: a channel's keys carry its shard's hash tag (``{sK}``), which fixes its Redis Cluster
#: slot; a cluster listener holds one connection per shard, to the node serving its slot.
SHARDS: t.Final = 16

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

    def tag(self, shard: int) -> str:
        """A key of ``shard``'s Redis Cluster slot (for finding the node that serves it)."""
        return f"{self.prefix}{{s{shard}}}"

    def publish_keys(self, channel: str) -> list[str]:
        """The keys :data:`PUBLISH_SCRIPT` takes, in order."""
        return [self.channel(channel), self.generation(channel)]

    def presence(self, channel: str, worker: str) -> list[str]:
        """The keys the presence scripts take, in order: the channel's stream and generation
        (for join and leave events), its members (hash: member -> streams), connections
        (count), announced members (set), reaped workers (sorted set: worker -> when), and
        ``worker``'s own members (hash: member -> streams). One slot, like the channel's."""
        tag = f"{self.prefix}{{s{shard_of(channel)}}}"
        return [
            self.channel(channel),
            self.generation(channel),
            f"{tag}:pm:{channel}",
            f"{tag}:pn:{channel}",
            f"{tag}:pa:{channel}",
            f"{tag}:pd:{channel}",
            f"{tag}:pw:{worker}:{channel}",
        ]

    @property
    def presence_workers(self) -> str:
        """The processes that hold members (sorted set: worker -> deadline, ms)."""
        return f"{self.prefix}presence:workers"

    def presence_channels(self, worker: str) -> str:
        """The channels on which ``worker`` holds members (set)."""
        return f"{self.prefix}presence:w:{worker}"


def publish_args(
    encoded: bytes,
    *,
    backlog: int,
    ttl: float | None,
    generation: str,
) -> list[object]:
    """The arguments :data:`PUBLISH_SCRIPT` takes, in order."""
    return [encoded, backlog + 1, int(ttl * 1000) if ttl is not None else 0, generation]


#: The one definition of a publish, in Lua, for every script that publishes (events, and the
#: presence scripts' join and leave events): append ``encoded`` to the channel's stream
#: ``stream`` (also the name of its pub/sub channel), the generation kept in ``gen`` (set to
#: ``fresh`` when the channel has none), trimmed to ``maxlen`` entries, both keys' TTL set to
#: ``ttl`` ms (0: none), and send ``<generation> <stream id>\n<encoded>`` to the channel's
#: subscribers. Returns generation and stream id.
PUBLISH_FUNCTION: t.Final = """
local function publish(stream, gen, encoded, maxlen, ttl, fresh)
  local generation = redis.call('GET', gen)
  if not generation then
    generation = fresh
    redis.call('SET', gen, generation)
  end
  local id = redis.call('XADD', stream, 'MAXLEN', maxlen, '*', 'e', encoded)
  ttl = tonumber(ttl)
  if ttl > 0 then
    redis.call('PEXPIRE', stream, ttl)
    redis.call('PEXPIRE', gen, ttl)
  end
  redis.call('SPUBLISH', stream, generation .. ' ' .. id .. '\\n' .. encoded)
  return generation, id
end
"""

#: Publish one event. KEYS: channel stream (also the name of its pub/sub channel), generation.
#: ARGV: encoded event (without id), backlog + 1, TTL in ms (0: none), a new generation (used
#: when the channel has none). Sends ``<generation> <stream id>\n<encoded event>`` to the
#: channel's subscribers; returns {generation, stream id}.
PUBLISH_SCRIPT: t.Final = (
    PUBLISH_FUNCTION
    + """
local generation, id = publish(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return {generation, id}
"""
)

#: Read what a subscriber needs, atomically. KEYS: channel stream, generation. ARGV: the
#: position to read from ('' for none; inclusive, or exclusive as ``(<id>``), how many
#: entries at most, the position to read up to ('+' for the end), and a byte budget: entries
#: stop once their events hold that many bytes (one page of a replay). Returns {generation or
#: false, last generated id, entries added ever, length, first entry id or '', entries}.
#: (``XADD MAXLEN`` trimming does not update ``max-deleted-entry-id``; entries added beyond
#: the length tell that entries were trimmed.)
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
    local got = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[3], 'COUNT', ARGV[2])
    local budget, size = tonumber(ARGV[4]), 0
    for i = 1, #got do
      entries[i] = got[i]
      local fields = got[i][2]
      for j = 1, #fields, 2 do
        if fields[j] == 'e' then size = size + #fields[j + 1] end
      end
      if size >= budget then break end
    end
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
    if not (dash and is_number(ms) and is_number(seq)):
        return None
    return int(ms), int(seq)


def event_id(generation: str, position: StreamId) -> str:
    """The id of the entry at ``position`` of a channel in its ``generation``."""
    return f"{generation}.{format_stream_id(position)}"


def frame_at(generation: str, position: StreamId, encoded: bytes) -> Frame:
    """The frame subscribers receive for a stored event (encoded without an id)."""
    return frame(encoded, stored_type(encoded), event_id(generation, position))


def reset_at(generation: str, position: StreamId, reason: str) -> Frame:
    """The reset event, whose id moves the client to ``position`` of ``generation``."""
    return frame_of(Event({"reason": reason}, event=RESET_EVENT, id=event_id(generation, position)))
