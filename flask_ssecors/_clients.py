"""Who a client is, for the per-client limits: an address, grouped the way one party holds them.

Pure: it imports neither Flask nor gevent.

One party rarely holds just one IPv6 address: a host gets a whole ``/64`` (and can pick any
address in it, for every connection). :func:`client_key` groups them, so that the limits bound
what one party can take, not what one of its addresses can. IPv4 addresses count one by one.
"""

from __future__ import annotations

import functools
import ipaddress
import typing as t

#: Longest key returned for something that is not an IP address (a Unix socket's peer name).
MAX_KEY_LENGTH: t.Final = 100


@functools.lru_cache(maxsize=4096)
def client_key(address: str | None, ipv6_prefix: int = 64) -> str | None:
    """The key the per-client limits count ``address`` under.

    - IPv4: the address itself;
    - IPv6: its ``/ipv6_prefix`` network (``2001:db8:1:2::/64``); an IPv4-mapped address
      (``::ffff:192.0.2.1``) counts as the IPv4 address;
    - anything else (no address, a Unix socket): the value itself, cut to 100 characters, or
      None when there is none.

    :param address: the client's address as Werkzeug sees it (``request.remote_addr``, so
        ``ProxyFix`` applies), or a peer address.
    :param ipv6_prefix: the prefix length that groups IPv6 clients
        (``SSECORS_CLIENT_IPV6_PREFIX``).
    """
    if not address:
        return None
    text = address.strip("[]").partition("%")[0]  # brackets, and an IPv6 zone id
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return address[:MAX_KEY_LENGTH]
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is None:
            network = ipaddress.IPv6Network((ip, ipv6_prefix), strict=False)
            return str(network)
        ip = mapped
    return str(ip)


def is_public(address: str | None) -> bool:
    """Whether ``address`` is a global (public) IP address: not loopback, private, link-local,
    shared (CGNAT) or reserved."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.strip("[]").partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global
