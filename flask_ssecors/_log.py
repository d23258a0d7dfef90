"""The loggers of flask-ssecors: one per module, named after it, each stamping request ids.

Every module logs through ``get_logger(__name__)``: a child of the ``flask_ssecors`` logger,
so configuring that one configures them all. Each record gets a ``request_id`` attribute (the
current request's id when ``SSECORS_REQUEST_ID_HEADER`` is set, else ``"-"``), so that a
format string can use ``%(request_id)s``. The filter is added once, at import, to these loggers
only; nothing else in the process is touched.
"""

from __future__ import annotations

import logging

from .requestid import RequestIdFilter


def get_logger(name: str) -> logging.Logger:
    """The logger of the module ``name``, with the request id filter."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RequestIdFilter) for f in logger.filters):
        logger.addFilter(RequestIdFilter())
    return logger
