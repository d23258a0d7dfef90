"""Load generator for :mod:`bench.streams`: N concurrent SSE streams from one asyncio process.

Run by the orchestrator as ``python -m bench.loadgen --port P --streams N ...``. It opens N
connections (``GET /events`` with an allowed ``Origin``), counts a stream as open once the
``200`` headers and the first comment arrived, then prints one JSON line and obeys commands read
from stdin, one per line, answering each with one JSON line on stdout:

``mark``
    report the comments (heartbeats) and events seen since the last mark, and reset the counts;
``wait COUNT TIMEOUT``
    answer ``waiting`` at once, then wait until every open stream has received ``COUNT`` events
    since the last mark (or ``TIMEOUT`` seconds passed), then report delivery and
    publish-to-receive latency;
``close``
    close every connection and exit.

End of input means ``close``. The whole process is bounded by ``--max-seconds``.

Events must carry ``data: {"seq": n, "t": <publish time.time()>}`` (the space after the colon is
optional: flask-sse leaves it out); latency is the receive ``time.time()`` (taken once per read)
minus ``t``, on the same machine and clock.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import sys
import time
import typing as t

from ._common import percentile
from ._common import raise_nofile_limit


class Shared:
    """Counters every stream updates."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.comments = 0
        self.gaps = 0
        self.lost = 0
        self.target: int | None = None
        self.complete = 0
        self.expected_streams = 0
        self.done = asyncio.Event()
        self.clients: list[StreamClient] = []

    def mark(self) -> dict[str, object]:
        """Report and reset the per-phase counters, including every stream's event count."""
        report = {"comments": self.comments, "events": len(self.latencies), "gaps": self.gaps}
        self.latencies = []
        self.comments = 0
        self.gaps = 0
        for client in self.clients:
            client.received = 0
        return report


class StreamClient(asyncio.Protocol):
    """One SSE connection: HTTP/1.1 response head, chunked framing, event blocks."""

    def __init__(self, shared: Shared, request: bytes, opened: asyncio.Future[None]) -> None:
        self.shared = shared
        self.request = request
        self.opened = opened
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.in_body = False
        self.chunked = False
        self.raw = b""  # undecoded chunked bytes
        self.left = 0  # payload bytes left in the current chunk
        self.skip = 0  # CRLF bytes to skip after a chunk
        self.text = b""  # decoded bytes not yet split into blocks
        self.received = 0
        self.last_seq = -1
        self.is_open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t.cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 65536:
                    self._fail("response head too long")
                return
            head = self.head[:end].decode("latin-1")
            data = self.head[end + 4 :]
            self.head = b""
            status = head.split(" ", 2)[1] if " " in head else "?"
            if status != "200":
                self._fail(f"status {status}")
                return
            self.in_body = True
            self.chunked = "\r\ntransfer-encoding: chunked" in head.lower()
            if not data:
                return
        self._feed(self._dechunk(data) if self.chunked else data, now)

    def _fail(self, why: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()

    def _dechunk(self, data: bytes) -> bytes:
        buf = self.raw + data if self.raw else data
        pos, size, out = 0, len(buf), []
        while pos < size:
            if self.skip:
                step = min(self.skip, size - pos)
                pos += step
                self.skip -= step
            elif self.left:
                step = min(self.left, size - pos)
                out.append(buf[pos : pos + step])
                pos += step
                self.left -= step
                if not self.left:
                    self.skip = 2
            else:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                length = int(buf[pos:end].split(b";", 1)[0], 16)
                pos = end + 2
                if length == 0:  # end of the body
                    pos = size
                    break
                self.left = length
        self.raw = buf[pos:]
        return b"".join(out)

    def _feed(self, payload: bytes, now: float) -> None:
        if not payload:
            return
        buf = self.text + payload if self.text else payload
        shared = self.shared
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            block = buf[start:end]
            start = end + 2
            if block.startswith(b":"):
                if self.is_open:
                    shared.comments += 1
                else:
                    self._opened()
                continue
            # The first data line, with or without the optional space after the colon
            # (flask-sse writes ``data:{...}``).
            at = 0 if block.startswith(b"data:") else block.find(b"\ndata:") + 1
            if at <= 0 and not block.startswith(b"data:"):
                continue
            at += 5
            if block[at : at + 1] == b" ":
                at += 1
            stop = block.find(b"\n", at)
            event = json.loads(block[at : stop if stop >= 0 else len(block)])
            if not self.is_open:
                self._opened()
            shared.latencies.append(now - event["t"])
            seq = event["seq"]
            if seq != self.last_seq + 1:
                shared.gaps += 1
            self.last_seq = seq
            self.received += 1
            if self.received == shared.target:
                shared.complete += 1
                if shared.complete >= shared.expected_streams:
                    shared.done.set()
        self.text = buf[start:]

    def _opened(self) -> None:
        self.is_open = True
        if not self.opened.done():
            self.opened.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.is_open:
            self.shared.lost += 1
        elif not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before opening: {exc!r}"))


def _emit(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _open_all(args: argparse.Namespace, shared: Shared) -> list[StreamClient]:
    loop = asyncio.get_running_loop()
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
        f"Origin: {args.origin}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode("ascii")
    gate = asyncio.Semaphore(args.concurrency)
    clients: list[StreamClient] = []
    errors: collections.Counter[str] = collections.Counter()

    async def open_one() -> None:
        async with gate:
            opened: asyncio.Future[None] = loop.create_future()
            client = StreamClient(shared, request, opened)
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: client, "127.0.0.1", args.port),
                    args.step_timeout,
                )
                await asyncio.wait_for(opened, args.step_timeout)
            except (OSError, TimeoutError, ConnectionError) as error:
                errors[f"{type(error).__name__}: {error}"[:120]] += 1
                if client.transport is not None:
                    client.transport.abort()
                return
            clients.append(client)

    begin = time.monotonic()
    tasks = [asyncio.ensure_future(open_one()) for _ in range(args.streams)]
    _finished, pending = await asyncio.wait(tasks, timeout=args.open_timeout)
    for task in pending:
        task.cancel()
    _emit(
        {
            "type": "opened",
            "opened": len(clients),
            "failed": args.streams - len(clients),
            "seconds": time.monotonic() - begin,
            "errors": dict(errors.most_common(5)),
            "timed_out": len(pending),
        }
    )
    return clients


def _latency_report(latencies: list[float]) -> dict[str, float]:
    ms = [value * 1000 for value in latencies]
    return {
        "p50_ms": percentile(ms, 0.50),
        "p90_ms": percentile(ms, 0.90),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms) if ms else float("nan"),
        "mean_ms": sum(ms) / len(ms) if ms else float("nan"),
    }


async def _wait(shared: Shared, count: int, timeout: float) -> None:
    begin = time.monotonic()
    live = [client for client in shared.clients if client.is_open]
    shared.expected_streams = len(live)
    shared.complete = sum(1 for client in live if client.received >= count)
    shared.target = count
    shared.done.clear()
    if shared.complete >= len(live):
        shared.done.set()
    _emit({"type": "waiting", "streams": len(live)})
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(shared.done.wait(), timeout)
    latencies = shared.latencies
    received = [client.received for client in live]
    report = shared.mark()
    shared.target = None
    _emit(
        {
            "type": "delivered",
            "seconds": time.monotonic() - begin,
            "streams": len(live),
            "complete_streams": sum(1 for n in received if n >= count),
            "expected_events": count * len(live),
            "delivered_events": report["events"],
            "comments": report["comments"],
            "gaps": report["gaps"],
            "lost_connections": shared.lost,
            **_latency_report(latencies),
        }
    )


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    shared = Shared()
    clients = shared.clients = await _open_all(args, shared)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "close":
                break
            if line[0] == "mark":
                _emit({"type": "mark", "lost_connections": shared.lost, **shared.mark()})
            elif line[0] == "wait":
                await _wait(shared, int(line[1]), float(line[2]))
            else:
                _emit({"type": "error", "error": f"unknown command {line[0]!r}"})
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
        await asyncio.sleep(0.2)
        _emit({"type": "closed", "closed": len(clients)})


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run until ``close`` or ``--max-seconds``."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--path", default="/events")
    parser.add_argument("--origin", default="https://app.example.com")
    parser.add_argument("--concurrency", type=int, default=200, help="connections opening at once")
    parser.add_argument("--step-timeout", type=float, default=30.0)
    parser.add_argument("--open-timeout", type=float, default=180.0)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args(argv)
    soft, _hard = raise_nofile_limit()
    if soft < args.streams + 100:
        _emit({"type": "error", "error": f"open-file limit {soft} is too low for {args.streams}"})
        sys.exit(2)

    async def bounded() -> None:
        try:
            await asyncio.wait_for(_serve(args), args.max_seconds)
        except TimeoutError:
            _emit({"type": "error", "error": "--max-seconds reached"})

    asyncio.run(bounded())


if __name__ == "__main__":
    main()
