"""The package keeps the layers of docs/design.md: every import of every module (inside
functions too) goes to its own layer or to one its row allows, and no modules import one
another in a circle. The table is read from the design document itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "controldl"
DESIGN = ROOT / "docs" / "design.md"


def modules() -> dict[str, Path]:
    """``{dotted name: path}`` of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``path`` imports anywhere (module level or inside a
    function; ``from controldl.x import y`` counts ``controldl.x.y`` when that is a
    module, else ``controldl.x``). ``if TYPE_CHECKING:`` blocks do not run and are left
    out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "controldl"}
        elif (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
              and node.module.split(".")[0] == "controldl"):
            for a in node.names:
                name = f"{node.module}.{a.name}"
                found.add(name if name in known else node.module)
    return {_owner(name, known) for name in found}


def _owner(name: str, known: dict[str, Path]) -> str:
    while name not in known:
        name = name.rpartition(".")[0]
    return name


def layers() -> tuple[dict[str, str], dict[str, set[str]]]:
    """``({module prefix: layer}, {layer: layers it may import})`` from the table of
    docs/design.md between ``<!-- layers -->`` and ``<!-- /layers -->``."""
    text = DESIGN.read_text(encoding="utf-8")
    table = text.split("<!-- layers -->", 1)[1].split("<!-- /layers -->", 1)[0]
    prefixes, allowed = {}, {}
    for line in table.strip().splitlines()[2:]:
        layer, mods, may = (cell.strip() for cell in line.strip().strip("|").split("|"))
        for prefix in re.findall(r"`([\w.]+)`", mods):
            prefixes[prefix] = layer
        allowed[layer] = {w.strip() for w in may.split(",")} | {layer}
    return prefixes, allowed


def layer_of(module: str, prefixes: dict[str, str]) -> str | None:
    """The layer of the longest prefix of ``module`` in the table."""
    best = max((p for p in prefixes if module == p or module.startswith(p + ".")),
               key=len, default=None)
    return None if best is None else prefixes[best]


def test_the_table_is_read():
    prefixes, allowed = layers()
    assert layer_of("controldl.solvers.registry", prefixes) == "foundation"
    assert layer_of("controldl.solvers.gd", prefixes) == "solvers"
    assert layer_of("controldl", prefixes) == "package"
    assert "solvers" not in allowed["plotting"] and "problem" in allowed["solvers"]


def test_every_module_has_a_layer_and_imports_only_what_its_layer_may():
    known = modules()
    prefixes, allowed = layers()
    homeless = [m for m in known if layer_of(m, prefixes) is None]
    assert not homeless, f"modules in no layer of docs/design.md: {homeless}"
    wrong = []
    for module, path in known.items():
        mine = layer_of(module, prefixes)
        for target in imports(path, known) - {module}:
            if layer_of(target, prefixes) not in allowed[mine]:
                wrong.append(f"{module} ({mine}) imports {target} "
                             f"({layer_of(target, prefixes)})")
    assert not wrong, "\n".join(wrong)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_modules_import_one_another_in_a_circle():
    known = modules()
    graph = {m: imports(p, known) - {m} for m, p in known.items()}
    assert circles(graph) == [], "import circles (an import inside a function counts too)"
