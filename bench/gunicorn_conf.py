"""gunicorn settings for :mod:`bench.streams` (bind, worker count and connections come from the
command line). Raises the open-file limit to the hard limit in the master, which the worker
inherits, so one worker can hold tens of thousands of sockets."""

import resource

_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _hard != resource.RLIM_INFINITY and _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))

worker_class = "gevent"
graceful_timeout = 3
timeout = 60
backlog = 4096
accesslog = None
loglevel = "warning"
keepalive = 30  # a connection's first request is read under it too (docs/deployment.rst)
