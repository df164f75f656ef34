"""A griffe extension for the API reference: the package's docstrings use a few
reStructuredText constructs (``:func:`name```, ``.. math::``, literal blocks after
``::``) inside Google-style sections,
and sometimes document several parameters on one line (``a, b: text``). This rewrites them
to what mkdocstrings renders: a role becomes inline code, a ``.. math::`` block a
``$$ … $$`` block (pymdownx.arithmatex; docs/_hooks/math.py typesets it as MathML), and
``a, b: text`` one entry per parameter. The package's source is not changed; only the
rendered text is."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|mod|class|meth|attr|data|exc|obj):`(~?)([^`]+)`")


def _math_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)\.\. math::\s*(.*)$", line)
        if not m:
            out.append(line)
            i += 1
            continue
        indent, inline = m.group(1), m.group(2).strip()
        body: list[str] = [inline] if inline else []
        i += 1
        while i < len(lines) and (not lines[i].strip()
                                  or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        formula = textwrap.dedent("\n".join(b for b in body)).strip()
        # A blank line inside the block separates equations: one per line, centred.
        equations = re.split(r"\n\s*\n", formula)
        if len(equations) > 1:
            formula = ("\\begin{gathered}\n" + " \\\\\n".join(equations)
                       + "\n\\end{gathered}")
        out += ["", f"{indent}$$", *[indent + f for f in formula.splitlines()],
                f"{indent}$$", ""]
    return "\n".join(out)


SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Attributes):\s*$")
SHARED = re.compile(r"^(\s+)(\w+(?:\s*,\s*\w+)+):\s*(.*)$")


def _split_shared_entries(text: str) -> str:
    """``a, b, c: text`` in an Args/Attributes section → one ``name: text`` entry each
    (continuation lines repeated)."""
    lines = text.splitlines()
    out: list[str] = []
    section_indent: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        header = SECTION.match(line)
        if header:
            section_indent = len(header.group(1))
            out.append(line)
            continue
        indent = len(line) - len(line.lstrip())
        if section_indent is not None and line.strip() and indent <= section_indent:
            section_indent = None
        m = SHARED.match(line) if section_indent is not None else None
        if not m:
            out.append(line)
            continue
        more = []
        while i < len(lines) and lines[i].strip() and \
                len(lines[i]) - len(lines[i].lstrip()) > indent:
            more.append(lines[i])
            i += 1
        for name in (n.strip() for n in m.group(2).split(",")):
            out += [f"{m.group(1)}{name}: {m.group(3)}", *more]
    return "\n".join(out)


def _literal_blocks(text: str) -> str:
    """reST's literal blocks as fenced code: a paragraph ending in ``::`` (``Example::``,
    ``The public API::``) followed by an indented block → the paragraph ending in ``:``
    and the block in a ```` ```python ```` fence (a lone ``::`` disappears). A line that
    begins with ``>`` outside a block (``> 0; a weight``, a comparison wrapped onto a new
    line) is escaped, so that Markdown does not make it a quotation."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.rstrip().endswith("::") or line.lstrip().startswith(".."):
            out.append(re.sub(r"^(\s*)>", r"\1\\>", line))
            continue
        head = line.rstrip()[:-2].rstrip()
        indent = len(line) - len(line.lstrip())
        body: list[str] = []
        while i < len(lines) and (not lines[i].strip()
                                  or len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        if head.strip():
            out.append(head + ":")
        code = textwrap.dedent("\n".join(body)).strip("\n")
        pad = " " * indent
        out += ["", pad + "```python", *[pad + c if c else "" for c in code.splitlines()],
                pad + "```", ""]
    return "\n".join(out)


def rewrite(text: str) -> str:
    """The docstring ``text`` with reStructuredText roles, math and literal blocks made
    Markdown, and shared parameter entries split."""
    text = _split_shared_entries(_literal_blocks(_math_blocks(text)))
    def code(m: re.Match[str]) -> str:
        target = m.group(2)
        return f"`{target.split('.')[-1] if m.group(1) else target}`"

    return ROLE.sub(code, text)


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring once it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
