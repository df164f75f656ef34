"""Every code snippet of the documentation runs, so the docs cannot rot.

- ```python blocks of each page (docs/**/*.md and README.md) run in order, in one
  namespace per page, in a temporary working directory — each page in its own process,
  as many pages at a time as there are cores (most of the time is XLA compiling, on one
  core). On the pages a reader follows step by step (README.md, getting-started.md, the
  tutorials) every ``controldl …`` command of the ```bash blocks runs too, as written, in
  the page's order, in the same directory (so a file a command uses must exist in the
  repository or be made by an earlier step); ``pip`` and ``pytest`` lines are not run.
  The site's build shows the same runs' output (docs/_hooks/execute.py);
- every ``controldl …`` command in a ```bash block is parsed by the real argument parser
  (and its solver options and ``--solvers`` specs are checked the way the commands check
  them), so a renamed or removed flag fails here;
- ```console blocks are transcripts: every ``$ controldl …`` line runs (in the page's
  working directory, after its python blocks) and must print the lines that follow it,
  with exit code 2 when they show an error and 0 otherwise;
- every fenced block is in a language this test knows how to check (or plain text).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Pages under docs/ (not the notebooks linked into it: tests/test_notebooks.py runs those).
PAGES = sorted(p for p in DOCS.rglob("*.md") if "notebooks" not in p.relative_to(DOCS).parts)
PAGES.append(ROOT / "README.md")

CHECKED = {"python", "bash", "console"}
UNCHECKED = {"", "text", "json", "yaml", "toml"}


def _load_execute_hook():
    """The site's snippet-executing hook (docs/_hooks/execute.py): its fenced-block parser
    is the one used here."""
    spec = importlib.util.spec_from_file_location("controldl_docs_execute",
                                                  DOCS / "_hooks" / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXECUTE = _load_execute_hook()


def blocks(path: Path) -> list[tuple[str, str, int]]:
    """``(language, code, line)`` of every fenced block of a page, in order."""
    return [(lang, code, line)
            for lang, code, line, _ in EXECUTE.blocks(path.read_text(encoding="utf-8"))]


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


controldl_commands = EXECUTE.controldl_commands


def check_command(argv: list[str]) -> None:
    """Parse ``controldl ARGS`` with the real parser and check what the command checks
    before it runs: the solver's options and the compare specs."""
    from controldl.cli import build_parser, common
    from controldl.compare import parse_spec

    parser = build_parser()
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as exc:
        if exc.code == 0 and ("--help" in argv or "-h" in argv):
            return
        raise AssertionError(f"`{shlex.join(argv)}` does not parse (exit {exc.code})") from None
    if getattr(args, "solver", None) is not None and hasattr(args, "solver_flags"):
        common.solver_from_args(args)  # the name, its flags and what it does not have
    specs = [parse_spec(s) for given in (getattr(args, "solvers", None) or [])
             for s in given.split(",") if s.strip()]
    labels = [s.label for s in specs]
    for i, spec in enumerate(specs):
        if spec.warm_from is not None and spec.warm_from not in labels[:i]:
            raise ValueError(f"{spec.label!r} warm-starts from {spec.warm_from!r}, which is "
                             "not an earlier solver of this comparison")


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_fenced_blocks_are_checked(page):
    unknown = [(lang, line) for lang, _, line in blocks(page)
               if lang not in CHECKED | UNCHECKED]
    assert not unknown, f"{page_id(page)}: blocks in a language no test checks: {unknown}"


@pytest.mark.parametrize("page", [p for p in PAGES if any(b[0] == "bash" for b in blocks(p))],
                         ids=page_id)
def test_shell_commands_parse(page, capsys):
    for lang, code, line in blocks(page):
        if lang != "bash":
            continue
        for argv in controldl_commands(code):
            try:
                check_command(argv)
            except (AssertionError, ValueError) as exc:
                raise AssertionError(f"{page_id(page)}:{line}: {exc}") from None


# The pages a reader follows step by step: their commands run as written.
AS_WRITTEN = {ROOT / "README.md", DOCS / "getting-started.md", DOCS / "tutorials.md"}
NOT_RUN = ("pip", "pytest", "jupyter")
"""Shell commands shown, not run here: installs, the tests themselves, and ``jupyter
nbconvert --execute`` of a notebook, which tests/test_notebooks.py runs on every
notebook."""


def run_page(page: Path, workdir: Path) -> str | None:
    """Run the python blocks of ``page`` (and, on the :data:`AS_WRITTEN` pages, its
    ``controldl`` commands) in a fresh process in ``workdir``; the error or ``None``."""
    steps = EXECUTE.page_steps(page.read_text(encoding="utf-8"), page_id(page))
    if page not in AS_WRITTEN:
        steps = [s for s in steps if s[0] == "python"]
    try:
        EXECUTE.run_snippets(steps, str(workdir))
    except RuntimeError as exc:
        return str(exc)
    return None


def selected(request, test_name: str, param: str) -> list:
    """The values of ``param`` of the selected tests named ``test_name``, in order."""
    return [item.callspec.params[param] for item in request.session.items
            if getattr(item, "originalname", None) == test_name and hasattr(item, "callspec")]


PYTHON_PAGES = [p for p in PAGES
                if any(b[0] == "python" for b in blocks(p)) or p in AS_WRITTEN]


def run_by_the_site_build(page: Path) -> bool:
    """The page is ``execute: true`` and ``.ci/run`` built the site with it executed
    (``CONTROLDL_SITE_DIR``): that build already ran every block as written and fails on
    any error, so running them again here would only double CI's time."""
    if not os.environ.get("CONTROLDL_SITE_DIR") or page.parent != DOCS:
        return False
    text = page.read_text(encoding="utf-8")
    return text.startswith("---") and "execute: true" in text.split("---", 2)[1]


@pytest.fixture(scope="module")
def page_runs(request, tmp_path_factory):
    """Start the snippets of every selected page at once (``os.cpu_count()`` at a time)."""
    pool = ThreadPoolExecutor(max_workers=max(os.cpu_count() or 1, 1))
    runs: dict[Path, Future] = {}
    for page in selected(request, "test_python_snippets_run", "page"):
        if run_by_the_site_build(page):
            continue
        runs[page] = pool.submit(run_page, page, tmp_path_factory.mktemp(page.stem))
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=page_id)
def test_python_snippets_run(page, page_runs):
    if run_by_the_site_build(page):
        pytest.skip("run as written by .ci/run's executed site build (CONTROLDL_SITE_DIR)")
    error = page_runs[page].result()
    assert error is None, f"a snippet of {page_id(page)} failed:\n{error}"


@pytest.mark.parametrize("page", sorted(AS_WRITTEN), ids=page_id)
def test_every_shell_command_of_a_step_by_step_page_is_run(page):
    """Only ``pip``/``pytest`` lines and ``controldl`` commands appear in its shell blocks."""
    for lang, code, line in blocks(page):
        if lang != "bash":
            continue
        for raw in code.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;|\|\|?", raw.split("#")[0]):
                words = [w for w in part.split() if not EXECUTE.ENV_ASSIGNMENT.match(w)]
                assert not words or words[0] in ("controldl", *NOT_RUN), (
                    f"{page_id(page)}:{line}: `{part.strip()}` is neither run nor excused")


def transcripts(code: str) -> list[tuple[list[str], list[str]]]:
    """``(argv, expected output lines)`` of every ``$ controldl …`` line of a console
    block."""
    out: list[tuple[list[str], list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            argv = shlex.split(line[2:])
            assert argv[0] == "controldl", f"console blocks run controldl only: {line}"
            out.append((argv, []))
        elif line.strip():
            assert out, f"output before any command: {line}"
            out[-1][1].append(line.strip())
    return out


def run_controldl(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Run ``controldl ARGS`` in this process; its exit code and output lines."""
    from controldl.cli import main

    capsys.readouterr()
    try:
        code = main(argv[1:])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return int(code or 0), [ln.strip() for ln in (captured.out + captured.err).splitlines()]


@pytest.mark.parametrize("page",
                         [p for p in PAGES if any(b[0] == "console" for b in blocks(p))],
                         ids=page_id)
def test_console_transcripts(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for lang, code, _ in blocks(page):
        if lang == "python":
            exec(compile(code, page_id(page), "exec"), namespace)
    for lang, code, line in blocks(page):
        if lang != "console":
            continue
        for argv, expected in transcripts(code):
            if _needs_mnist(argv) and not _have_mnist():
                continue  # the optional extra is not installed (CI installs ".[dev]")
            rc, output = run_controldl(argv, capsys)
            where = f"{page_id(page)}:{line}: `{shlex.join(argv)}`"
            want_rc = 2 if any(e.startswith("controldl: error:") for e in expected) else 0
            assert rc == want_rc, f"{where} exited {rc}, expected {want_rc}: {output}"
            for e in expected:
                assert e in output, f"{where} did not print {e!r}; it printed {output}"


def _needs_mnist(argv: list[str]) -> bool:
    """Whether a command reads MNIST (``--dataset mnist``)."""
    return any(a == "--dataset" and b == "mnist"
               for a, b in zip(argv[:-1], argv[1:], strict=True))


def _have_mnist() -> bool:
    """Whether MNIST's IDX files are found (the optional extra, or CONTROLDL_MNIST_DIR)."""
    from controldl.idx import mnist_files

    try:
        mnist_files()
    except ValueError:
        return False
    return True


def test_the_checker_catches_a_bad_flag():
    with pytest.raises(AssertionError, match="does not parse"):
        check_command(["controldl", "train", "--no-such-flag"])
    with pytest.raises(ValueError):
        check_command(["controldl", "train", "--solver", "msa", "--optimizer", "adam"])
    with pytest.raises(ValueError):
        check_command(["controldl", "compare", "--solvers", "adam,nosuchsolver:x=1"])
    with pytest.raises(ValueError, match="warm-starts"):
        check_command(["controldl", "compare", "--solvers", "adam:lr=0.1,casadi:from=adam"])
    assert controldl_commands('pip install -e ".[dev]" && controldl compare  # main job') == [
        ["controldl", "compare"]]
    assert controldl_commands("XLA_FLAGS=--x=4 controldl train \\\n  --devices 4") == [
        ["controldl", "train", "--devices", "4"]]
