"""What README.md tells users to run, read from README.md itself.

Tests use these instead of copies, so the README cannot drift from what is tested: the
``## Install`` section's ``pip install`` commands, the ``## Quickstart`` section's Python code
(every ``python`` block, in order, is ``app.py``) and its ``gunicorn`` command.
"""

from __future__ import annotations

import configparser
import dataclasses
import re
import shlex

from .servers import ROOT

README = ROOT / "README.md"
_FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[ \t]*\n(?P<text>.*?)^```[ \t]*$", re.M | re.S)
_EXTRAS = re.compile(r"^(?P<name>[^\[\]]*)\[(?P<extras>[^\]]*)\]$")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block."""

    lang: str
    text: str

    def commands(self) -> list[list[str]]:
        """The shell commands of a ``console`` block (its ``$ `` lines), split as a shell
        would split them."""
        return [shlex.split(line[2:]) for line in self.text.splitlines() if line.startswith("$ ")]


def section(title: str, text: str | None = None) -> str:
    """The body of the ``## title`` section (up to the next ``## `` heading)."""
    text = README.read_text(encoding="utf-8") if text is None else text
    match = re.search(rf"^## {re.escape(title)}[ \t]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if match is None:
        raise LookupError(f"README.md has no '## {title}' section")
    return match.group(1)


def blocks(body: str, lang: str) -> list[Block]:
    """The fenced blocks of ``body`` in language ``lang``, in order."""
    return [
        Block(m.group("lang"), m.group("text"))
        for m in _FENCE.finditer(body)
        if m.group("lang") == lang
    ]


def commands(title: str, program: str) -> list[list[str]]:
    """The ``program`` commands of the ``console`` blocks of section ``title``."""
    found = [
        argv
        for block in blocks(section(title), "console")
        for argv in block.commands()
        if argv and argv[0] == program
    ]
    if not found:
        raise LookupError(f"README.md's '{title}' section shows no {program} command")
    return found


def quickstart_code() -> str:
    """``app.py``: the quickstart's Python blocks, joined."""
    code = [block.text for block in blocks(section("Quickstart"), "python")]
    if not code:
        raise LookupError("README.md's Quickstart has no python block")
    return "\n\n".join(code)


def serve_command() -> list[str]:
    """The quickstart's ``gunicorn ...`` command, split into arguments."""
    (argv,) = commands("Quickstart", "gunicorn")
    return argv


@dataclasses.dataclass(frozen=True)
class Install:
    """The README's two install commands: from PyPI, and from a checkout."""

    pypi: list[str]
    checkout: list[str]

    @property
    def extras(self) -> tuple[str, ...]:
        """The extras of the PyPI command (``flask-ssecors[serve]`` gives ``("serve",)``)."""
        return requirement_extras(self.pypi[-1])[1]


def install_commands() -> Install:
    """Find ``pip install "flask-ssecors[...]"`` and ``pip install "<path to the clone>[...]"``
    (a path: it starts with ``.`` or ``/``)."""
    pypi: list[str] | None = None
    checkout: list[str] | None = None
    for argv in commands("Install", "pip"):
        if argv[1:2] != ["install"]:
            continue
        name = requirement_extras(argv[-1])[0]
        if name == "flask-ssecors":
            pypi = argv
        elif name.startswith((".", "/")) and "-e" not in argv:
            checkout = argv
    if pypi is None or checkout is None:
        raise LookupError(
            'README.md\'s Install section needs `pip install "flask-ssecors[...]"` and '
            '`pip install "<path to the clone>[...]"`'
        )
    return Install(pypi, checkout)


def requirement_extras(requirement: str) -> tuple[str, tuple[str, ...]]:
    """Split ``name[a,b]`` into ``("name", ("a", "b"))``."""
    match = _EXTRAS.match(requirement)
    if match is None:
        return requirement, ()
    extras = tuple(extra.strip() for extra in match.group("extras").split(",") if extra.strip())
    return match.group("name"), extras


def declared_extras() -> dict[str, list[str]]:
    """``setup.cfg``'s ``[options.extras_require]``: each extra's requirement lines."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    return {
        name: [line.strip() for line in value.splitlines() if line.strip()]
        for name, value in config["options.extras_require"].items()
    }
