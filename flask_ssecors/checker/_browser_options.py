"""How ``--browser`` runs Chromium: :class:`BrowserOptions`, read without loading Playwright."""

from __future__ import annotations

import dataclasses
import os
import shutil
import typing as t

#: Where Debian (and so this project's CI) installs Chromium.
DEFAULT_CHROMIUM: t.Final = "/usr/bin/chromium"


@dataclasses.dataclass(frozen=True, slots=True)
class BrowserOptions:
    """How ``--browser`` runs Chromium.

    :param chromium: the Chromium executable (never downloaded).
    :param insecure: accept any TLS certificate (``--insecure``).
    :param watch: seconds the stream is watched before the relay cuts it.
    :param extra_wait: seconds waited for a reconnect beyond the announced delay.
    """

    chromium: str = DEFAULT_CHROMIUM
    insecure: bool = False
    watch: float = 3.0
    extra_wait: float = 4.0

    def missing(self) -> str:
        """Why the browser audit cannot run here, in words; empty when it can."""
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            return (
                "--browser needs Playwright: pip install 'flask-ssecors[browser]' (Chromium "
                "itself comes from the system, e.g. apt-get install chromium)"
            )
        found = shutil.which(self.chromium)
        if found is None or not os.access(found, os.X_OK):
            return f"--browser needs Chromium at {self.chromium}; install it or pass --chromium"
        return ""
