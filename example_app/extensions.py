"""The example's one :class:`~flask_ssecors.SSECors` object, bound to each app by the factory."""

from __future__ import annotations

from flask_ssecors import SSECors

sse = SSECors()
