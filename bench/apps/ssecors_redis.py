"""flask-ssecors with the Redis broker (``BENCH_REDIS_URL``), served by two gevent workers.

The same app as :mod:`bench.apps.ssecors` otherwise. The publisher runs in whichever worker got
``POST /start``; every worker's subscribers get the events through Redis. ``GET /stats`` counts
only the subscribers of the worker that answers it (``subscribers_scope: worker``).
"""

from __future__ import annotations

import os

from .ssecors import create_app

app = create_app(os.environ["BENCH_REDIS_URL"], stats_scope="worker")
