"""Every problem in ``SSECORS_ALLOWED_ORIGINS`` is its own issue, ``"*"`` among them (issue 14).

Today a ``"*"`` mixed with other entries short-circuits: the one issue reported is the mix, with
the whole list as its value, and the malformed entries beside it are not mentioned. Without
``"*"``, the malformed entries are joined into one issue, again with the whole list as value.

Expected, for a list of strings (the per-view ``origins`` keyword reads the same way):

- one :class:`ConfigIssue` per distinct offending entry, in the order of the list, its
  ``value`` the entry itself (as given), its ``reason`` what is wrong with that entry alone
  (not prefixed with the entry again: ``str(issue)`` already shows the value);
- ``"*"`` beside other entries is one issue with value ``"*"`` ("cannot be mixed"); when
  credentials are on, the same issue also says that ``"*"`` cannot be combined with
  ``SSECORS_ALLOW_CREDENTIALS=True`` (so "use ``"*"`` alone" is never the only advice);
- every other entry is still parsed: each malformed one is an issue, each well-formed one is
  not; the combination checks (an ``http://`` origin with credentials) still run on the
  well-formed ones;
- a value that is not a list of strings stays one issue about the whole value.

Implemented in ``flask_ssecors/_config.py`` (``_origins``).
"""

from __future__ import annotations

import typing as t

import pytest

from flask_ssecors import SSECors
from flask_ssecors._config import read_settings
from flask_ssecors.exceptions import ConfigError
from flask_ssecors.exceptions import ConfigIssue

if t.TYPE_CHECKING:
    from flask import Flask

ORIGINS = "SSECORS_ALLOWED_ORIGINS"
CREDENTIALS = "SSECORS_ALLOW_CREDENTIALS"
GOOD = "https://ok.example.com"
SLASH = "https://a.example.com/"  # trailing slash
BAD_WILDCARD = "https://*example.com"  # a wildcard that is not one leading "*." label
PATH = "https://b.example.com/path"


def refusal(config: dict[str, object]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        read_settings(config)
    return info.value


def origin_issues(error: ConfigError, key: str = ORIGINS) -> list[ConfigIssue]:
    return [issue for issue in error.issues if issue.key == key]


def by_value(issues: list[ConfigIssue]) -> dict[object, str]:
    """The reason of each issue by its value; fails if a value has two issues."""
    values = [issue.value for issue in issues]
    assert len(values) == len(set(map(repr, values))), issues
    return {issue.value: issue.reason for issue in issues}


def test_star_and_two_malformed_entries_are_three_issues() -> None:
    error = refusal({ORIGINS: ["*", SLASH, BAD_WILDCARD]})
    reasons = by_value(origin_issues(error))
    assert list(reasons) == ["*", SLASH, BAD_WILDCARD]
    assert "cannot be mixed" in reasons["*"]
    assert "trailing slash" in reasons[SLASH]
    assert "wildcard" in reasons[BAD_WILDCARD]
    assert len(error.issues) == 3


def test_star_with_credentials_and_a_malformed_entry() -> None:
    """``"*"`` mixed and credentialed is one issue that says both; the bad entry is its own."""
    error = refusal({ORIGINS: ["*", PATH], CREDENTIALS: True})
    reasons = by_value(origin_issues(error))
    assert list(reasons) == ["*", PATH]
    assert "cannot be mixed" in reasons["*"]
    assert CREDENTIALS in reasons["*"]
    assert "path" in reasons[PATH]
    assert len(error.issues) == 2


def test_star_with_credentials_beside_an_insecure_origin() -> None:
    """The combination checks still run on the well-formed entries next to ``"*"``."""
    error = refusal({ORIGINS: ["*", "http://app.example.com"], CREDENTIALS: True})
    reasons = by_value(origin_issues(error))
    assert set(reasons) == {"*", "http://app.example.com"}
    assert "cannot be mixed" in reasons["*"]
    assert CREDENTIALS in reasons["*"]
    assert "not https" in reasons["http://app.example.com"]


def test_well_formed_entries_beside_star_are_not_reported() -> None:
    error = refusal({ORIGINS: [GOOD, "*", "https://*.com", "https://*.example.org"]})
    reasons = by_value(origin_issues(error))
    assert list(reasons) == ["*", "https://*.com"]
    assert "domain you control" in reasons["https://*.com"]


def test_malformed_entries_without_star_are_one_issue_each() -> None:
    """Without ``"*"`` too: no joined reason, no whole list as the value."""
    error = refusal({ORIGINS: [SLASH, GOOD, "null"]})
    reasons = by_value(origin_issues(error))
    assert list(reasons) == [SLASH, "null"]
    assert "null" not in reasons[SLASH]
    assert SLASH not in reasons["null"]


def test_one_issue_per_distinct_value_in_list_order() -> None:
    error = refusal({ORIGINS: ["null", "*", "null", SLASH, "*"]})
    assert [issue.value for issue in origin_issues(error)] == ["null", "*", SLASH]


def test_each_issue_names_its_value_on_its_own_line() -> None:
    error = refusal({ORIGINS: ["*", SLASH, "null"], "SSECORS_MAX_AGE": -1})
    lines = str(error).splitlines()
    assert lines[0] == "flask-ssecors: 4 configuration problems:"
    assert any(line.startswith(f"  - {ORIGINS}: '*': ") for line in lines)
    assert any(line.startswith(f"  - {ORIGINS}: {SLASH!r}: ") for line in lines)
    assert any(line.startswith(f"  - {ORIGINS}: 'null': ") for line in lines)
    for issue in origin_issues(error):
        # The value is shown once, by ConfigIssue.__str__; the reason does not repeat it.
        assert not issue.reason.startswith(f"{issue.value!r}:")


def test_per_view_origins_are_read_the_same_way(app: Flask) -> None:
    sse = SSECors(app)
    with pytest.raises(ConfigError) as info:
        sse.stream(origins=["*", SLASH, BAD_WILDCARD])
    reasons = by_value(origin_issues(info.value, key="origins"))
    assert list(reasons) == ["*", SLASH, BAD_WILDCARD]
    assert "cannot be mixed" in reasons["*"]


def test_a_value_that_is_not_a_list_of_strings_stays_one_issue() -> None:
    """Guard (passes today): a wrong type is about the whole value, not per entry."""
    value = ["*", 42]
    error = refusal({ORIGINS: value})
    assert error.issues == (ConfigIssue(ORIGINS, value, error.issues[0].reason),)
    assert "list of strings" in error.issues[0].reason
