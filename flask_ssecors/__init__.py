"""Secure cross-origin Server-Sent Events for Flask, served by gevent."""

from ._extension import SSECors as SSECors
from ._lastid import last_event_id as last_event_id
from .events import Event as Event
