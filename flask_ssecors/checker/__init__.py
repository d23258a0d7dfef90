"""The stream auditor: ``ssecors-check``, and the same checks from Python.

A second product beside the extension, in a package of its own: it audits any live
Server-Sent Events endpoint the way a browser on another origin uses it (see docs/cli.rst). It
needs the ``check`` extra (``pip install "flask-ssecors[check]"``: ``h11`` and ``h2``), and
``browser`` (Playwright) for the audit in Chromium; ``import flask_ssecors`` loads none of it.

.. code-block:: python

    from flask_ssecors.checker import check_stream

    report = check_stream("https://api.example.com/events", "https://app.example.com")
    assert report.ok, report.to_text()

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._audit import Item as Item
from ._browser_options import BrowserOptions as BrowserOptions
from ._check import check_stream as check_stream
from ._report import Report as Report

__all__ = ["BrowserOptions", "Item", "Report", "check_stream"]
