"""The built documentation site works offline: no page references a script, a stylesheet,
a font or an import from outside the site, and every formula is MathML.

One build serves every test (a session fixture): ``mkdocs build --strict`` without
executing the notebooks, or the site already built at ``CONTROLDL_SITE_DIR`` (``.ci/run``
builds the executed site once and passes it here). Skipped when MkDocs is not installed
(it comes with the ``docs`` extra).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXTERNAL = r"""(?:https?:)?//"""
CHECKS = {
    "script": re.compile(r"""<script\b[^>]*\bsrc\s*=\s*["']?\s*""" + EXTERNAL, re.I),
    "link": re.compile(r"""<link\b(?=[^>]*\brel\s*=\s*["']?(?:stylesheet|preload|"""
                       r"""modulepreload|preconnect|dns-prefetch|icon))[^>]*"""
                       r"""\bhref\s*=\s*["']?\s*""" + EXTERNAL, re.I),
    "import": re.compile(r"""\bimport\s*\(?\s*["']""" + EXTERNAL, re.I),
    "@import": re.compile(r"""@import\s+(?:url\()?\s*["']?\s*""" + EXTERNAL, re.I),
    "url()": re.compile(r"""url\(\s*["']?\s*""" + EXTERNAL, re.I),
    "iframe/img": re.compile(r"""<(?:iframe|img|video|audio|source|embed)\b[^>]*\bsrc\s*=\s*"""
                             r"""["']?\s*""" + EXTERNAL, re.I),
}
FONT_FACE = re.compile(r"@font-face\s*{[^}]*}", re.I)


def external_references(text: str) -> list[str]:
    """Every reference of an HTML or CSS text to a resource outside the site (scripts,
    stylesheets, fonts, imports, CSS ``url()``; links a reader clicks are fine)."""
    found = [f"{kind}: {text[m.start():m.start() + 120]!r}"
             for kind, rx in CHECKS.items() for m in rx.finditer(text)]
    found += [f"@font-face: {m.group(0)[:120]!r}" for m in FONT_FACE.finditer(text)
              if re.search(EXTERNAL, m.group(0))]
    return found


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    given = os.environ.get("CONTROLDL_SITE_DIR")
    if given:
        path = Path(given)
        assert (path / "index.html").is_file(), f"CONTROLDL_SITE_DIR={given} holds no site"
        return path
    for module in ("mkdocs", "material", "mkdocs_jupyter", "mkdocstrings", "latex2mathml"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "CONTROLDL_DOCS_EXECUTE": "false", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    return out


def pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_the_checker_finds_external_references():
    bad = ['<script src="https://unpkg.com/mathjax@3/es5/tex-mml-chtml.js"></script>',
           "<link rel=\"stylesheet\" href=\"//fonts.googleapis.com/css?family=Roboto\">",
           "<style>@import url('https://example.org/a.css');</style>",
           ".x { background: url(https://example.org/a.png) }",
           "@font-face { font-family: R; src: url(https://example.org/r.woff2) }",
           'const m = await import("https://cdnjs.example.org/mermaid.esm.min.mjs");']
    for text in bad:
        assert external_references(text), text
    good = ['<script src="../assets/javascripts/bundle.js"></script>',
            '<link rel="stylesheet" href="stylesheets/math.css">',
            '<a href="https://optax.readthedocs.io">optax</a>',
            "url(\"data:image/svg+xml;charset=utf-8,<svg xmlns='http://www.w3.org/2000/svg'>\")",
            '<math xmlns="http://www.w3.org/1998/Math/MathML"><mi>x</mi></math>']
    for text in good:
        assert not external_references(text), text


def test_no_page_loads_anything_from_outside(site):
    files = pages(site) + sorted(site.rglob("*.css")) + sorted(site.rglob("*.js"))
    found = {str(f.relative_to(site)): refs for f in files
             if (refs := external_references(f.read_text(encoding="utf-8", errors="replace")))}
    assert not found, f"external references in the built site: {found}"


def test_formulas_are_mathml(site):
    """The home page and the formulation show MathML; no page is left with LaTeX for a
    script to typeset."""
    for page in ("index.html", "formulation.html", "notebooks/01_first_control.html"):
        text = (site / page).read_text(encoding="utf-8")
        assert "<math" in text, f"{page} has no MathML"
    left = [str(p.relative_to(site)) for p in pages(site)
            if 'class="arithmatex"' in p.read_text(encoding="utf-8")]
    assert not left, f"formulas left unconverted on {left}"


def test_executed_pages_show_their_output(site):
    """When the site was built with its snippets executed (``.ci/run``), every notebook
    page shows a figure, getting-started shows the output of its snippets, and the
    tutorials show their figures."""
    if os.environ.get("CONTROLDL_SITE_DIR") is None:
        pytest.skip("the pages are executed by .ci/run's build (CONTROLDL_SITE_DIR)")
    notebooks = sorted((site / "notebooks").glob("*.html"))
    assert len(notebooks) >= 4, notebooks
    for page in notebooks:
        assert "data:image/png" in page.read_text(encoding="utf-8"), f"{page}: no figure"
    started = (site / "getting-started.html").read_text(encoding="utf-8")
    assert started.count('class="filename">output<') >= 5, "getting-started shows no output"
    tutorials = (site / "tutorials.html").read_text(encoding="utf-8")
    assert tutorials.count("data:image/png") >= 12, "the tutorials show too few figures"


HREF = re.compile(r"""<a\b[^>]*\bhref\s*=\s*["']([^"'#]+)(?:#[^"']*)?["']""", re.I)


def test_every_link_of_the_site_opens_a_file_from_disk(site):
    """Browsing from ``file://`` works: every link between pages of the built site names
    a file that exists (``page.html``, not a directory ``page/`` that a browser shows as a
    listing); docs/check_in_browser.sh follows the links in Chromium too."""
    broken = []
    for page in pages(site):
        if page.name == "404.html":  # served by a web server at any path: absolute links
            continue
        for target in HREF.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, data:
                continue
            path = (page.parent / target).resolve()
            if not path.is_file():
                broken.append(f"{page.relative_to(site)} -> {target}")
    assert not broken, f"links that do not open a file from disk: {broken[:20]}"


def test_the_build_runs_the_notebooks_outside_the_working_tree(monkeypatch):
    """The site's hook points the notebooks' output (``CONTROLDL_NOTEBOOK_OUT``) at a
    temporary directory for the build, and removes it afterwards."""
    hook = _load_hook("execute")
    monkeypatch.delenv(hook.NOTEBOOK_OUT, raising=False)
    assert hook.on_config({"x": 1}) == {"x": 1}
    scratch = Path(os.environ[hook.NOTEBOOK_OUT])
    assert scratch.is_dir() and ROOT not in scratch.resolve().parents
    hook.on_shutdown()
    assert not scratch.exists() and hook.NOTEBOOK_OUT not in os.environ
    monkeypatch.setenv(hook.NOTEBOOK_OUT, "/somewhere/chosen")
    hook.on_config({})
    assert os.environ[hook.NOTEBOOK_OUT] == "/somewhere/chosen"
    hook.on_shutdown()


def _load_hook(name):
    spec = importlib.util.spec_from_file_location(f"controldl_docs_{name}",
                                                  ROOT / "docs" / "_hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _math_hook():
    pytest.importorskip("latex2mathml")
    return _load_hook("math")


def test_notebook_math_converts_text_and_leaves_code_alone(caplog):
    math = _math_hook()
    html = ('<p>The step $h = T/L$ and</p><p>$$x(t+1) = x(t) + h\\,\\sigma(A_t x(t))$$</p>'
            '<pre>cost = $5 and $6</pre><code>$a$</code>')
    out = math.notebook_math(html, "test")
    assert out.count("<math") == 2, out
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in out
    assert "<pre>cost = $5 and $6</pre><code>$a$</code>" in out
    assert not caplog.records
    math.to_mathml(r"\nosuchcommand x", False, "page.md")
    assert "not typeset" in caplog.text, "an unknown command must be a build warning"


def test_the_strict_build_fails_on_a_broken_anchor(tmp_path):
    """mkdocs.yml's link validation: a link to a heading that a page does not have (in the
    page itself or in another) fails the strict build. Checked on a two-page site built
    with the project's ``validation`` section."""
    yaml = pytest.importorskip("yaml")
    pytest.importorskip("mkdocs")
    ours = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    validation = ours[ours.index("\nvalidation:"):].split("\n\n", 1)[0]
    assert yaml.safe_load(validation)["validation"]["links"]["anchors"] == "warn"
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## A heading\n")
    for link, ok in [("other.md#a-heading", True), ("#nowhere", False),
                     ("other.md#nowhere", False)]:
        (tmp_path / "docs" / "index.md").write_text(f"# Home\n\n[there]({link})\n")
        (tmp_path / "mkdocs.yml").write_text(
            "site_name: t\nstrict: true\nuse_directory_urls: false\n"
            "nav:\n  - index.md\n  - other.md\n" + validation + "\n")
        proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--site-dir",
                               str(tmp_path / "site")], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert (proc.returncode == 0) == ok, (link, proc.stderr[-2000:])


def test_api_pages_render_literal_blocks_and_a_line_starting_with_a_comparison():
    """reST's ``Example::`` block becomes fenced code, and a docstring line that begins
    with ``>`` (``> 0; a weight``) is not turned into a quotation."""
    pytest.importorskip("griffe")
    rst = _load_hook("griffe_rst")
    out = rst.rewrite("The public API::\n\n    import controldl as cdl\n    x = 1\n\n"
                      "a finite number\n> 0; a weight\n")
    assert out.splitlines()[:5] == ["The public API:", "", "```python",
                                    "import controldl as cdl", "x = 1"]
    assert "\\> 0; a weight" in out and "::" not in out
    assert "$$" in rst.rewrite(".. math::\n\n    a = b\n")
