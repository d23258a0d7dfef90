"""Presence: who holds streams on a channel. The part every broker shares.

A stream declares who it is (``sse.subscribe(*channels, member="alice")``); a member may hold
several streams (tabs, devices). Each broker keeps, per channel, how many streams each member
holds across every process that shares it, and answers :class:`Presence`.

Each process counts its own streams here (:class:`LocalPresence`); a broker shared by several
processes (Redis) writes this process's *absolute* count of each ``(channel, member)`` it
changed, never a difference, so a write repeated after a fault or a reconnect changes nothing,
and a process that lost its place (it was taken for dead, or Redis lost its data) re-sends its
whole state and is right again.

Join and leave events: when a member's first stream on a channel opens, the channel's
subscribers receive :data:`JOIN_EVENT` with data ``{"member": ...}``; when its last stream
closes, :data:`LEAVE_EVENT`. They are ordinary events of the channel (ids, backlog, replay).
A leave is sent exactly when the join was: whether a member is announced is decided by the
stream that made it present, and kept until it leaves.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import typing as t

from .._config import default_of
from ..events import Event
from ..events import JOIN_EVENT as JOIN_EVENT
from ..events import LEAVE_EVENT as LEAVE_EVENT
from ._names import check_name

#: Longest member string, in bytes of UTF-8.
MAX_MEMBER_BYTES: t.Final = 256


@dataclasses.dataclass(frozen=True, slots=True)
class Presence:
    """Who holds streams on a channel, across every process that shares the broker.

    :param channel: the channel.
    :param members: the members present; empty when :attr:`counts_only`.
    :param member_count: how many members are present (exact, also when counts only).
    :param connections: how many streams declared a member on the channel.
    :param counts_only: True when the channel has more than ``SSECORS_PRESENCE_MAX_MEMBERS``
        members: :attr:`members` is then left empty rather than read whole.

    .. versionadded:: 0.1
    """

    channel: str
    members: frozenset[str]
    member_count: int
    connections: int
    counts_only: bool = False

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict (members sorted)."""
        return {
            "channel": self.channel,
            "members": sorted(self.members),
            "member_count": self.member_count,
            "connections": self.connections,
            "counts_only": self.counts_only,
        }


def check_member(member: object) -> str:
    """Return ``member`` if it can name a member, else raise :class:`ChannelError`.

    A member is a non-empty ``str`` of at most :data:`MAX_MEMBER_BYTES` bytes of UTF-8,
    without control characters (the rule of channel names).

    .. versionadded:: 0.1
    """
    return check_name(member, MAX_MEMBER_BYTES, "a member ")


def presence_event(kind: str, member: str) -> Event:
    """The join or leave event of ``member``."""
    return Event({"member": member}, event=kind)


def announces(setting: bool | tuple[str, ...], channel: str) -> bool:
    """Whether ``SSECORS_PRESENCE_EVENTS`` (True, False, or channel patterns where ``*``
    matches any run of characters) asks for join and leave events on ``channel``."""
    if isinstance(setting, bool):
        return setting
    return any(fnmatch.fnmatchcase(channel, pattern) for pattern in setting)


def build_presence(
    channel: str,
    counts: t.Mapping[str, int],
    connections: int,
    max_members: int = default_of("presence_max_members"),
) -> Presence:
    """A :class:`Presence` from each member's stream count (members with none left out) and
    the channel's total; the members are only listed up to ``max_members``, so a counts-only
    answer costs nothing per member."""
    counts_only = len(counts) > max_members
    return Presence(
        channel=channel,
        members=frozenset() if counts_only else frozenset(counts),
        member_count=len(counts),
        connections=connections,
        counts_only=counts_only,
    )


class LocalPresence:
    """This process's streams per channel and member, and whether each member was announced.

    Not thread-safe by itself: the broker that owns it holds its lock around every call.
    """

    def __init__(self) -> None:
        #: channel -> member -> streams of this process (members with none left out).
        self.counts: dict[str, dict[str, int]] = {}
        #: channel -> streams of this process that declared a member.
        self.totals: dict[str, int] = {}
        #: (channel, member) pairs whose join this process asked to announce.
        self.announced: set[tuple[str, str]] = set()
        #: Presence changes written to the broker (one per changed (channel, member)).
        self.updates = 0

    def add(self, channel: str, member: str, *, announce: bool) -> int:
        """One more stream of ``member`` on ``channel``; returns its new count."""
        members = self.counts.setdefault(channel, {})
        count = members.get(member, 0) + 1
        members[member] = count
        self.totals[channel] = self.totals.get(channel, 0) + 1
        if count == 1 and announce:
            self.announced.add((channel, member))
        return count

    def remove(self, channel: str, member: str) -> int:
        """One stream fewer; returns the new count (0: the member left this process)."""
        members = self.counts.get(channel)
        if members is None or member not in members:
            return 0
        count = members[member] - 1
        self.totals[channel] -= 1
        if count > 0:
            members[member] = count
            return count
        del members[member]
        if not members:
            del self.counts[channel]
            del self.totals[channel]
        return 0

    def count(self, channel: str, member: str) -> int:
        """Streams of ``member`` on ``channel`` in this process."""
        return self.counts.get(channel, {}).get(member, 0)

    def stats(self) -> dict[str, int]:
        """``members`` (present (channel, member) pairs), ``streams`` and ``updates``."""
        return {
            "members": sum(len(members) for members in self.counts.values()),
            "streams": sum(self.totals.values()),
            "updates": self.updates,
        }
