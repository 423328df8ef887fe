"""The layer order of DESIGN.md, checked on the source: imports point down only, and nothing imports in a circle.

Every module under ``src/cryoscape`` is parsed with :mod:`ast` (nothing is imported or executed). Every
import that names a cryoscape module counts, wherever it stands: at module level, inside a function, under
``if TYPE_CHECKING``, absolute (``import cryoscape.x``, ``from cryoscape.x import y``), relative
(``from ..x import y``, ``from . import y``) or through ``importlib.import_module("cryoscape.x")`` with a
literal name. ``from pkg import name`` points to the module ``pkg.name`` when that module exists, else to
``pkg`` itself.

Layers (DESIGN.md, "Layers"): 0 utils, io · 1 geometry, physics · 2 structure · 3 data · 4 methods ·
5 analysis · 6 report · 7 runs · 8 cli. The top-level ``cryoscape/__init__.py`` (and ``__main__``) belong to
no layer: anything may import them and they may import anything. A module in a subpackage that is in no
layer is itself a violation (add the subpackage to DESIGN.md and to :data:`LAYERS`).

Two kinds of violation:
- an upward import: module of layer a imports a module of layer b > a;
- a circle: a strongly connected component (Tarjan) of more than one module of the import graph, or a
  module that imports itself. Imports inside functions are edges too (a circle through a function-level
  import is still a circle in the design, and only luck of call order keeps it from failing at import).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "cryoscape"
LAYERS = {"utils": 0, "io": 0, "geometry": 1, "physics": 1, "structure": 2, "data": 3, "methods": 4,
          "analysis": 5, "report": 6, "runs": 7, "cli": 8}
EXEMPT = {"", "__main__"}  # the top-level package and its __main__


@dataclass(frozen=True)
class Edge:
    module: str
    imported: str
    path: Path
    line: int


def module_name(path: Path, root: Path) -> str:
    """``root/cryoscape/a/b.py`` → ``cryoscape.a.b``; a package's ``__init__.py`` → the package name."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def find_modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` under ``root``: name → file."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        if level - 1 >= len(base):
            raise ValueError(f"{module}: relative import beyond the top-level package")
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, modules: dict[str, Path], package: str = PACKAGE) -> list[Edge]:
    """The cryoscape modules that ``module`` (file ``path``) imports, at any depth of the syntax tree."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    edges = []

    def add(name: str, node: ast.AST):
        if name == package or name.startswith(package + "."):
            # the deepest existing module along the dotted name (an attribute of a module is that module)
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            edges.append(Edge(module, name, path, node.lineno))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module) if node.level
                    else node.module or "")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in modules else base, node)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id == "import_module"))):
            add(node.args[0].value, node)
    return edges


def layer_of(module: str, package: str = PACKAGE) -> tuple[str, int | None]:
    """``(subpackage, layer)``; the layer is None for the exempt top level, -1 for an unknown subpackage."""
    parts = module.split(".")
    sub = parts[1] if len(parts) > 1 else ""
    if sub in EXEMPT:
        return sub, None
    return sub, LAYERS.get(sub, -1)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of a directed graph (node → successors), iteratively."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, succ = work[-1]
            advanced = False
            for nxt in succ:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                out.append(sorted(comp))
    return out


def _fmt(edge: Edge, root: Path, package: str) -> str:
    (sa, la), (sb, lb) = layer_of(edge.module, package), layer_of(edge.imported, package)
    name = lambda s, l: "top level" if l is None else (f"unknown subpackage {s!r}" if l < 0 else f"{l} {s}")  # noqa: E731
    return (f"{edge.module} -> {edge.imported} (layer {name(sa, la)} -> layer {name(sb, lb)})"
            f"  [{edge.path.relative_to(root)}:{edge.line}]")


def check_layers(root: Path = SRC, package: str = PACKAGE) -> tuple[list[str], list[str]]:
    """``(upward imports, circles)`` as printable lines; both empty when the tree keeps the layer order."""
    modules = find_modules(root, package)
    edges = [e for m, p in modules.items() for e in imports_of(m, p, modules, package)]
    upward = []
    for m in modules:
        sub, layer = layer_of(m, package)
        if layer == -1:
            upward.append(f"{m}: subpackage {sub!r} is in no layer of DESIGN.md")
    seen = set()
    for e in edges:
        la, lb = layer_of(e.module, package)[1], layer_of(e.imported, package)[1]
        if la is None or lb is None or la < 0 or lb < 0:
            continue
        if lb > la and (e.module, e.imported) not in seen:
            seen.add((e.module, e.imported))
            upward.append(_fmt(e, root, package))
    graph: dict[str, set[str]] = {m: set() for m in modules}
    first: dict[tuple[str, str], Edge] = {}
    for e in edges:
        graph[e.module].add(e.imported)
        first.setdefault((e.module, e.imported), e)
    circles = []
    for comp in strongly_connected(graph):
        if len(comp) == 1 and comp[0] not in graph[comp[0]]:
            continue
        members = set(comp)
        circles.append(f"import circle among {len(comp)} module(s): {', '.join(comp)}")
        for m in comp:
            for t in sorted(graph[m] & members):
                circles.append("    " + _fmt(first[(m, t)], root, package))
    return upward, circles


def _report(upward: list[str], circles: list[str]) -> str:
    lines = []
    if upward:
        lines += [f"{sum(not s.startswith('    ') for s in upward)} upward import(s):"] + ["  " + s for s in upward]
    if circles:
        lines += ["import circles:"] + ["  " + s for s in circles]
    return "\n".join(lines)


def test_imports_point_down_and_never_circle():
    upward, circles = check_layers()
    report = _report(upward, circles)
    print(report)
    assert not upward and not circles, "layer order of DESIGN.md broken:\n" + report


def test_every_module_is_seen():
    """The checker finds the package and its imports (guards against a wrong source path)."""
    modules = find_modules(SRC)
    assert f"{PACKAGE}.io.errors" in modules and f"{PACKAGE}.data.particles" in modules
    edges = imports_of(f"{PACKAGE}.data.particles", modules[f"{PACKAGE}.data.particles"], modules)
    assert f"{PACKAGE}.io.errors" in {e.imported for e in edges}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _clean_tree() -> dict[str, str]:
    return {
        "cryoscape/__init__.py": "__version__ = '0'\n",
        "cryoscape/io/__init__.py": "",
        "cryoscape/io/errors.py": "class InputError(ValueError):\n    pass\n",
        "cryoscape/io/mrc.py": "from .errors import InputError\nimport cryoscape\n",
        "cryoscape/physics/__init__.py": "from . import ctf\n",
        "cryoscape/physics/ctf.py": "from ..io.errors import InputError\n",
        "cryoscape/methods/__init__.py": "",
        "cryoscape/methods/vae/__init__.py": "from .train import fit\n",
        "cryoscape/methods/vae/train.py": "from ...physics import ctf\nfrom . import model\n\ndef fit():\n    pass\n",
        "cryoscape/methods/vae/model.py": "import cryoscape.io.mrc as mrc\n",
        "cryoscape/cli/__init__.py": "",
        "cryoscape/cli/vae.py": "def main():\n    from ..methods.vae import fit\n    from cryoscape import __version__\n",
    }


def test_checker_passes_a_clean_tree(tmp_path):
    _write(tmp_path, _clean_tree())
    upward, circles = check_layers(tmp_path)
    assert upward == [] and circles == []
    modules = find_modules(tmp_path)
    targets = {e.imported for e in imports_of("cryoscape.methods.vae.train",
                                              modules["cryoscape.methods.vae.train"], modules)}
    assert targets == {"cryoscape.physics.ctf", "cryoscape.methods.vae.model"}


def test_checker_finds_a_planted_upward_import(tmp_path):
    files = _clean_tree()
    # inside a function, relative, and through importlib: all three must be caught
    files["cryoscape/methods/vae/model.py"] += "def save():\n    from ...cli import vae\n"
    files["cryoscape/io/mrc.py"] += "import importlib\nm = importlib.import_module('cryoscape.physics.ctf')\n"
    files["cryoscape/physics/ctf.py"] += "from cryoscape.methods.vae.model import save\n"
    _write(tmp_path, files)
    upward, circles = check_layers(tmp_path)
    assert any(s.startswith("cryoscape.methods.vae.model -> cryoscape.cli.vae (layer 4 methods -> layer 8 cli)")
               for s in upward), upward
    assert any(s.startswith("cryoscape.io.mrc -> cryoscape.physics.ctf (layer 0 io -> layer 1 physics)")
               for s in upward), upward
    assert any(s.startswith("cryoscape.physics.ctf -> cryoscape.methods.vae.model (layer 1 physics -> "
                            "layer 4 methods)") for s in upward), upward
    assert len(upward) == 3
    assert any("methods.vae.model" in c for c in circles)  # cli.vae → methods → model → cli.vae


def test_checker_finds_a_planted_circle_within_a_layer(tmp_path):
    files = _clean_tree()
    files["cryoscape/io/errors.py"] += "def f():\n    from . import mrc\n"  # io.mrc ↔ io.errors, same layer
    files["cryoscape/physics/ctf.py"] += "from . import ctf\n"  # a module importing itself
    _write(tmp_path, files)
    upward, circles = check_layers(tmp_path)
    assert upward == []
    assert "import circle among 2 module(s): cryoscape.io.errors, cryoscape.io.mrc" in circles
    assert "import circle among 1 module(s): cryoscape.physics.ctf" in circles
    assert any(c.strip().startswith("cryoscape.io.errors -> cryoscape.io.mrc (layer 0 io -> layer 0 io)")
               for c in circles)


def test_checker_flags_a_subpackage_in_no_layer(tmp_path):
    files = _clean_tree()
    files["cryoscape/misc/__init__.py"] = ""
    _write(tmp_path, files)
    upward, _ = check_layers(tmp_path)
    assert upward == ["cryoscape.misc: subpackage 'misc' is in no layer of DESIGN.md"]


def test_strongly_connected_components():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": set()}
    comps = sorted(strongly_connected(g))
    assert comps == [["a", "b", "c"], ["d", "e"], ["f"]]
