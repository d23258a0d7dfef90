"""The flask-ssecors example app: a page on one origin streaming from an API on another."""

from __future__ import annotations

from .app import create_app as create_app
