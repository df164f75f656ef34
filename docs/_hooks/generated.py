"""An MkDocs hook that fills pages with text generated from the package itself, so the
reference pages cannot drift from the code:

- ``<!-- controldl-help -->`` / ``<!-- controldl-help: COMMAND -->``: the real
  ``controldl [COMMAND] --help`` output;
- ``<!-- controldl-statuses -->``: the table of solver statuses and their messages
  (``controldl.solution.STATUS_MESSAGES``).
"""

from __future__ import annotations

import os
import re
from typing import Any

HELP = re.compile(r"<!--\s*controldl-help(?::\s*([a-z]+))?\s*-->")
STATUSES = re.compile(r"<!--\s*controldl-statuses\s*-->")
WIDTH = "92"


def help_text(command: str | None) -> str:
    """The ``--help`` output of ``controldl [COMMAND]`` at a fixed width."""
    from controldl.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        if command is None:
            return parser.format_help()
        subparsers = next(a for a in parser._actions if a.dest == "command")
        if command not in subparsers.choices:
            raise ValueError(f"controldl has no command {command!r}")
        return subparsers.choices[command].format_help()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def status_table() -> str:
    """A Markdown table of every status a solver may report, with its message."""
    from controldl.solution import STATUS_MESSAGES

    rows = ["| status | meaning and what to do |", "| --- | --- |"]
    rows += [f"| `{k}` | {v} |" for k, v in STATUS_MESSAGES.items()]
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    markdown = HELP.sub(lambda m: "```text\n" + help_text(m.group(1)).rstrip() + "\n```",
                        markdown)
    return STATUSES.sub(lambda m: status_table(), markdown)
