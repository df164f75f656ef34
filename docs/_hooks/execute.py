"""An MkDocs hook that shows a page's snippets with their output: on a page whose front
matter says ``execute: true``, the ```python blocks and the ``controldl …`` commands of
the ```bash blocks run in the page's order, the Python in one namespace, in a fresh
process and a temporary working directory, while the site is built. Below each block the
page shows what it printed and the figures it left open (as inline PNGs). Other shell
commands (``pip install``, ``pytest``) are shown, not run.

``CONTROLDL_DOCS_EXECUTE=false`` builds without running them. A snippet or command that
fails is a build error. The notebooks that mkdocs-jupyter executes write under a
temporary ``CONTROLDL_NOTEBOOK_OUT`` (:func:`on_config`): the build writes nothing into
the working tree. ``tests/test_docs_snippets.py`` runs pages through the same
functions (:func:`blocks`, :func:`controldl_commands`, :func:`run_snippets`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.execute")

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<lang>[\w+-]*)[^\n]*\n"
                   r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$", re.M | re.S)
ROOT = Path(__file__).resolve().parents[2]
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")

RUNNER = r'''
import base64, contextlib, io, json, subprocess, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
blocks = json.load(open(sys.argv[1], encoding="utf-8"))
namespace, results = {"__name__": "__docs__"}, []
for kind, code, where in blocks:
    buffer = io.StringIO()
    if kind == "python":
        with contextlib.redirect_stdout(buffer):
            exec(compile(code, where, "exec"), namespace)
    for argv in (code if kind == "commands" else []):
        proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True)
        buffer.write("$ " + " ".join(argv) + "\n" + proc.stdout + proc.stderr)
        if proc.returncode != 0:
            sys.exit(f"{where}: `{' '.join(argv)}` exited {proc.returncode}:\n"
                     f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    figures = []
    for number in plt.get_fignums():
        png = io.BytesIO()
        plt.figure(number).savefig(png, format="png", dpi=80, bbox_inches="tight")
        figures.append(base64.b64encode(png.getvalue()).decode("ascii"))
    plt.close("all")
    results.append({"stdout": buffer.getvalue(), "figures": figures})
json.dump(results, open(sys.argv[2], "w", encoding="utf-8"))
'''


def blocks(text: str) -> list[tuple[str, str, int, int]]:
    """``(language, code, line, end)`` of every fenced block of a Markdown text, in order;
    ``end`` is the offset just past the closing fence."""
    out = []
    for m in FENCE.finditer(text):
        indent = len(m.group("indent"))
        body = "\n".join(line[indent:] for line in m.group("body").splitlines())
        out.append((m.group("lang").lower(), body, text.count("\n", 0, m.start()) + 1,
                    m.end()))
    return out


def controldl_commands(code: str) -> list[list[str]]:
    """The ``controldl …`` commands of a shell block, as argv lists (``&&``, ``;`` and
    ``|`` separate commands, ``#`` starts a comment, a trailing ``\\`` continues a line,
    ``VAR=value`` prefixes are dropped)."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for w in [*words, "&&"]:
            if w in ("&&", ";", "|", "||"):
                if current and current[0] == "controldl":
                    commands.append(current)
                current = []
            elif current or not ENV_ASSIGNMENT.match(w):
                current.append(w)
    return commands


def page_steps(markdown: str, where: str) -> list[tuple[str, Any, str]]:
    """What running a page means, in its order: ``("python", code, "PAGE:LINE")`` for each
    python block and ``("commands", [argv, ...], "PAGE:LINE")`` for each bash block with
    ``controldl`` commands."""
    steps: list[tuple[str, Any, str]] = []
    for lang, code, line, _ in blocks(markdown):
        if lang == "python":
            steps.append(("python", code, f"{where}:{line}"))
        elif lang == "bash" and (commands := controldl_commands(code)):
            steps.append(("commands", commands, f"{where}:{line}"))
    return steps


def run_snippets(steps: list[tuple[str, Any, str]], workdir: str | None = None
                 ) -> list[dict[str, Any]]:
    """Run :func:`page_steps` in order (the Python in one namespace) in a fresh process in
    ``workdir`` (default: a temporary directory); per step ``{"stdout": str, "figures":
    [base64 PNG, ...]}``. A failure raises ``RuntimeError`` with the error."""
    with tempfile.TemporaryDirectory(prefix="controldl-docs-") as scratch:
        tmp = workdir or scratch
        src, dst = Path(scratch) / "blocks.json", Path(scratch) / "results.json"
        src.write_text(json.dumps(steps), encoding="utf-8")
        env = {**os.environ, "MPLBACKEND": "Agg",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        env.pop("XLA_FLAGS", None)  # a page that wants several devices says so itself
        proc = subprocess.run([sys.executable, "-c", RUNNER, str(src), str(dst)], cwd=tmp,
                              env=env, capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        return json.loads(dst.read_text(encoding="utf-8"))


def with_outputs(markdown: str, where: str) -> str:
    """``markdown`` with the output of each python block and controldl command inserted
    below its block."""
    found = [b for b in blocks(markdown)
             if b[0] == "python" or (b[0] == "bash" and controldl_commands(b[1]))]
    results = run_snippets(page_steps(markdown, where))
    out, last = [], 0
    for (_, _, _, end), result in zip(found, results, strict=True):
        out.append(markdown[last:end])
        last = end
        if result["stdout"].strip():
            out.append('\n\n```text title="output"\n' + result["stdout"].rstrip() + "\n```")
        for png in result["figures"]:
            out.append(f"\n\n![a figure drawn by the snippet above](data:image/png;base64,{png})")
    out.append(markdown[last:])
    return "".join(out)


NOTEBOOK_OUT = "CONTROLDL_NOTEBOOK_OUT"
_scratch: tempfile.TemporaryDirectory | None = None


def on_config(config: Any, **kwargs: Any) -> Any:
    """The notebooks that mkdocs-jupyter executes save what they write under
    ``CONTROLDL_NOTEBOOK_OUT``: a temporary directory for the build (unless set), so that
    building the site writes nothing into the working tree."""
    global _scratch
    if not os.environ.get(NOTEBOOK_OUT):
        _scratch = tempfile.TemporaryDirectory(prefix="controldl-site-notebooks-")
        os.environ[NOTEBOOK_OUT] = _scratch.name
    return config


def on_shutdown(**kwargs: Any) -> None:
    """Remove the notebooks' temporary directory of :func:`on_config`."""
    global _scratch
    if _scratch is not None:
        if os.environ.get(NOTEBOOK_OUT) == _scratch.name:
            del os.environ[NOTEBOOK_OUT]
        _scratch.cleanup()
        _scratch = None


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if not page.meta.get("execute"):
        return markdown
    if os.environ.get("CONTROLDL_DOCS_EXECUTE", "true").lower() in ("false", "0", "no"):
        return markdown
    try:
        return with_outputs(markdown, page.file.src_uri)
    except RuntimeError as exc:
        log.error("%s: a python block failed:\n%s", page.file.src_uri, exc)
        return markdown
