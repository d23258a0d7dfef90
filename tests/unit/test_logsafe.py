"""Escaping untrusted values for log lines (docs/security.rst, "Log injection"; flask-cors
CVE-2024-1681)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_ssecors._logsafe import escape
from flask_ssecors._logsafe import MAX_LOGGED_LENGTH

#: The longest escape of one character: ``\U0001f600``.
_WIDEST = len("\\U0001f600")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "-"),
        ("", '""'),
        ("https://app.example.com", '"https://app.example.com"'),
        ("a b~", '"a b~"'),
        ("a\nb", r'"a\x0ab"'),
        ("a\rb", r'"a\x0db"'),
        ("a\r\nINFO forged", r'"a\x0d\x0aINFO forged"'),
        ("\x00", r'"\x00"'),
        ("\t", r'"\x09"'),
        ("\x1b[31m", r'"\x1b[31m"'),
        ("\x7f", r'"\x7f"'),
        ("\x85", r'"\x85"'),
        ("\xa0", r'"\xa0"'),
        ("é", r'"\xe9"'),
        ("\u2028", r'"\u2028"'),
        ("\u2029", r'"\u2029"'),
        ("\ufeff", r'"\ufeff"'),
        ("\ud800", r'"\ud800"'),
        ("😀", r'"\U0001f600"'),
        ('"', r'"\""'),
        ('a" forged="1', r'"a\" forged=\"1"'),
        ("\\", r'"\\"'),
        ("\\x0a", r'"\\x0a"'),
        (42, '"42"'),
        (b"a\nb", "\"b'a\\\\nb'\""),
        ("a" * MAX_LOGGED_LENGTH, '"' + "a" * MAX_LOGGED_LENGTH + '"'),
        ("a" * (MAX_LOGGED_LENGTH + 1), '"' + "a" * MAX_LOGGED_LENGTH + '..."'),
        ("\n" * (MAX_LOGGED_LENGTH + 5), '"' + r"\x0a" * MAX_LOGGED_LENGTH + '..."'),
    ],
)
def test_escape(value: object, expected: str) -> None:
    assert escape(value) == expected


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        ("GET", 16, '"GET"'),
        ("G" * 17, 16, '"' + "G" * 16 + '..."'),
        ("abc", 3, '"abc"'),
        ("abcd", 3, '"abc..."'),
        ("\r\n\r\n", 2, r'"\x0d\x0a..."'),
        ("abc", 0, '"..."'),
    ],
)
def test_escape_limit(value: str, limit: int, expected: str) -> None:
    assert escape(value, limit) == expected


_ESCAPE = re.compile(r'\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8})|(["\\]))')


def unescape(logged: str) -> str:
    """Invert :func:`escape` for a value that was not cut (written independently)."""
    assert logged.startswith('"') and logged.endswith('"')
    body = logged[1:-1]

    def one(match: re.Match[str]) -> str:
        hex_code = match.group(1) or match.group(2) or match.group(3)
        return chr(int(hex_code, 16)) if hex_code else match.group(4)

    # Every backslash in the body starts one escape: nothing else may remain.
    assert "\\" not in _ESCAPE.sub("", body)
    return _ESCAPE.sub(one, body)


_any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=400)


@given(value=_any_text)
def test_escape_is_one_printable_ascii_line_of_bounded_length(value: str) -> None:
    logged = escape(value)
    assert logged.isascii()
    assert logged.isprintable()
    assert "\n" not in logged and "\r" not in logged
    assert len(logged.splitlines()) <= 1
    assert len(logged) <= 2 + _WIDEST * MAX_LOGGED_LENGTH + len("...")


@given(value=_any_text, limit=st.integers(min_value=0, max_value=64))
def test_escape_bound_follows_the_limit(value: str, limit: int) -> None:
    logged = escape(value, limit)
    assert len(logged) <= 2 + _WIDEST * limit + len("...")
    assert logged.endswith('..."') or len(value) <= limit


@given(value=st.text(st.characters(codec=None, exclude_categories=()), max_size=MAX_LOGGED_LENGTH))
def test_escape_loses_nothing_below_the_limit(value: str) -> None:
    """Distinct values log distinctly: an escaped value can be read back exactly."""
    assert unescape(escape(value)) == value
