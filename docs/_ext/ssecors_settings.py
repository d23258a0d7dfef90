"""A Sphinx directive that renders the configuration summary table from the options' one
definition (``flask_ssecors._config.OPTIONS``), so the docs cannot drift from the code.

``.. ssecors-settings::`` renders a table: key, default, per-view keyword, and a link to the
key's ``.. data::`` entry, which the page must define (a missing entry is a warning, so the
``-W`` build fails).
"""

from __future__ import annotations

import typing as t

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList

from flask_ssecors._config import OPTIONS

if t.TYPE_CHECKING:
    from sphinx.application import Sphinx

_SCOPE = {"cors": "both", "stream": "stream", "": "app only"}


def _default(text: str) -> str:
    if text in ("required", "none") or text.startswith("``"):
        return text
    return f"``{text}``"


class SettingsTable(Directive):
    """``.. ssecors-settings::``: the summary table of every ``SSECORS_*`` key."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        lines = [
            ".. list-table::",
            "    :header-rows: 1",
            "    :widths: 34 20 28 18",
            "",
            "    * - Key",
            "      - Default",
            "      - Per view",
            "      - Reference",
        ]
        for option in OPTIONS:
            per_view = (
                f"``{option.kwarg}`` ({_SCOPE[option.per_view]})" if option.per_view else "app only"
            )
            lines += [
                f"    * - ``{option.key}``",
                f"      - {_default(option.default_doc)}",
                f"      - {per_view}",
                f"      - :data:`{option.key}`",
            ]
        container = nodes.container()
        self.state.nested_parse(StringList(lines), self.content_offset, container)
        return container.children


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("ssecors-settings", SettingsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
