"""An MkDocs hook that typesets every formula while the site is built: LaTeX becomes
MathML (``latex2mathml``), which browsers render natively, so no page loads a math
script and the formulas show offline.

Where the formulas come from:

- Markdown pages and the API pages' docstrings: ``pymdownx.arithmatex`` (generic mode)
  leaves ``<span class="arithmatex">\\( … \\)</span>`` and
  ``<div class="arithmatex">\\[ … \\]</div>``;
- the notebooks (mkdocs-jupyter): the Markdown cells keep ``$ … $`` and ``$$ … $$`` as
  text; code, outputs, scripts and styles are left alone. The notebook template's
  loaders of MathJax and Mermaid (scripts from a CDN) are removed.

A formula that latex2mathml cannot convert, or converts to something a browser shows as
raw LaTeX (an unknown command stays ``<mi>\\cmd</mi>``), is a build warning, so
``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any

from latex2mathml.converter import convert

log = logging.getLogger("mkdocs.hooks.math")

INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)
# In notebooks: leave code, outputs, scripts, styles and raw HTML attributes alone.
PROTECTED = re.compile(r"<(pre|code|script|style|textarea)\b.*?</\1>|<[^>]*>", re.S)
DISPLAY_DOLLARS = re.compile(r"\$\$(.+?)\$\$", re.S)
INLINE_DOLLARS = re.compile(r"(?<![\\$\w])\$(?!\s)([^$\n]+?)(?<!\s)\$(?![\w$])")
# The notebook template's loaders of MathJax and Mermaid (scripts from a CDN; the
# notebooks draw no Mermaid diagram) and the empty ``<script src="">`` it leaves.
LOADERS = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?(?:MathJax|mermaid)(?:(?!</script>).)*?"
                     r"</script>|<script\b[^>]*(?:mathjax|src=\"\")[^>]*>\s*</script>",
                     re.S | re.I)
# Environments latex2mathml turns into a line of symbols: equivalent ones it typesets.
REWRITES = ((r"\begin{aligned}", r"\begin{align*}"), (r"\end{aligned}", r"\end{align*}"),
            (r"\begin{gathered}", r"\begin{array}{c}"), (r"\end{gathered}", r"\end{array}"),
            (r"\arg\max", r"\operatorname{argmax}"), (r"\arg\min", r"\operatorname{argmin}"))
BROKEN = re.compile(r"<m[io]>\\|<mi>&</mi>|linebreak=")


def to_mathml(latex: str, display: bool, where: str) -> str:
    """The MathML of one formula (``latex`` with HTML entities decoded); on failure the
    formula as it was, and a warning naming ``where``."""
    source = html.unescape(latex).strip()
    for old, new in REWRITES:
        source = source.replace(old, new)
    try:
        out = convert(source, display="block" if display else "inline")
    except Exception as exc:  # latex2mathml raises many kinds of errors
        log.warning("%s: formula not converted (%s): %s", where, exc, source)
        return latex
    if BROKEN.search(out):
        log.warning("%s: formula not typeset by latex2mathml: %s", where, source)
    if display:
        return f'<div class="math-display">{out}</div>'
    return out


def _dollars(text: str, where: str) -> str:
    text = DISPLAY_DOLLARS.sub(lambda m: to_mathml(m.group(1), True, where), text)
    return INLINE_DOLLARS.sub(lambda m: to_mathml(m.group(1), False, where), text)


def notebook_math(content: str, where: str) -> str:
    """``$ … $`` and ``$$ … $$`` in the text of a rendered notebook, outside tags, code,
    outputs, scripts and styles, as MathML."""
    out, last = [], 0
    for m in PROTECTED.finditer(content):
        out.append(_dollars(content[last:m.start()], where))
        out.append(m.group(0))
        last = m.end()
    out.append(_dollars(content[last:], where))
    return "".join(out)


def on_page_content(html_text: str, page: Any, **kwargs: Any) -> str:
    where = page.file.src_uri
    html_text = BLOCK.sub(lambda m: to_mathml(m.group(1), True, where), html_text)
    html_text = INLINE.sub(lambda m: to_mathml(m.group(1), False, where), html_text)
    if page.file.src_uri.endswith(".py") or page.file.src_uri.endswith(".ipynb"):
        html_text = LOADERS.sub("", html_text)
        html_text = notebook_math(html_text, where)
    return html_text
