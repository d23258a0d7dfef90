"""Secure cross-origin Server-Sent Events for Flask, served by gevent."""

from .events import Event as Event
from .extension import SSECors as SSECors
from .lastid import last_event_id as last_event_id
