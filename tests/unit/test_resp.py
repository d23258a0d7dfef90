"""The RESP2 reader of :mod:`flask_ssecors.brokers._redis_resp` (pure code): every reply is
read whole whatever the chunks it arrives in, nothing is read before it is complete, and bytes
that are not RESP are refused rather than guessed at."""

from __future__ import annotations

import typing as t

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_ssecors.brokers._redis_resp import _pack
from flask_ssecors.brokers._redis_resp import _parse
from flask_ssecors.brokers._redis_resp import ProtocolError
from flask_ssecors.brokers._redis_resp import ReplyError


def encode(value: t.Any) -> bytes:
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    return b"*%d\r\n" % len(value) + b"".join(encode(item) for item in value)


replies = st.recursive(
    st.none() | st.binary(max_size=300) | st.integers(-(2**62), 2**62),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=12,
)


def read_all(data: bytes, cuts: list[int]) -> list[t.Any]:
    """Feed ``data`` in chunks cut at ``cuts``, as ``RespConnection.read`` does."""
    buffer = bytearray()
    out: list[t.Any] = []
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        buffer += data[start:end]
        position = 0
        while True:
            reply, after = _parse(buffer, position)
            if after < 0:
                break
            out.append(reply)
            position = after
        del buffer[:position]
    assert not buffer
    return out


@given(st.lists(replies, min_size=1, max_size=6), st.data())
def test_replies_are_read_whole_in_any_chunks(values: list[t.Any], data: st.DataObject) -> None:
    wire = b"".join(encode(value) for value in values)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=8))))
    assert read_all(wire, [c for c in cuts if 0 < c < len(wire)]) == values


def test_a_partial_reply_is_not_read() -> None:
    wire = encode([b"smessage", b"ssecors:{s1}:c:x", b"a" * 100])
    for end in range(len(wire)):
        assert _parse(bytearray(wire[:end]), 0) == (None, -1)


def test_pushes_errors_and_simple_strings() -> None:
    wire = b">3\r\n$10\r\nssubscribe\r\n$1\r\nx\r\n:1\r\n-MOVED 3999 127.0.0.1:6381\r\n+OK\r\n"
    first, second, third = read_all(wire, [])
    assert first == [b"ssubscribe", b"x", 1]
    assert isinstance(second, ReplyError) and str(second) == "MOVED 3999 127.0.0.1:6381"
    assert third == b"OK"


@pytest.mark.parametrize("wire", [b"?what\r\n", b"$x\r\n", b"*two\r\n", b":1.5\r\n"])
def test_bytes_that_are_not_resp_are_refused(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        _parse(bytearray(wire), 0)


@given(st.lists(st.binary(max_size=50) | st.text(max_size=20), min_size=1, max_size=6))
def test_packed_commands_read_back(command: list[bytes | str]) -> None:
    expected = [part.encode() if isinstance(part, str) else part for part in command]
    assert read_all(_pack(command), []) == [expected]
