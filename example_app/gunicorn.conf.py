"""gunicorn settings for ``make demo``: gevent workers on loopback, the API and the page ports.

    API_PORT=5000 PAGE_PORT=5001 gunicorn -c example_app/gunicorn.conf.py

Both ports listen on 127.0.0.1, and on ::1 when this machine has IPv6 loopback (browsers may
resolve ``localhost`` to either), so ``http://localhost:PORT`` and ``http://127.0.0.1:PORT``
both reach the app. ``WORKERS`` (default 1) sets the number of worker processes; more than one
needs a shared broker (``SSECORS_BROKER_URL=redis://...`` or ``postgresql://...``).
"""

from __future__ import annotations

import os
import resource
import secrets
import socket
import typing as t

from flask_ssecors.gunicorn import limit_connections_per_client

if t.TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter

api_port = int(os.environ.get("API_PORT", "5000"))
page_port = int(os.environ.get("PAGE_PORT", "5001"))


def _ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


_hosts = ["127.0.0.1", "[::1]"] if _ipv6_loopback_works() else ["127.0.0.1"]
bind = [f"{host}:{port}" for port in (api_port, page_port) for host in _hosts]

chdir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
wsgi_app = "example_app:create_app()"
proc_name = "flask-ssecors-demo"
# gunicorn 27's control socket lives at one path per user; several demos (or test runs) at once
# would fight over it, and the demo has no use for it.
control_socket_disable = True

# One gevent worker holds thousands of streams; gunicorn accepts only 1,000 connections per
# worker unless told otherwise, and every open stream is one connection.
worker_class = "gevent"
workers = int(os.environ.get("WORKERS", "1"))
worker_connections = 10_000
# Streams never finish by themselves: on SIGTERM, give them this long, then close them; the
# browsers reconnect (to the next server) with Last-Event-ID. Ctrl-C (SIGINT) stops at once.
graceful_timeout = 5
timeout = 30
# gunicorn's gevent worker reads even a connection's first request under this timeout: a
# worker admitting a reconnect storm needs longer than the default 2 s (docs/deployment.rst).
keepalive = 30
# One client address holds at most 128 of the worker's connections (its 64 streams,
# SSECORS_MAX_STREAMS_PER_CLIENT, and its ordinary requests): idle sockets beyond that are
# closed at once, so one address cannot make everyone else wait for a free connection.
# Connections from forwarded_allow_ips (a proxy on this host) are not limited.
post_worker_init = limit_connections_per_client(128)

accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s origin=%({origin}i)s %(M)sms'
errorlog = "-"
loglevel = "info"

# One session secret for every worker of this run (workers read it from the environment).
os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))

if workers > 1 and os.environ.get("SSECORS_BROKER_URL", "memory://").startswith("memory:"):
    raise SystemExit(
        "WORKERS > 1 needs a shared broker: each worker's in-memory broker would only reach "
        "its own clients. Set SSECORS_BROKER_URL=redis://... (or postgresql://...) or run "
        "one worker."
    )


def on_starting(server: Arbiter) -> None:
    """Raise the open-file limit to fit ``worker_connections`` (workers inherit it)."""
    wanted = worker_connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        if limit < wanted:
            server.log.warning(
                "open-file limit is %d; fewer than %d streams fit", limit, worker_connections
            )


def when_ready(server: Arbiter) -> None:
    """Say where to go."""
    print(
        "\n"
        f"  flask-ssecors demo: open http://localhost:{page_port}/ in a browser\n"
        f"  API origin: http://localhost:{api_port} (streams, chat)\n"
        f"  Refused origin, to see a 403: http://127.0.0.1:{page_port}/\n"
        f"  Listening on {', '.join(bind)}; Ctrl-C to stop.\n",
        flush=True,
    )
