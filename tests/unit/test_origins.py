"""Tests for :mod:`flask_ssecors._origins`: reading the allowlist and matching ``Origin`` values."""

from __future__ import annotations

import ipaddress
import re
import typing as t

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from flask_ssecors._origins import is_serialized_origin
from flask_ssecors._origins import MAX_ORIGIN_LENGTH
from flask_ssecors._origins import OriginError
from flask_ssecors._origins import OriginMatcher
from flask_ssecors._origins import OriginPattern
from flask_ssecors._origins import parse_pattern

# -- parse_pattern: canonical forms --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://app.example.com", "https://app.example.com"),
        ("HTTPS://App.Example.COM", "https://app.example.com"),
        ("Http://LOCALHOST:5001", "http://localhost:5001"),
        ("https://app.example.com:8443", "https://app.example.com:8443"),
        ("https://app.example.com:80", "https://app.example.com:80"),
        ("http://app.example.com:443", "http://app.example.com:443"),
        ("wss://app.example.com", "wss://app.example.com"),
        ("https://*.example.com", "https://*.example.com"),
        ("HTTPS://*.Example.Com:8443", "https://*.example.com:8443"),
        ("https://*.example.co.uk", "https://*.example.co.uk"),
        ("https://*.app.example.com", "https://*.app.example.com"),
        ("https://*.alice.github.io", "https://*.alice.github.io"),
        ("http://*.localhost", "http://*.localhost"),
        ("http://*.localhost:5000", "http://*.localhost:5000"),
        ("http://*.dev.localhost", "http://*.dev.localhost"),
        # IDN: UTS #46 mapping, then punycode.
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        ("https://BÜCHER.example", "https://xn--bcher-kva.example"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
        ("https://XN--BCHER-KVA.example", "https://xn--bcher-kva.example"),
        ("https://*.bücher.example", "https://*.xn--bcher-kva.example"),
        ("https://münchen.de", "https://xn--mnchen-3ya.de"),
        (
            "https://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
            "https://example.com",
        ),  # fullwidth letters
        ("https://example。com", "https://example.com"),  # ideographic full stop
        ("https://faß.de", "https://xn--fa-hia.de"),  # non-transitional, as browsers do
        # Hyphens in the third and fourth place are real (r1---sn-....googlevideo.com).
        ("https://r1---sn-abc.googlevideo.com", "https://r1---sn-abc.googlevideo.com"),
        ("https://a-b.example", "https://a-b.example"),
        ("https://123.example.com", "https://123.example.com"),
        # IP addresses.
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://10.0.0.1", "http://10.0.0.1"),
        ("http://[::1]", "http://[::1]"),
        ("http://[0:0::1]:5001", "http://[::1]:5001"),
        ("http://[0000:0000:0000:0000:0000:0000:0000:0001]", "http://[::1]"),
        ("http://[2001:DB8::1]", "http://[2001:db8::1]"),
        ("http://[::ffff:127.0.0.1]", "http://[::ffff:7f00:1]"),
        ("http://[1:0:0:2:0:0:0:3]", "http://[1:0:0:2::3]"),
        ("http://[1:0:0:2:0:0:3:4]", "http://[1::2:0:0:3:4]"),  # first of two longest runs
        ("http://[1:0:2:3:4:5:6:7]", "http://[1:0:2:3:4:5:6:7]"),  # one zero is not compressed
        # Other schemes.
        ("chrome-extension://abcdefghijklmnop", "chrome-extension://abcdefghijklmnop"),
        ("capacitor://localhost", "capacitor://localhost"),
        ("git+ssh://example.com", "git+ssh://example.com"),
        ("http://intranet", "http://intranet"),
    ],
)
def test_parse_pattern_canonicalises(text: str, expected: str) -> None:
    pattern = parse_pattern(text)
    assert str(pattern) == expected
    assert parse_pattern(expected) == pattern
    if not pattern.wildcard:
        assert is_serialized_origin(expected)
        assert pattern.matches(expected)


def test_parse_pattern_fields() -> None:
    assert parse_pattern("HTTPS://*.Example.COM:8443") == OriginPattern(
        scheme="https", host="example.com", port=8443, wildcard=True
    )
    assert parse_pattern("http://[0::1]") == OriginPattern("http", "[::1]", None, False)


# -- parse_pattern: refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason_fragment"),
    [
        ("", "empty origin"),
        (
            " https://app.example.com",
            "surrounding whitespace; remove it: 'https://app.example.com'",
        ),
        ("https://app.example.com ", "surrounding whitespace"),
        ("https://app.example.com\n", "surrounding whitespace"),
        ("https://app.example .com", "contains whitespace"),
        ("https://app.example\u00a0.com", "contains whitespace"),
        ("https://app.example\r.com", "control character U+000D"),
        ("https://app.example\t.com", "control character U+0009"),
        ("https://app.example\x00.com", "control character U+0000"),
        ("https://app.example\x7f.com", "control character U+007F"),
        ("https://app\u200b.example.com", "invisible character U+200B"),
        ("https://app\u00ad.example.com", "invisible character U+00AD"),
        ("https://a.com, https://b.com", "comma-separated list"),
        ("https://a.com,https://evil.com", "comma-separated list"),
        ("null", "'null'"),
        ("NULL", "cannot be allowed"),
        ("*", "use '*' alone at the list level"),
        ("file:///home/me/page.html", "file: pages"),
        ("FILE://host", "file: pages"),
        ("file://", "file: pages"),
        ("app.example.com", "write 'https://app.example.com'"),
        ("localhost:5000", "write 'http://localhost:5000'"),
        ("App.Example.com:8443", "write 'https://app.example.com:8443'"),
        ("https:/app.example.com", "missing '://'"),
        ("https:app.example.com", "missing '://'"),
        ("://app.example.com", "missing scheme"),
        ("ht tp://app.example.com", "whitespace"),
        ("1https://app.example.com", "invalid scheme"),
        ("ht_tp://app.example.com", "invalid scheme"),
        ("hüttps://app.example.com", "invalid scheme"),
        ("a" * 65 + "://app.example.com", "longer than 64"),
        # Anything beyond scheme://host[:port].
        ("https://app.example.com/", "trailing slash"),
        ("https://app.example.com:8443/", "remove it: 'https://app.example.com:8443'"),
        ("https://app.example.com/path", "has a path ('/path')"),
        ("https://app.example.com//", "has a path"),
        ("https://app.example.com?x=1", "has a query"),
        ("https://app.example.com?", "has a query"),
        ("https://app.example.com#top", "has a fragment"),
        ("https://user@app.example.com", "userinfo"),
        ("https://user:pass@app.example.com", "userinfo"),
        ("https://app.example.com@evil.com", "userinfo"),
        ("https://", "missing host"),
        ("https://:8443", "missing host"),
        # Ports.
        ("https://app.example.com:443", "drop the default port"),
        ("https://app.example.com:443", "write 'https://app.example.com'"),
        ("http://app.example.com:80", "drop the default port"),
        ("wss://app.example.com:443", "drop the default port"),
        ("ws://app.example.com:80", "drop the default port"),
        ("https://*.example.com:443", "write 'https://*.example.com'"),
        ("http://[::1]:80", "write 'http://[::1]'"),
        ("https://app.example.com:0", "port 0"),
        ("https://app.example.com:00", "port 0"),
        ("https://app.example.com:65536", "out of range"),
        ("https://app.example.com:99999999999999999999", "out of range"),
        ("https://app.example.com:" + "9" * 5000, "out of range"),
        ("https://app.example.com:http", "not a number"),
        ("https://app.example.com:+80", "not a number"),
        ("https://app.example.com:-1", "not a number"),
        ("https://app.example.com:٣٠٠٠", "not a number"),  # Arabic-Indic digits
        ("https://app.example.com:", "empty port"),
        ("https://app.example.com:08443", "leading zeros; write ':8443'"),
        ("https://app.example.com:1:2", "at most one ':port'"),
        # Wildcards other than one leading "*." label.
        ("h*", "'*' may only stand for whole leading labels"),
        ("https://*", "use '*' alone at the list level"),
        ("https://*example.com", "'*' may only stand for whole leading labels"),
        ("https://a*.example.com", "'*' may only stand for whole leading labels"),
        ("https://a.*.com", "'*' may only stand for whole leading labels"),
        ("https://app.example.*", "'*' may only stand for whole leading labels"),
        ("https://*.*.example.com", "write it once"),
        ("https://**.example.com", "'*' may only stand for whole leading labels"),
        ("https://.*.example.com", "'*' may only stand for whole leading labels"),
        ("https://*.", "missing domain after '*.'"),
        ("https://*.example.com:*", "wildcard ports are not supported"),
        ("https://app.example.com:*", "wildcard ports are not supported"),
        ("*://app.example.com", "'*' may only stand for whole leading labels"),
        ("http*://app.example.com", "'*' may only stand for whole leading labels"),
        # Regular-expression syntax.
        (r"^https://app\.example\.com$", "regular expressions are not supported"),
        (r"https://.*\.example\.com", "contains '\\\\'"),
        (r"https://(www\.)?example\.com", "contains '('"),
        ("https?://app.example.com", "contains '?'"),
        ("(https|http)://app.example.com", "regular expressions are not supported"),
        ("https://app.example.com$", "contains '$'"),
        ("https://[a-z]+.example.com", "regular expressions are not supported"),
        ("https://app|evil.com", "contains '|'"),
        ("https://a+.example.com", "contains '+'"),
        ("https://a{2}.example.com", "contains '{'"),
        ("https://app.example.com]", "contains ']'"),
        ("https://app.example.com\\", "contains '\\\\'"),
        # Wildcards that would cover too much.
        ("https://*.com", "covers a whole top-level name"),
        ("https://*.internal", "covers a whole top-level name"),
        ("https://*.example", "covers a whole top-level name"),
        ("https://*.co.uk", "'co.uk' is a public suffix"),
        ("https://*.github.io", "'github.io' is a public suffix"),
        ("https://*.GitHub.IO", "'github.io' is a public suffix"),
        ("https://*.com.au", "public suffix"),
        ("https://*.blogspot.com", "public suffix"),
        ("https://*.xn--p1ai", "covers a whole top-level name"),  # .рф
        ("https://*.рф", "covers a whole top-level name"),
        ("https://*.127.0.0.1", "cannot cover an IP address"),
        ("https://*.0.1", "cannot cover an IP address"),
        ("http://*.[::1]", "cannot cover an IP address"),
        ("https://*." + ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 56, "com"]), "no subdomain"),
        # Host names.
        ("https://app..example.com", "empty label"),
        ("https://.example.com", "empty label"),
        ("https://*..example.com", "empty label"),
        ("https://app.example.com.", "remove the trailing dot"),
        ("https://*.example.com.", "remove the trailing dot"),
        ("https://app.example.com。", "remove the trailing dot"),
        ("https://" + "a" * 64 + ".com", "longer than 63"),
        ("https://" + ("a" * 63 + ".") * 4 + "com", "longer than 253"),
        ("https://-app.example.com", "starts or ends with '-'"),
        ("https://app-.example.com", "starts or ends with '-'"),
        ("https://app_1.example.com", "invalid character '_'"),
        ("https://app%2eexample.com", "invalid character '%'"),
        ("https://app;.example.com", "invalid character ';'"),
        ('https://app".example.com', "invalid character '\"'"),
        ("https://xn--zz.example.com", "not valid punycode"),
        ("https://xn--bcher-.example", "not valid punycode"),
        ("https://\u0300a.example", "not a valid internationalised"),  # leading combining mark
        ("https://\u2488.example", "not a valid internationalised"),  # "1." as one code point
        # IPv4 and IPv6.
        ("http://127.1", "'127.0.0.1'"),
        ("http://0x7f.0.0.1", "'127.0.0.1'"),
        ("http://01.2.3.4", "'1.2.3.4'"),
        ("http://2130706433", "'127.0.0.1'"),
        ("http://127.0.0.1.", "remove the trailing dot"),
        ("http://1.2.3.256", "not one"),
        ("http://1.2.3.4.5", "not one"),
        ("https://example.123", "last label of the host is a number"),
        ("http://::1", "write an IPv6 address in brackets"),
        ("http://::1:8080", "write an IPv6 address in brackets"),
        ("http://[::1", "unmatched '['"),
        ("http://[::1]]", "contains ']'"),
        ("http://[::1]x", "unexpected 'x'"),
        ("http://[1.2.3.4]", "not a valid IPv6 address"),
        ("http://[example.com]", "not a valid IPv6 address"),
        ("http://[]", "not a valid IPv6 address"),
        ("http://[::1%25eth0]", "zone"),
        ("http://[fe80::1%eth0]", "zone"),
        ("http://[1:2:3:4:5:6:7:8:9]", "not a valid IPv6 address"),
    ],
)
def test_parse_pattern_refuses(text: str, reason_fragment: str) -> None:
    with pytest.raises(OriginError, match=re.escape(reason_fragment)) as info:
        parse_pattern(text)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.value == text
    assert error.reason == str(error)
    # Every message says what to do, not only what is wrong.
    assert any(
        word in str(error)
        for word in ("write", "remove", "use", "list", "drop", "check", "retype", "serve", "copy")
    ), str(error)


@pytest.mark.parametrize("value", [None, 443, b"https://app.example.com", ["https://a.com"]])
def test_parse_pattern_refuses_non_strings(value: object) -> None:
    with pytest.raises(OriginError, match="must be a string") as info:
        parse_pattern(value)  # type: ignore[arg-type]
    assert info.value.value is value


def test_origin_error_pickles_its_message() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(OriginError("what to do", "x")))
    assert str(error) == "what to do"


def test_longest_valid_pattern_fits_the_request_bound() -> None:
    """Every accepted pattern serializes within MAX_ORIGIN_LENGTH, so no allowed origin is
    cut off by the request-time length check."""
    scheme = "a" * 64
    host = ".".join(["b" * 63, "c" * 63, "d" * 63, "e" * 61])
    assert len(host) == 253
    text = f"{scheme}://{host}:65535"
    assert len(text) == MAX_ORIGIN_LENGTH
    assert str(parse_pattern(text)) == text
    assert is_serialized_origin(text)
    assert OriginMatcher([parse_pattern(text)]).allows(text)


# -- properties of patterns ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "loopback", "secure"),
    [
        ("http://localhost", True, True),
        ("http://localhost:5001", True, True),
        ("http://app.localhost", True, True),
        ("http://*.localhost", True, True),
        ("http://127.0.0.1", True, True),
        ("http://127.8.9.10:8000", True, True),
        ("http://[::1]:8080", True, True),
        ("https://app.example.com", False, True),
        ("wss://app.example.com", False, True),
        ("http://app.example.com", False, False),
        ("ws://app.example.com", False, False),
        ("http://*.example.com", False, False),
        ("http://127.example.com", False, False),
        ("http://128.0.0.1", False, False),
        ("http://10.0.0.1", False, False),
        ("http://[::2]", False, False),
        ("http://[::ffff:7f00:1]", False, False),
        ("http://localhost.example.com", False, False),
        ("http://notlocalhost", False, False),
        ("chrome-extension://abcdef", False, False),
    ],
)
def test_loopback_and_secure(text: str, loopback: bool, secure: bool) -> None:
    pattern = parse_pattern(text)
    assert pattern.is_loopback is loopback
    assert pattern.is_secure is secure


def test_pattern_is_frozen_and_hashable() -> None:
    pattern = parse_pattern("https://app.example.com")
    with pytest.raises(AttributeError):
        pattern.host = "evil.com"  # type: ignore[misc]
    assert len({pattern, parse_pattern("HTTPS://APP.EXAMPLE.COM")}) == 1


# -- is_serialized_origin ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "https://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com:80",
        "http://app.example.com:443",
        "http://localhost:5001",
        "http://localhost",
        "https://a",
        "https://xn--bcher-kva.example",
        "https://r1---sn-abc.googlevideo.com",
        "https://123.example.com",
        "http://127.0.0.1:8000",
        "http://0.0.0.0",
        "http://255.255.255.255",
        "http://[::1]",
        "http://[::1]:8080",
        "http://[2001:db8::1]",
        "http://[::ffff:7f00:1]",
        "http://[1:0:2:3:4:5:6:7]",
        "chrome-extension://abcdefghijklmnop",
        "git+ssh://example.com",
        "a.b-c://example.com",
        "https://app.example.com:65535",
        "https://app.example.com:1",
    ],
)
def test_is_serialized_origin_accepts(value: str) -> None:
    assert is_serialized_origin(value)


_MALFORMED = [
    "",
    "null",
    "NULL",
    "*",
    "https://",
    "https:",
    "://app.example.com",
    "app.example.com",
    "HTTPS://APP.EXAMPLE.COM",
    "Https://app.example.com",
    "https://App.example.com",
    "https://app.example.COM",
    "https://app.example.com:443",
    "http://app.example.com:80",
    "wss://app.example.com:443",
    "https://app.example.com/",
    "https://app.example.com/path",
    "https://app.example.com?",
    "https://app.example.com#",
    "https://app.example.com.",
    "https://app.example.com..",
    "https://.app.example.com",
    "https://app..example.com",
    "https://-app.example.com",
    "https://app-.example.com",
    "https://app.-example.com",
    "https://app_1.example.com",
    "https://" + "a" * 64 + ".example.com",
    "https://" + ("a" * 63 + ".") * 4 + "com",
    "https://user@app.example.com",
    "https://user:pw@app.example.com",
    "https://app.example.com,https://evil.com",
    "https://app.example.com, https://evil.com",
    "https://app.example.com,",
    "https://app.example.com:",
    "https://app.example.com:0",
    "https://app.example.com:08443",
    "https://app.example.com:65536",
    "https://app.example.com:123456",
    "https://app.example.com:8443:8443",
    "https://app.example.com:+1",
    "https://bücher.example",
    "https://\u0430pp.example.com",  # CYRILLIC SMALL LETTER A
    "https://\u212aelvin.example.com",  # KELVIN SIGN, lowercases to "k"
    "https://app.example.com\u200b",
    "file://app.example.com",
    "file:///tmp",
    "1http://app.example.com",
    "-http://app.example.com",
    "a" * 65 + "://app.example.com",
    "https://*.example.com",
    "https://app.example.com://evil.com",
    "https:///app.example.com",
    "https://127.1",
    "https://127.0.0.01",
    "https://0x7f.0.0.1",
    "https://1.2.3.256",
    "https://1.2.3.4.5",
    "https://example.123",
    "https://example.0x1",
    "http://::1",
    "http://[::1",
    "http://[::1]]",
    "http://[::1]:",
    "http://[::1]x",
    "http://[::1]:80",
    "http://[0:0::1]",
    "http://[::0001]",
    "http://[::ffff:127.0.0.1]",
    "http://[1:0:2:3:4:5:6:7]:0",
    "http://[1::2:0:0:3:4]x",
    "http://[1:0:0:2::3:4]",  # not the first longest run
    "http://[2001:DB8::1]",
    "http://[]",
    "http://[fe80::1%eth0]",
    "http://[fe80::1%25eth0]",
    "http://[1.2.3.4]",
    "https://" + "a" * 10_000,
    "x" * (MAX_ORIGIN_LENGTH + 1),
]
_WHITESPACE_AND_CONTROLS = [" ", "\t", "\r", "\n", "\r\n", "\x00", "\x0b", "\x0c", "\x7f", "\x85"]
_MALFORMED += [
    variant
    for char in _WHITESPACE_AND_CONTROLS
    for variant in (
        char + "https://app.example.com",
        "https://app.example.com" + char,
        "https://app" + char + ".example.com",
        "https:" + char + "//app.example.com",
    )
]


@pytest.mark.parametrize("value", _MALFORMED)
def test_is_serialized_origin_refuses(value: str) -> None:
    assert not is_serialized_origin(value)


@pytest.mark.parametrize("value", [None, 1, b"https://app.example.com", ["https://a.com"]])
def test_is_serialized_origin_refuses_non_strings(value: object) -> None:
    assert not is_serialized_origin(value)


# -- OriginMatcher -------------------------------------------------------------------------------

ALLOWLIST = [
    "https://app.example.com",
    "https://*.example.org",
    "https://*.example.net:8443",
    "http://localhost:5001",
    "http://*.localhost",
    "http://[::1]:8080",
    "http://127.0.0.1:8000",
    "https://xn--bcher-kva.example",
    "capacitor://localhost",
]
MATCHER = OriginMatcher(parse_pattern(text) for text in ALLOWLIST)


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        # Exact entries.
        ("https://app.example.com", True),
        ("http://localhost:5001", True),
        ("http://[::1]:8080", True),
        ("http://127.0.0.1:8000", True),
        ("https://xn--bcher-kva.example", True),
        ("capacitor://localhost", True),
        # One or more labels under a wildcard.
        ("https://a.example.org", True),
        ("https://a.b.example.org", True),
        ("https://www.app.example.org", True),
        ("https://1.example.org", True),
        ("https://a-b.example.org", True),
        ("https://" + "a" * 63 + ".example.org", True),
        ("https://x.example.net:8443", True),
        ("http://app.localhost", True),
        ("http://a.b.localhost", True),
        # Never the apex, never look-alikes.
        ("https://example.org", False),
        ("https://example.net:8443", False),
        ("http://localhost", False),
        ("https://evilexample.org", False),
        ("https://evil-example.org", False),
        ("https://example.org.evil.com", False),
        ("https://a.example.org.evil.com", False),
        ("https://evilexample.com", False),
        ("https://app.example.com.evil.com", False),
        ("https://evil.com.app.example.com", False),
        ("https://app.example.com.", False),
        ("https://example.com.", False),
        ("https://a.example.org.", False),
        ("https://.example.org", False),
        ("https://..example.org", False),
        ("https://a..example.org", False),
        ("https://-a.example.org", False),
        ("https://a-.example.org", False),
        ("https://a_b.example.org", False),
        ("https://" + "a" * 64 + ".example.org", False),
        ("https://*.example.org", False),
        ("https://%2a.example.org", False),
        ("https://a.example.org/", False),
        ("https://a.example.org/.example.org", False),
        ("https://evil.com/.example.org", False),
        ("https://evil.com?.example.org", False),
        ("https://evil.com#.example.org", False),
        ("https://evil.com\\.example.org", False),
        ("https://evil.com@a.example.org", False),
        ("https://a.example.org@evil.com", False),
        # Scheme downgrade and other schemes.
        ("http://app.example.com", False),
        ("http://a.example.org", False),
        ("wss://a.example.org", False),
        ("https://app.localhost", False),
        ("ws://app.localhost", False),
        ("http://a.example.net:8443", False),
        ("capacitor://app.localhost", False),
        # Ports.
        ("https://app.example.com:443", False),
        ("https://app.example.com:8443", False),
        ("https://a.example.org:443", False),
        ("https://a.example.org:8443", False),
        ("https://x.example.net", False),
        ("https://x.example.net:8444", False),
        ("https://x.example.net:08443", False),
        ("https://x.example.net:443", False),
        ("http://localhost:5000", False),
        ("http://localhost:05001", False),
        ("http://localhost:5001:5001", False),
        ("http://app.localhost:5001", False),
        ("http://[::1]", False),
        ("http://[::1]:8081", False),
        ("http://127.0.0.1", False),
        # Case variants.
        ("HTTPS://APP.EXAMPLE.COM", False),
        ("https://App.example.com", False),
        ("Https://app.example.com", False),
        ("https://A.example.org", False),
        ("https://a.EXAMPLE.org", False),
        ("https://\u212a.example.org", False),
        # null and lists.
        ("null", False),
        ("https://app.example.com, https://evil.com", False),
        ("https://app.example.com,https://evil.com", False),
        ("https://evil.com,https://app.example.com", False),
        ("https://evil.com, https://app.example.com", False),
        ("https://app.example.com,https://app.example.com", False),
        ("https://a.example.org,https://evil.com", False),
        ("https://app.example.com https://evil.com", False),
        # IDN: only the punycode form a browser sends.
        ("https://bücher.example", False),
        ("https://BÜCHER.example", False),
        ("https://XN--BCHER-KVA.example", False),
        ("https://\uff41pp.example.com", False),  # FULLWIDTH LATIN SMALL LETTER A
        ("https://\u0430pp.example.com", False),  # CYRILLIC SMALL LETTER A
        # IP addresses.
        ("http://[0:0::1]:8080", False),
        ("http://[0::1]:8080", False),
        ("http://[::0001]:8080", False),
        ("http://[::ffff:127.0.0.1]:8080", False),
        ("http://[::ffff:7f00:1]:8080", False),
        ("http://127.1:8000", False),
        ("http://127.0.0.01:8000", False),
        ("http://0x7f.0.0.1:8000", False),
        ("http://2130706433:8000", False),
        ("http://localhost.:5001", False),
        # Length.
        ("https://" + "a" * 10_000 + ".example.org", False),
        ("https://app.example.com" + " " * 10_000, False),
        ("https://" + "a." * 5_000 + "example.org", False),
        ("x" * (MAX_ORIGIN_LENGTH + 1), False),
        (
            "https://"
            + "a" * (MAX_ORIGIN_LENGTH - len("https://.example.org") + 1)
            + ".example.org",
            False,
        ),
        ("", False),
    ]
    + [
        (variant, False)
        for char in _WHITESPACE_AND_CONTROLS
        for variant in (
            char + "https://app.example.com",
            "https://app.example.com" + char,
            "https://app." + char + "example.com",
            "https://a.example.org" + char,
            char + "https://a.example.org",
            "https://a" + char + ".example.org",
        )
    ],
)
def test_matcher(origin: str, expected: bool) -> None:
    assert MATCHER.allows(origin) is expected
    assert any(pattern.matches(origin) for pattern in MATCHER.patterns) is expected
    if expected:
        assert is_serialized_origin(origin)


@pytest.mark.parametrize(
    "origin", ["https://barfoo.com", "https://foobar.com", "https://oo.com", "https://fo.com"]
)
def test_hosts_sharing_a_suffix_do_not_combine(origin: str) -> None:
    """Regression guard for jub0bs/cors GHSA-vhxv-fg4m-p2w8: with ``https://foo.com`` and
    ``https://bar.com`` allowed, a radix tree let ``https://barfoo.com`` in."""
    matcher = OriginMatcher(map(parse_pattern, ["https://foo.com", "https://bar.com"]))
    assert matcher.allows("https://foo.com")
    assert matcher.allows("https://bar.com")
    assert not matcher.allows(origin)


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://a.foo.com", True),
        ("https://a.bar.com", True),
        ("https://a.barfoo.com", False),
        ("https://a.foobar.com", False),
        ("https://barfoo.com", False),
        ("https://a.oo.com", False),
    ],
)
def test_wildcards_sharing_a_suffix_do_not_combine(origin: str, expected: bool) -> None:
    """The same guard as above, for wildcard patterns."""
    matcher = OriginMatcher(map(parse_pattern, ["https://*.foo.com", "https://*.bar.com"]))
    assert matcher.allows(origin) is expected


def test_wildcards_of_different_depths() -> None:
    matcher = OriginMatcher(
        map(
            parse_pattern,
            ["https://*.example.com", "https://*.b.example.org", "https://*.org.uk.example"],
        )
    )
    assert matcher.allows("https://a.example.com")
    assert matcher.allows("https://a.b.example.org")
    assert not matcher.allows("https://b.example.org")
    assert not matcher.allows("https://a.example.org")
    assert matcher.allows("https://x.org.uk.example")
    assert not matcher.allows("https://org.uk.example")


def test_empty_matcher_allows_nothing() -> None:
    matcher = OriginMatcher([])
    assert matcher.patterns == ()
    assert not matcher.allows("https://app.example.com")
    assert not matcher.allows("null")


def test_matcher_keeps_patterns_in_order_without_duplicates() -> None:
    first, second = parse_pattern("https://b.com"), parse_pattern("https://*.a.com")
    matcher = OriginMatcher([first, second, parse_pattern("HTTPS://B.COM")])
    assert matcher.patterns == (first, second)
    assert matcher == OriginMatcher([first, second])
    assert hash(matcher) == hash(OriginMatcher([first, second]))
    assert "https://*.a.com" in repr(matcher)


def test_matcher_is_immutable() -> None:
    with pytest.raises(AttributeError):
        MATCHER.patterns = ()
    with pytest.raises(AttributeError):
        MATCHER._exact = frozenset({"https://evil.com"})
    with pytest.raises(AttributeError):
        del MATCHER.patterns
    assert not MATCHER.allows("https://evil.com")


def test_matcher_survives_copy_and_pickle() -> None:
    import copy
    import pickle

    for clone in (copy.copy(MATCHER), copy.deepcopy(MATCHER), pickle.loads(pickle.dumps(MATCHER))):
        assert clone == MATCHER
        assert clone.allows("https://a.example.org")
        assert not clone.allows("https://example.org")


def test_matcher_takes_parsed_patterns_only() -> None:
    with pytest.raises(TypeError, match="parse_pattern"):
        OriginMatcher(["https://app.example.com"])  # type: ignore[list-item]


@pytest.mark.parametrize("origin", [None, 1, b"https://app.example.com", ["https://a.com"]])
def test_matcher_refuses_non_strings(origin: object) -> None:
    assert not MATCHER.allows(origin)  # type: ignore[arg-type]


# -- properties ----------------------------------------------------------------------------------

_EXACT = frozenset(text for text in ALLOWLIST if "*" not in text)
_WILDCARDS = [
    (pattern.scheme, pattern.host, pattern.port)
    for pattern in map(parse_pattern, ALLOWLIST)
    if pattern.wildcard
]
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _reference_allows(origin: str) -> bool:
    """An independent, deliberately plain model of the allowlist."""
    if origin in _EXACT:
        return True
    for scheme, base, port in _WILDCARDS:
        head = f"{scheme}://"
        tail = f".{base}" if port is None else f".{base}:{port}"
        if len(origin) <= len(head) + len(tail):
            continue
        if not (origin.startswith(head) and origin.endswith(tail)):
            continue
        subdomain = origin[len(head) : -len(tail)]
        labels = subdomain.split(".")
        if len(f"{subdomain}.{base}") <= 253 and all(_LABEL.fullmatch(x) for x in labels):
            return True
    return False


_labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)

_SEEDS = [
    *ALLOWLIST,
    "https://a.example.org",
    "https://a.b.example.org",
    "https://x.example.net:8443",
    "http://app.localhost",
    "https://example.org",
    "https://app.example.com:443",
    "http://[::1]",
]
_NOISE = [*".:/@,;*[]%?#-_ \t\r\n\x00\x0bAZaz09", "\u212a", "\u0131", "\u0430", "é", "ß"]
_AFFIXES = [
    ".",
    "/",
    ":",
    ":443",
    ":80",
    ":8443",
    ":08443",
    ".evil.com",
    "evil",
    "evil.",
    "a.",
    ",https://evil.com",
    ", https://evil.com",
    "\r\n",
    "https://",
    "%00",
]


@st.composite
def _origin_like(draw: st.DrawFn) -> str:
    """An allowed (or nearly allowed) origin, mutated a few times."""
    if draw(st.booleans()):
        value = draw(st.sampled_from(_SEEDS))
    else:
        scheme, base, port = draw(st.sampled_from(_WILDCARDS))
        labels = draw(st.lists(_labels, min_size=1, max_size=3))
        suffix = "" if port is None else f":{port}"
        value = f"{scheme}://{'.'.join(labels)}.{base}{suffix}"
    for _ in range(draw(st.integers(0, 3))):
        operation = draw(
            st.sampled_from(["insert", "delete", "replace", "case", "upper", "append", "prepend"])
        )
        position = draw(st.integers(0, len(value)))
        if operation == "insert":
            value = value[:position] + draw(st.sampled_from(_NOISE)) + value[position:]
        elif operation == "delete":
            value = value[:position] + value[position + 1 :]
        elif operation == "replace":
            value = value[:position] + draw(st.sampled_from(_NOISE)) + value[position + 1 :]
        elif operation == "case":
            value = (
                value[:position] + value[position : position + 1].swapcase() + value[position + 1 :]
            )
        elif operation == "upper":
            value = value.upper()
        elif operation == "append":
            value += draw(st.sampled_from(_AFFIXES))
        else:
            value = draw(st.sampled_from(_AFFIXES)) + value
    return value


@settings(max_examples=1500, deadline=None, database=None)
@given(st.one_of(_origin_like(), st.text(), st.text(alphabet="abehlmoprstx.:/-[]019", max_size=40)))
def test_nothing_outside_the_allowlist_is_allowed(origin: str) -> None:
    expected = _reference_allows(origin)
    assert MATCHER.allows(origin) is expected
    assert any(pattern.matches(origin) for pattern in MATCHER.patterns) is expected
    if expected:
        assert is_serialized_origin(origin)


@settings(max_examples=500, deadline=None, database=None)
@given(_origin_like())
def test_request_and_config_time_agree(origin: str) -> None:
    """A value that passes the request-time check is also a canonical configured origin
    (request time does not decode punycode, so a bogus xn-- label is the one exception)."""
    if not is_serialized_origin(origin):
        return
    try:
        pattern = parse_pattern(origin)
    except OriginError as error:
        assert "punycode" in str(error)
    else:
        assert str(pattern) == origin


_DEFAULTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
_schemes = st.one_of(
    st.sampled_from(["https", "http", "wss", "ws", "ftp", "chrome-extension", "capacitor"]),
    st.from_regex(r"[a-z][a-z0-9+.-]{0,12}", fullmatch=True).filter(lambda s: s != "file"),
)
_domain_labels = _labels.filter(lambda label: not label.startswith("xn--"))
_domains = st.builds(
    lambda labels, top: ".".join([*labels, top]),
    st.lists(_domain_labels, max_size=4),
    st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z]", fullmatch=True).filter(
        lambda label: not label.startswith("xn--")
    ),
)
_hosts = st.one_of(
    _domains,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6)
    .filter(lambda address: t.cast(ipaddress.IPv6Address, address).ipv4_mapped is None)
    .map(lambda address: f"[{address.compressed}]"),
)


@st.composite
def _canonical_origins(draw: st.DrawFn) -> str:
    scheme = draw(_schemes)
    port = draw(st.none() | st.integers(1, 65535).filter(lambda p: p != _DEFAULTS.get(scheme)))
    suffix = "" if port is None else f":{port}"
    if draw(st.booleans()):
        return f"{scheme}://{draw(_hosts)}{suffix}"
    labels = draw(st.lists(_domain_labels, max_size=3))
    base = ".".join([*labels, draw(st.sampled_from(["example.com", "example.co.uk", "localhost"]))])
    return f"{scheme}://*.{base}{suffix}"


@settings(max_examples=500, deadline=None, database=None)
@given(_canonical_origins())
def test_canonical_origins_round_trip(text: str) -> None:
    pattern = parse_pattern(text)
    assert str(pattern) == text
    assert parse_pattern(str(pattern)) == pattern
    assert parse_pattern(text.upper()) == pattern
    if pattern.wildcard:
        concrete = text.replace("*", "a", 1)
        assert is_serialized_origin(concrete)
        assert pattern.matches(concrete)
        assert OriginMatcher([pattern]).allows(concrete)
        assert not OriginMatcher([pattern]).allows(text.replace("*.", "", 1))
    else:
        assert is_serialized_origin(text)
        assert OriginMatcher([pattern]).allows(text)
