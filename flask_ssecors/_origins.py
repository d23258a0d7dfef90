"""Origins: read the configured allowlist, recognise well-formed ``Origin`` values, match them.

The module has two halves with different duties.

*Configuration time* (:func:`parse_pattern`) is strict and explains itself. It accepts exact
origins (``scheme://host[:port]``) and one wildcard form (``scheme://*.domain[:port]``), and
refuses everything else with an :class:`OriginError` that says what is wrong and what to write
instead. Host names are canonicalised the way a browser serializes them: lowercase, IDN labels
as punycode (UTS #46 mapping, through the :mod:`idna` package), IPv4 as a dotted quad, IPv6
compressed in brackets, the scheme's default port left out.

*Request time* (:func:`is_serialized_origin`, :class:`OriginMatcher`) is strict and cheap. A
raw ``Origin`` value is never parsed as a URL, lowercased or otherwise repaired: it is length
checked, character-class checked, split at ``://`` and looked up. Only the exact ASCII
serialization a browser sends can match, so ``HTTPS://APP.EXAMPLE.COM``, ``:443``, a trailing
dot or slash, ``null`` and two ``Origin`` headers joined by a comma are all refused.

Nothing here accepts regular expressions: flask-cors' start-anchored regexes let
``https://x.example.com.evil.net`` through, and treating ``*`` as a regex let
``https://xexample.com`` in. A wildcard here means "one or more whole labels", and nothing else.

.. versionadded:: 0.1
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
import socket
import types
import typing as t
import unicodedata

import idna
from publicsuffixlist import PublicSuffixList

if t.TYPE_CHECKING:
    import collections.abc as cabc

_MAX_SCHEME_LENGTH: t.Final = 64
_MAX_HOST_LENGTH: t.Final = 253
_MAX_LABEL_LENGTH: t.Final = 63

#: The longest ``Origin`` value that can be well-formed: a 64-character scheme, ``://``, a
#: 253-character host and ``:65535``. Longer values are refused before any other work.
MAX_ORIGIN_LENGTH: t.Final[int] = _MAX_SCHEME_LENGTH + len("://") + _MAX_HOST_LENGTH + len(":65535")

#: Default ports of the URL Standard's special schemes; browsers never serialize them.
_DEFAULT_PORTS: t.Final[t.Mapping[str, int]] = types.MappingProxyType(
    {"ftp": 21, "http": 80, "https": 443, "ws": 80, "wss": 443}
)
_DEFAULT_PORT_TEXT: t.Final[t.Mapping[str, str]] = types.MappingProxyType(
    {scheme: str(port) for scheme, port in _DEFAULT_PORTS.items()}
)
_SECURE_SCHEMES: t.Final = frozenset({"https", "wss"})

# Request-time character classes: each is one class with one quantifier, so matching is linear.
_ORIGIN_CHARS: t.Final = re.compile(r"[a-z0-9+.:/\[\]-]+")
_SCHEME: t.Final = re.compile(r"[a-z][a-z0-9+.-]*")
_HOST_CHARS: t.Final = re.compile(r"[a-z0-9.-]+")
_IPV6_CHARS: t.Final = re.compile(r"[0-9a-f:]+")
_HEX_NUMBER: t.Final = re.compile(r"0x[0-9a-f]*")

_LDH: t.Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_REGEX_CHARS: t.Final = frozenset("^$()[]\\|+{}?")
_BARE_HOST: t.Final = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]+)?")

_EXAMPLE: t.Final = "such as 'https://app.example.com' or 'https://*.example.com'"
_WILDCARD_OVER_IP: t.Final = (
    "a wildcard cannot cover an IP address; list each address as an exact origin."
)


class OriginError(ValueError):
    """A configured origin or origin pattern was refused.

    The message (``str(error)``) says what is wrong and what to write instead; it does not
    repeat the value, which the configuration reader reports beside it.

    :param reason: what is wrong and what to do.
    :param value: the refused value, as given.
    """

    def __init__(self, reason: str, value: object = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.value = value


@dataclasses.dataclass(frozen=True, slots=True)
class OriginPattern:
    """One allowed origin, or one ``scheme://*.domain[:port]`` pattern, in canonical form.

    Build it with :func:`parse_pattern`, which canonicalises and validates; the fields are not
    checked again here.

    :param scheme: the scheme, lowercase.
    :param host: the canonical ASCII host (punycode, dotted-quad IPv4, ``[compressed IPv6]``);
        for a wildcard, the base domain without the ``*.``.
    :param port: the port, or None for the scheme's default port.
    :param wildcard: whether this matches one or more labels under ``host`` (never ``host``
        itself).
    """

    scheme: str
    host: str
    port: int | None
    wildcard: bool

    def __str__(self) -> str:
        host = f"*.{self.host}" if self.wildcard else self.host
        port = "" if self.port is None else f":{self.port}"
        return f"{self.scheme}://{host}{port}"

    @property
    def is_loopback(self) -> bool:
        """Whether the host is ``localhost``, a ``*.localhost`` name, ``127.0.0.0/8`` or
        ``[::1]``. A wildcard over ``localhost`` is loopback too."""
        host = self.host
        if host == "localhost" or host.endswith(".localhost"):
            return True
        if host.startswith("["):
            return host == "[::1]"
        return host.startswith("127.") and _ends_in_number(host)

    @property
    def is_secure(self) -> bool:
        """Whether pages on this origin are secure contexts: ``https`` or ``wss``, or a
        loopback host."""
        return self.scheme in _SECURE_SCHEMES or self.is_loopback

    def matches(self, origin: str) -> bool:
        """Whether the raw ``Origin`` value ``origin`` is this origin, or is covered by this
        pattern.

        Any string may be passed: only a canonical serialized origin can match. To check a
        value against a whole allowlist, use :class:`OriginMatcher`, which does less work.

        :param origin: the request's ``Origin`` header value, unmodified.
        """
        if not self.wildcard:
            return origin == str(self)
        if not is_serialized_origin(origin):
            return False
        prefix = f"{self.scheme}://"
        suffix = f".{self.host}" if self.port is None else f".{self.host}:{self.port}"
        return (
            len(origin) > len(prefix) + len(suffix)
            and origin.startswith(prefix)
            and origin.endswith(suffix)
        )


def parse_pattern(text: str) -> OriginPattern:
    """Read one configured origin or origin pattern, and return it in canonical form.

    Accepted: ``scheme://host[:port]`` and ``scheme://*.domain[:port]``, where ``*.`` stands for
    one or more whole labels (``https://*.example.com`` covers ``https://a.b.example.com`` but
    not ``https://example.com``). Scheme and host are case-insensitive here; IDN hosts may be
    written in Unicode or punycode.

    Refused, each with a message saying what to do: ``null``, ``*``, ``file:``, paths (even a
    lone ``/``), queries, fragments, userinfo, a default port written out, invalid ports,
    regular-expression syntax, any other wildcard form, a wildcard over a public suffix (per
    the Public Suffix List), over an IP address or over a single label other than
    ``localhost``, and invalid or non-canonical hosts (trailing dot, ``127.1``, unbracketed
    IPv6, ...).

    :param text: the configured value.
    :raises OriginError: when the value is refused.
    """
    try:
        return _parse(text)
    except OriginError as error:
        error.value = text
        raise


def is_serialized_origin(value: object) -> bool:
    """Whether ``value`` is exactly the ASCII serialization of an origin, as a browser sends it.

    That is ``scheme://host[:port]`` with a lowercase scheme other than ``file``, a lowercase
    LDH host name, a dotted-quad IPv4 address or a compressed IPv6 address in brackets, and a
    port only when it is not the scheme's default. No trailing dot or slash, no whitespace or
    control characters, no lists, no ``null``. The value is never repaired, and the work is
    linear in a length bounded by :data:`MAX_ORIGIN_LENGTH`.

    :param value: a raw ``Origin`` header value.
    """
    if not isinstance(value, str) or len(value) > MAX_ORIGIN_LENGTH:
        return False
    if _ORIGIN_CHARS.fullmatch(value) is None:
        return False
    scheme, separator, rest = value.partition("://")
    if (
        not separator
        or len(scheme) > _MAX_SCHEME_LENGTH
        or _SCHEME.fullmatch(scheme) is None
        or scheme == "file"
        or "/" in rest
    ):
        return False
    if rest.startswith("["):
        host, close, after = rest[1:].partition("]")
        if not close or not _is_canonical_ipv6(host):
            return False
        return not after or (after[0] == ":" and _is_canonical_port(after[1:], scheme))
    host, colon, port = rest.partition(":")
    return _is_canonical_host(host) and (not colon or _is_canonical_port(port, scheme))


class OriginMatcher:
    """An allowlist of origin patterns, compiled once for fast request-time checks.

    Exact origins are kept as their canonical strings in a :class:`frozenset`, so a raw
    ``Origin`` value is allowed only if it is byte-for-byte one of them. Wildcard patterns are
    grouped by scheme and port; a value under one of them is checked for well-formedness and
    then matched on whole labels. Instances are immutable.

    :param patterns: the allowed origins and patterns, from :func:`parse_pattern`.
    """

    __slots__ = ("_exact", "_wildcards", "patterns")

    #: The patterns, in the given order, without duplicates.
    patterns: tuple[OriginPattern, ...]
    _exact: frozenset[str]
    #: ``(scheme, port text or "")`` -> (distinct base lengths, base domains).
    _wildcards: t.Mapping[tuple[str, str], tuple[tuple[int, ...], frozenset[str]]]

    def __init__(self, patterns: cabc.Iterable[OriginPattern]) -> None:
        unique = tuple(dict.fromkeys(patterns))
        for pattern in unique:
            if not isinstance(pattern, OriginPattern):
                raise TypeError(
                    f"OriginMatcher takes OriginPattern items, not {type(pattern).__name__}; "
                    "read strings with parse_pattern() first."
                )
        groups: dict[tuple[str, str], set[str]] = {}
        for pattern in unique:
            if pattern.wildcard:
                port = "" if pattern.port is None else str(pattern.port)
                groups.setdefault((pattern.scheme, port), set()).add(pattern.host)
        wildcards = {
            key: (tuple(sorted({len(base) for base in bases})), frozenset(bases))
            for key, bases in groups.items()
        }
        exact = frozenset(str(pattern) for pattern in unique if not pattern.wildcard)
        object.__setattr__(self, "patterns", unique)
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_wildcards", types.MappingProxyType(wildcards))

    def __setattr__(self, name: str, value: object) -> t.NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> t.NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({[str(pattern) for pattern in self.patterns]!r})"

    def __reduce__(self) -> tuple[type[OriginMatcher], tuple[tuple[OriginPattern, ...]]]:
        return type(self), (self.patterns,)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OriginMatcher):
            return NotImplemented
        return self.patterns == other.patterns

    def __hash__(self) -> int:
        return hash(self.patterns)

    def allows(self, origin: str) -> bool:
        """Whether the raw ``Origin`` value ``origin`` is on the allowlist.

        :param origin: the request's ``Origin`` header value, unmodified.
        """
        if not isinstance(origin, str) or len(origin) > MAX_ORIGIN_LENGTH:
            return False
        if origin in self._exact:
            return True
        if not self._wildcards or not is_serialized_origin(origin):
            return False
        scheme, _, rest = origin.partition("://")
        if rest.startswith("["):
            return False  # wildcards never cover IP addresses
        host, _, port = rest.partition(":")
        group = self._wildcards.get((scheme, port))
        if group is None:
            return False
        lengths, bases = group
        size = len(host)
        for length in lengths:
            if length + 1 >= size:
                break
            if host[size - length - 1] == "." and host[size - length :] in bases:
                return True
        return False


# -- request time ---------------------------------------------------------------------------


def _ends_in_number(host: str) -> bool:
    """Whether the URL Standard would read ``host`` (lowercase ASCII) as an IPv4 address."""
    last = host.rpartition(".")[2]
    return last.isdigit() or _HEX_NUMBER.fullmatch(last) is not None


def _is_dotted_quad(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(
        part.isdigit() and len(part) <= 3 and (part == "0" or part[0] != "0") and int(part) < 256
        for part in parts
    )


def _is_canonical_host(host: str) -> bool:
    """Whether ``host`` is a canonical LDH host name or dotted-quad IPv4 address."""
    if len(host) > _MAX_HOST_LENGTH or _HOST_CHARS.fullmatch(host) is None:
        return False
    if _ends_in_number(host):
        return _is_dotted_quad(host)
    return (
        host[0] not in ".-"
        and host[-1] not in ".-"
        and ".." not in host
        and ".-" not in host
        and "-." not in host
        and max(map(len, host.split("."))) <= _MAX_LABEL_LENGTH
    )


def _is_canonical_ipv6(text: str) -> bool:
    if len(text) > 39 or _IPV6_CHARS.fullmatch(text) is None:
        return False
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return _serialize_ipv6(address.packed) == text


def _is_canonical_port(port: str, scheme: str) -> bool:
    return (
        0 < len(port) <= 5
        and port.isdigit()
        and port[0] != "0"
        and int(port) <= 65535
        and port != _DEFAULT_PORT_TEXT.get(scheme)
    )


def _serialize_ipv6(packed: bytes) -> str:
    """Serialize an IPv6 address as the URL Standard does (not as :mod:`ipaddress` does, which
    writes IPv4-mapped addresses in dotted form on newer Pythons)."""
    pieces = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]
    best_start, best_length = -1, 1
    index = 0
    while index < 8:
        if pieces[index]:
            index += 1
            continue
        end = index
        while end < 8 and not pieces[end]:
            end += 1
        if end - index > best_length:
            best_start, best_length = index, end - index
        index = end
    if best_start < 0:
        return ":".join(f"{piece:x}" for piece in pieces)
    head = ":".join(f"{piece:x}" for piece in pieces[:best_start])
    tail = ":".join(f"{piece:x}" for piece in pieces[best_start + best_length :])
    return f"{head}::{tail}"


# -- configuration time ---------------------------------------------------------------------


@functools.cache
def _public_suffix_list() -> PublicSuffixList:
    """The Public Suffix List (ICANN and private sections), loaded once, on first use."""
    return PublicSuffixList()


def _parse(text: str) -> OriginPattern:
    _check_text(text)
    scheme_text, separator, rest = text.partition("://")
    if not separator:
        raise OriginError(_missing_separator(text))
    scheme = _parse_scheme(scheme_text)
    authority = _authority(rest, scheme)
    host_text, port_text = _split_authority(authority)
    wildcard, host_text = _split_wildcard(host_text)
    if wildcard and _ends_in_number(host_text.lower()):
        raise OriginError(_WILDCARD_OVER_IP)
    port = _parse_port(port_text)
    host = _canonical_host(host_text)
    if port is not None and port == _DEFAULT_PORTS.get(scheme):
        canonical = OriginPattern(scheme, host, None, wildcard)
        raise OriginError(
            f"drop the default port: {scheme} already means port {port}, and browsers never "
            f"send it; write {str(canonical)!r}."
        )
    if wildcard:
        _check_wildcard_base(host)
    return OriginPattern(scheme, host, port, wildcard)


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise OriginError(
            f"an origin must be a string, not {type(text).__name__}; write one {_EXAMPLE}."
        )
    if not text:
        raise OriginError(f"empty origin; write an origin {_EXAMPLE}, or remove the entry.")
    if text.strip() != text:
        raise OriginError(f"surrounding whitespace; remove it: {text.strip()!r}.")
    if "," in text:
        raise OriginError(
            "a comma-separated list in one entry; list each origin as a separate item."
        )
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc":
            raise OriginError(f"contains the control character U+{ord(char):04X}; remove it.")
        if char.isspace():
            raise OriginError(
                "contains whitespace; remove it, and list each origin as a separate item."
            )
        if category[0] == "C":
            raise OriginError(
                f"contains the invisible character U+{ord(char):04X}; retype the origin without it."
            )
    lowered = text.lower()
    if lowered == "null":
        raise OriginError(
            "'null' is the origin of sandboxed frames, file: pages and cross-origin redirects, "
            "which any site can produce, so it cannot be allowed; remove it."
        )
    if text == "*":
        raise OriginError(
            "'*' is not an origin pattern; to allow every origin, use '*' alone at the list "
            "level (never with credentials), or list the exact origins."
        )
    if lowered.startswith("file:"):
        raise OriginError(
            "file: pages have no usable origin (browsers send 'null' for them), so they cannot "
            "be allowed; serve the page over https, or over http://localhost while developing."
        )


def _missing_separator(text: str) -> str:
    if "*" in text:
        return _wildcard_form_message()
    if _BARE_HOST.fullmatch(text):
        lowered = text.lower()
        host = lowered.partition(":")[0]
        local = host == "localhost" or host.endswith(".localhost") or host.startswith("127.")
        suggestion = f"{'http' if local else 'https'}://{lowered}"
        return f"missing the scheme and '://'; write {suggestion!r}."
    return f"missing '://'; write scheme://host[:port], {_EXAMPLE}."


def _wildcard_form_message() -> str:
    return (
        "'*' may only stand for whole leading labels: write it once, as '*.' at the start of "
        "the host, as in 'https://*.example.com'; partial, inner and repeated wildcards are "
        "not supported."
    )


def _regex_message(found: str) -> str:
    return (
        f"contains {found!r}: regular expressions are not supported; list exact origins, or "
        "use one leading '*.' label as in 'https://*.example.com'."
    )


def _parse_scheme(text: str) -> str:
    if not text:
        raise OriginError(f"missing scheme before '://'; write an origin {_EXAMPLE}.")
    if "*" in text:
        raise OriginError(_wildcard_form_message())
    found = next((char for char in text if char in _REGEX_CHARS and char != "+"), None)
    if found is not None:
        raise OriginError(_regex_message(found))
    scheme = text.lower()
    if scheme == "file":
        raise OriginError(
            "file: pages have no usable origin (browsers send 'null' for them); serve the "
            "page over https, or over http://localhost while developing."
        )
    if len(scheme) > _MAX_SCHEME_LENGTH:
        raise OriginError(
            f"the scheme is longer than {_MAX_SCHEME_LENGTH} characters; check the value."
        )
    if not scheme.isascii() or _SCHEME.fullmatch(scheme) is None:
        raise OriginError(
            f"invalid scheme {text!r}; write a letter followed by letters, digits, '+', '-' "
            "or '.', such as 'https'."
        )
    return scheme


def _authority(rest: str, scheme: str) -> str:
    """Return the ``host[:port]`` part of ``rest`` (what follows ``://``), or raise."""
    end = min((index for index in map(rest.find, "/?#") if index >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    body = authority
    if authority.startswith("*.["):
        raise OriginError(_WILDCARD_OVER_IP)
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise OriginError(
                "unmatched '['; write an IPv6 address in brackets, as in 'http://[::1]:8080'."
            )
        body = authority[close + 1 :]
    else:
        body = authority.partition(":")[0]  # a bad port gets its own message
    found = next((char for char in body if char in _REGEX_CHARS), None)
    if found is not None:
        raise OriginError(_regex_message(found))
    if tail:
        bare = f"{scheme}://{authority}"
        if tail == "/":
            raise OriginError(
                f"trailing slash; an origin has no path, and browsers never send one: "
                f"remove it: {bare!r}."
            )
        part = {"/": "a path", "?": "a query", "#": "a fragment"}[tail[0]]
        raise OriginError(
            f"has {part} ({tail!r}); an origin is only scheme://host[:port]: write {bare!r}."
        )
    if "@" in authority:
        raise OriginError(
            "contains userinfo ('...@'); browsers never send it in Origin: remove everything "
            "up to and including the '@'."
        )
    if not authority:
        raise OriginError(f"missing host after '://'; write an origin {_EXAMPLE}.")
    return authority


def _split_authority(authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        close = authority.index("]")
        host, after = authority[: close + 1], authority[close + 1 :]
        if not after:
            return host, None
        if after[0] != ":":
            raise OriginError(
                f"unexpected {after!r} after the IPv6 address; write '[address]:port'."
            )
        return host, after[1:]
    if authority.count(":") > 1:
        raise OriginError(
            "more than one ':' after the host; write an IPv6 address in brackets, as in "
            "'http://[::1]:8080', and at most one ':port'."
        )
    host, colon, port = authority.partition(":")
    return host, (port if colon else None)


def _split_wildcard(host: str) -> tuple[bool, str]:
    if "*" not in host:
        return False, host
    if host == "*":
        raise OriginError(
            "a lone '*' host would match every site; to allow every origin, use '*' alone at "
            "the list level (never with credentials), or name a domain as in "
            "'https://*.example.com'."
        )
    if host.startswith("*.*."):
        raise OriginError(
            "one '*.' already stands for any number of labels; write it once, as in "
            "'https://*.example.com'."
        )
    if host.startswith("*.") and "*" not in host[2:]:
        if not host[2:]:
            raise OriginError("missing domain after '*.'; write 'https://*.example.com'.")
        return True, host[2:]
    raise OriginError(_wildcard_form_message())


def _parse_port(text: str | None) -> int | None:
    if text is None:
        return None
    if not text:
        raise OriginError("empty port after ':'; remove the ':' or write the port number.")
    if "*" in text:
        raise OriginError(
            "wildcard ports are not supported; list each port as an origin of its own."
        )
    if not (text.isascii() and text.isdigit()):
        raise OriginError(f"port {text!r} is not a number; write digits only, as in ':8443'.")
    if len(text) > 5 or int(text) > 65535:
        raise OriginError(f"port {text} is out of range; write a port from 1 to 65535.")
    number = int(text)
    if number == 0:
        raise OriginError("port 0 cannot be connected to; write the port the page is served on.")
    if text[0] == "0":
        raise OriginError(f"port {text!r} has leading zeros; write ':{number}'.")
    return number


def _canonical_host(host: str) -> str:
    if not host:
        raise OriginError(f"missing host; write an origin {_EXAMPLE}.")
    if host.startswith("["):
        return _canonical_ipv6(host)
    return _canonical_domain(host)


def _canonical_ipv6(host: str) -> str:
    inner = host[1:-1]
    if "%" in inner:
        raise OriginError(
            "IPv6 zone identifiers ('%...') never appear in an origin; remove the zone."
        )
    try:
        address = ipaddress.IPv6Address(inner)
    except ValueError:
        raise OriginError(
            f"{host!r} is not a valid IPv6 address; write one such as '[::1]' or '[2001:db8::1]'."
        ) from None
    return f"[{_serialize_ipv6(address.packed)}]"


def _canonical_domain(host: str) -> str:
    if host.isascii():
        mapped = host.lower()
    else:
        try:
            mapped = idna.uts46_remap(host, std3_rules=True, transitional=False)
        except UnicodeError as error:
            raise OriginError(
                f"{host!r} is not a valid internationalised host name ({error}); check the "
                "spelling, or write its punycode (xn--) form."
            ) from None
    if mapped.endswith("."):
        raise OriginError(
            "remove the trailing dot: browsers treat 'example.com.' as a different origin "
            "from 'example.com', and pages are almost never served on it."
        )
    labels = mapped.split(".")
    if "" in labels:
        raise OriginError(
            "empty label in the host (a leading dot or two dots in a row); remove the extra dot."
        )
    canonical = ".".join(_ascii_label(label) for label in labels)
    if len(canonical) > _MAX_HOST_LENGTH:
        raise OriginError(
            f"host name longer than {_MAX_HOST_LENGTH} characters (in punycode); check the value."
        )
    if _ends_in_number(canonical):
        return _canonical_ipv4(canonical)
    return canonical


def _ascii_label(label: str) -> str:
    if not label.isascii():
        try:
            label = idna.alabel(label).decode("ascii")
        except UnicodeError as error:
            raise OriginError(
                f"{label!r} is not a valid internationalised label ({error}); check the spelling."
            ) from None
    else:
        found = next((char for char in label if char not in _LDH), None)
        if found is not None:
            raise OriginError(
                f"invalid character {found!r} in the host label {label!r}; host names contain "
                "only letters, digits and '-': remove or replace it."
            )
        if label.startswith("xn--"):
            try:
                idna.ulabel(label)
            except UnicodeError as error:
                raise OriginError(
                    f"{label!r} is not valid punycode ({error}); copy the name from the "
                    "browser's address bar, or write it in Unicode."
                ) from None
    if label.startswith("-") or label.endswith("-"):
        raise OriginError(
            f"the host label {label!r} starts or ends with '-', which host names may not do; "
            "check the spelling."
        )
    if len(label) > _MAX_LABEL_LENGTH:
        raise OriginError(
            f"the host label {label[:20]!r}... is longer than {_MAX_LABEL_LENGTH} characters; "
            "check the value."
        )
    return label


def _canonical_ipv4(host: str) -> str:
    if _is_dotted_quad(host):
        return host
    try:
        suggestion = socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        raise OriginError(
            "the last label of the host is a number, so browsers read it as an IPv4 address, "
            "but it is not one; write a dotted quad such as '192.0.2.1', or a real domain name."
        ) from None
    raise OriginError(
        f"write the IPv4 address as a plain dotted quad, as browsers send it: {suggestion!r}."
    )


def _check_wildcard_base(base: str) -> None:
    if base.startswith("[") or _ends_in_number(base):
        raise OriginError(_WILDCARD_OVER_IP)
    if len(base) > _MAX_HOST_LENGTH - 2:
        raise OriginError(
            "the domain under '*.' is so long that no subdomain of it fits in a host name; "
            "check the value."
        )
    if "." not in base:
        if base == "localhost":
            return
        raise OriginError(
            f"'*.{base}' covers a whole top-level name, which many parties can register "
            f"under; use a domain you control, as in 'https://*.yourcompany.{base}'."
        )
    if _public_suffix_list().is_public(base):
        raise OriginError(
            f"'{base}' is a public suffix: anyone can register a site under '*.{base}'; "
            f"use a domain you control, as in 'https://*.example.{base}'."
        )
