"""No empty code block in the documentation: ``sphinx-build -W`` does not flag a
``code-block`` or ``literalinclude`` whose content went missing, a reader does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").glob("*.rst"))
_DIRECTIVE = re.compile(r"^(\s*)\.\. (code-block|code|sourcecode|literalinclude)::(.*)$")


def empty_blocks(text: str, directory: Path | None = None) -> list[int]:
    """Line numbers (1-based) of code blocks with no content, and of ``literalinclude``
    directives of nothing (no file, one missing under ``directory``, or an empty one)."""
    lines = text.splitlines()
    found = []
    for number, line in enumerate(lines):
        match = _DIRECTIVE.match(line)
        if match is None:
            continue
        indent, directive, argument = match.groups()
        if directive == "literalinclude":
            target = (directory / argument.strip()) if directory and argument.strip() else None
            if target is None or not target.is_file() or not target.read_text().strip():
                found.append(number + 1)
            continue
        content = False
        for following in lines[number + 1 :]:
            if not following.strip():
                continue
            body_indent = len(following) - len(following.lstrip())
            if body_indent <= len(indent):
                break
            if not following.strip().startswith(":"):  # an option line such as :caption:
                content = True
                break
        if not content:
            found.append(number + 1)
    return found


def test_the_checker_finds_an_empty_block() -> None:
    text = "Text\n\n.. code-block:: text\n\nMore text\n\n.. code-block:: python\n\n    x = 1\n"
    assert empty_blocks(text) == [3]
    assert empty_blocks(".. code-block:: text\n    :caption: c\n\nafter\n") == [1]
    assert empty_blocks(".. literalinclude:: missing.txt\n", ROOT / "docs") == [1]


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_no_code_block_is_empty(page: Path) -> None:
    assert empty_blocks(page.read_text(), page.parent) == []
