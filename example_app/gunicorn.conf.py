"""gunicorn settings for `make demo`: gevent workers on loopback, API and page ports."""

import os

api_port = int(os.environ.get("API_PORT", "5000"))
page_port = int(os.environ.get("PAGE_PORT", "5001"))

wsgi_app = "example_app:create_app()"
worker_class = "gevent"
workers = 1
worker_connections = 10000
graceful_timeout = 10
timeout = 30
bind = [f"127.0.0.1:{api_port}", f"127.0.0.1:{page_port}"]
accesslog = "-"


def when_ready(server):  # noqa: ARG001
    print(
        f"\n  flask-ssecors demo: open http://localhost:{page_port}/ in a browser"
        f"\n  (API on http://localhost:{api_port}; Ctrl-C to stop)\n",
        flush=True,
    )
