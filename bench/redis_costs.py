"""What one publish costs redis-server, part by part: ``python -m bench.redis_costs``.

One redis-server on a free port (stopped by PID); each case runs ``--calls`` times on 1,000
channels that already hold events, and redis-server's CPU (its process CPU clock) is divided
by the calls: a bare ``PUBLISH``, scripts doing only ``SPUBLISH`` or only the stream append,
and flask-ssecors' publish script with and without a channel TTL. What a publish costs Redis
beyond what it must (the append and the send) is what the next optimisation can take.
"""

from __future__ import annotations

import argparse
import sys
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD: t.Final = b'data: {"t": 1.0, "c": "x"}\n\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_costs", description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per case")
    opts = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import redis

    from bench._common import markdown_table
    from bench._common import process_cpu_seconds
    from flask_ssecors.brokers._redis_layout import PUBLISH_SCRIPT
    from tests.support.servers import RedisServer

    rows = []
    with RedisServer() as server:
        assert server.process is not None
        client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
        publish = client.register_script(PUBLISH_SCRIPT)
        spublish = client.register_script("return redis.call('SPUBLISH', KEYS[1], ARGV[1])")
        append = client.register_script(
            "return redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'e', ARGV[1])"
        )
        cases: dict[str, t.Callable[[int], object]] = {
            "PUBLISH (the command)": lambda n: client.publish(f"p:{n}", PAYLOAD),
            "script: SPUBLISH only": lambda n: spublish(keys=[f"s:{n}"], args=[PAYLOAD]),
            "script: XADD MAXLEN 1001 only": lambda n: append(
                keys=[f"x:{n}"], args=[PAYLOAD, 1001]
            ),
            "publish script, channel TTL a day": lambda n: publish(
                keys=[f"c:{n}", f"g:{n}"], args=[PAYLOAD, 1001, 86_400_000, "abcdef"]
            ),
            "publish script, no channel TTL": lambda n: publish(
                keys=[f"d:{n}", f"h:{n}"], args=[PAYLOAD, 1001, 0, "abcdef"]
            ),
        }
        for name, call in cases.items():
            for n in range(1000):  # every channel holds events already
                call(n)
            before = process_cpu_seconds(server.process.pid)
            for n in range(opts.calls):
                call(n % 1000)
            spent = process_cpu_seconds(server.process.pid) - before
            rows.append([name, round(spent / opts.calls * 1e6, 1)])
        client.close()
    print(markdown_table(["case", "redis-server CPU µs per call"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
