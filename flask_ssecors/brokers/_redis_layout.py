"""How flask-ssecors lays channels out in Redis: keys, shards, ids, and the two Lua scripts.

Shared by :class:`~flask_ssecors.brokers.RedisBroker` and anything else that publishes the same
way, so that every process agrees on where an event goes and what its id means.

Per channel (``<p>`` is the key prefix, ``K`` the channel's shard)::

    <p>{sK}:c:<channel>   a Redis Stream: the channel's backlog (XADD MAXLEN backlog + 1,
                          exact: the oldest kept entry is the last one a client may resume
                          from, so a replay never goes back more than the backlog)
    <p>{sK}:g:<channel>   the channel's generation, a random token drawn at its first publish

Per shard (a fixed number, :data:`SHARDS`, whatever the number of channels)::

    <p>{sK}:live          a Redis Stream of every event published on the shard's channels,
                          kept short: at most about LIVE_MAXLEN entries, none older than
                          LIVE_WINDOW (XTRIM MINID), and the key expires LIVE_WINDOW after
                          the shard's last publish: what listeners read
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
channels they follow. A shard stream keeps an event for :data:`LIVE_WINDOW` seconds at most, so
nothing of a forgotten channel stays longer than that. Nothing ever scans the keyspace.
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

#: Shard streams: a listener reads all of them, whatever the number of channels.
SHARDS: t.Final = 16
#: Entries kept per shard stream (approximately): how far a listener may fall behind before it
#: catches up from the channels' own streams.
LIVE_MAXLEN: t.Final = 10_000
#: Seconds a shard stream keeps an entry (approximately: Redis trims whole nodes of at most
#: 100 entries or 4 KiB). A listener further behind catches up from the channels' streams.
LIVE_WINDOW: t.Final = 30.0

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
    live_window: float = LIVE_WINDOW,
) -> list[object]:
    """The arguments :data:`PUBLISH_SCRIPT` takes, in order."""
    return [
        encoded,
        backlog + 1,
        int(ttl * 1000) if ttl is not None else 0,
        LIVE_MAXLEN,
        channel,
        generation,
        max(1, int(live_window * 1000)),
    ]


#: Publish one event. KEYS: channel stream, generation, shard live stream, shard counter.
#: ARGV: encoded event (without id), backlog + 1, TTL in ms (0: none), live MAXLEN, channel
#: name, a new generation (used when the channel has none), the live window in ms. Returns
#: {generation, stream id}. The live window is measured on the shard entry's own id (Redis'
#: clock), so that publishers on several hosts agree.
PUBLISH_SCRIPT: t.Final = """
local generation = redis.call('GET', KEYS[2])
if not generation then
  generation = ARGV[6]
  redis.call('SET', KEYS[2], generation)
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'e', ARGV[1])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
local n = redis.call('INCR', KEYS[4])
local live = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
  'c', ARGV[5], 'g', generation, 'i', id, 'n', n, 'e', ARGV[1])
local window = tonumber(ARGV[7])
if window and window > 0 then
  local ms = tonumber(string.match(live, '^(%d+)'))
  redis.call('XTRIM', KEYS[3], 'MINID', '~', tostring(ms - window))
  redis.call('PEXPIRE', KEYS[3], window)
end
return {generation, id}
"""

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
    if not (dash and _is_number(ms) and _is_number(seq)):
        return None
    return int(ms), int(seq)


def _is_number(text: str) -> bool:
    return (
        0 < len(text) < 20 and text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")
    )


def event_id(generation: str, position: StreamId) -> str:
    """The id of the entry at ``position`` of a channel in its ``generation``."""
    return f"{generation}.{format_stream_id(position)}"


def frame_at(generation: str, position: StreamId, encoded: bytes) -> Frame:
    """The frame subscribers receive for a stored event (encoded without an id)."""
    return frame(encoded, stored_type(encoded), event_id(generation, position))


def reset_at(generation: str, position: StreamId, reason: str) -> Frame:
    """The reset event, whose id moves the client to ``position`` of ``generation``."""
    return frame_of(Event({"reason": reason}, event=RESET_EVENT, id=event_id(generation, position)))
