"""The documentation names the tests behind its claims: each one it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_REFERENCE = re.compile(r"``(tests/[\w/]+\.py)::(\w+)``")


def _references() -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    for page in sorted((ROOT / "docs").glob("*.rst")):
        for match in _REFERENCE.finditer(page.read_text()):
            found.append((page.name, match.group(1), match.group(2)))
    return found


def test_the_docs_name_tests() -> None:
    assert len(_references()) > 20


@pytest.mark.parametrize(("page", "path", "name"), _references())
def test_every_test_the_docs_name_exists(page: str, path: str, name: str) -> None:
    source = (ROOT / path).read_text()
    assert re.search(rf"^(async )?def {name}\(", source, re.MULTILINE), f"{page}: {path}::{name}"
