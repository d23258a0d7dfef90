"""Warnings about a client address that a client may choose: ``ProxyFix`` with a server that
clients can reach directly.

``ProxyFix(x_for=1)`` makes Werkzeug take the client's address from ``X-Forwarded-For``, which
is right only when every request comes through the proxy that sets it. A client that reaches
the server directly sends the header itself and picks its own address, and with it a fresh
:data:`SSECORS_MAX_STREAMS_PER_CLIENT` budget per request. flask-ssecors cannot tell a proxy
from a client, but it can see two signs, and says so once per process (level WARNING):

- the server listens on a wildcard address (``0.0.0.0`` or ``::``, as gunicorn's ``-b 0.0.0.0``)
  while ``ProxyFix`` rewrites the client address: anyone who reaches the port is trusted;
- a request that ``ProxyFix`` rewrote came from a public IP address: a proxy normally talks to
  the app over loopback or a private network.
"""

from __future__ import annotations

import typing as t

from ._clients import is_public
from ._lifecycle import gunicorn_worker
from ._log import get_logger
from ._logsafe import escape

logger = get_logger(__name__)

#: Set in the WSGI environ by Werkzeug's ProxyFix: the values it replaced.
_PROXY_FIX_ORIG: t.Final = "werkzeug.proxy_fix.orig"

_warned_listen = False
_warned_peer = False


def check_forwarded_address(environ: dict[str, t.Any]) -> None:
    """Warn (once per process, for each sign) when the client address comes from
    ``X-Forwarded-For`` and clients can probably reach the server directly."""
    global _warned_listen, _warned_peer
    if _warned_listen and _warned_peer:
        return
    original = environ.get(_PROXY_FIX_ORIG)
    if not isinstance(original, dict):
        return
    peer = original.get("REMOTE_ADDR")
    if peer == environ.get("REMOTE_ADDR"):
        return  # ProxyFix is there but did not rewrite the address (x_for=0, or no header)
    if not _warned_listen:
        _warned_listen = True
        wildcard = [address for address in _listen_addresses() if address in ("0.0.0.0", "::")]
        if wildcard:
            logger.warning(
                "ProxyFix takes the client address from X-Forwarded-For, and the server "
                "listens on %s: a client that reaches it directly, not through the proxy, can "
                "claim any address, and so escape SSECORS_MAX_STREAMS_PER_CLIENT. Bind the "
                "server to an address only the proxy reaches (127.0.0.1, a private address or "
                "a Unix socket) or firewall the port; see docs/deployment.rst, ProxyFix.",
                " and ".join(wildcard),
            )
    if not _warned_peer and is_public(peer):
        _warned_peer = True
        logger.warning(
            "a request with X-Forwarded-For came straight from the public address %s, and "
            "ProxyFix trusted it: if that is not your proxy, clients can choose the address "
            "SSECORS_MAX_STREAMS_PER_CLIENT counts; make the server reachable through the "
            "proxy only (see docs/deployment.rst, ProxyFix).",
            escape(peer),
        )


def _listen_addresses() -> list[str]:
    """The hosts the gunicorn worker of this process listens on (empty under another
    server)."""
    worker = gunicorn_worker()
    hosts = []
    for listener in getattr(worker, "sockets", ()) or ():
        try:
            name = listener.getsockname()
        except (AttributeError, OSError):
            continue
        if isinstance(name, tuple) and name and isinstance(name[0], str):
            hosts.append(name[0])
    return hosts


def _forget() -> None:
    global _warned_listen, _warned_peer
    _warned_listen = _warned_peer = False
