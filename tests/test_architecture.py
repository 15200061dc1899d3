"""Dependencies flow one way: the import graph read from the source (ast) has no cycle and no upward edge.

Layers, lowest first (a module may import its own layer or any layer below, never above):
  bottom  storage/config/version/cluster → geometry, metrics, nn, landmarks → scans → synth → morphable
  middle  data → training → inference
  top     the whole-chain runner, the package facade, the jobs' command lines (cli) → jobs/, bench/
The package's own imports sit at module top, where the graph is visible; inside a function only
optional third-party dependencies are imported.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYERS: list[tuple[str, ...]] = [
    ("refine_ray.version", "refine_ray.errors", "refine_ray.storage", "refine_ray.commits", "refine_ray.config", "refine_ray.logs", "refine_ray.cluster", "refine_ray.test_hooks"),
    ("refine_ray.geometry", "refine_ray.metrics", "refine_ray.nn", "refine_ray.landmarks"),
    ("refine_ray.scans",),
    ("refine_ray.synth",),
    ("refine_ray.morphable",),
    ("refine_ray.data",),
    ("refine_ray.training",),
    ("refine_ray.inference",),
    ("refine_ray.quickstart",),
    ("refine_ray",),  # the package facade (refine_ray/__init__.py)
    ("refine_ray.cli",),  # the jobs' command lines
    ("jobs", "bench"),
]
SOURCES = ("refine_ray", "jobs", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    p = ROOT.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _targets(node: ast.AST, importer: str, is_package: bool) -> list[str]:
    """The project modules an import statement loads (a `from pkg import submodule` names the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] in SOURCES]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = importer.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if module.split(".")[0] not in SOURCES:
        return []
    return [f"{module}.{a.name}" if _is_module(f"{module}.{a.name}") else module for a in node.names]


def _imports():
    """(importer, imported, inside_a_function, file:line) for every project import in the sources."""
    found = []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            name = _module_name(path)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

            def visit(node, in_function):
                for child in ast.iter_child_nodes(node):
                    inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                    for target in _targets(child, name, path.name == "__init__.py"):
                        found.append((name, target, inner, f"{path.relative_to(ROOT)}:{child.lineno}"))
                    visit(child, inner)

            visit(tree, False)
    return found


def _layer(module: str) -> int:
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module} belongs to no layer: add it to LAYERS in tests/test_architecture.py"
    return rank


def test_every_module_has_a_layer():
    for top in SOURCES:
        for path in (ROOT / top).rglob("*.py"):
            _layer(_module_name(path))


def test_no_upward_import():
    upward = [f"{where}: {src} (layer {_layer(src)}) imports {dst} (layer {_layer(dst)})"
              for src, dst, _, where in _imports() if _layer(dst) > _layer(src)]
    assert not upward, "imports must point down the layers:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {}
    for src, dst, _, _ in _imports():
        if src != dst and not src.startswith(dst + "."):  # a module importing its own package's __init__ is fine
            graph.setdefault(src, set()).add(dst)
    # Tarjan's strongly connected components; any component with more than one module is a cycle
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in list(graph):
        if v not in index:
            strong(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


# the package facade imports its user API on first use, so the bottom layers import without it
LAZY_FACADE = {("refine_ray", "refine_ray.inference.api")}


def test_package_imports_at_module_top():
    hidden = [f"{where}: {dst}" for src, dst, inside, where in _imports() if inside and (src, dst) not in LAZY_FACADE]
    assert not hidden, "import the package at module top (only optional third-party packages inside functions):\n" + "\n".join(hidden)


def test_no_sys_path_edits():
    edits = [f"{p.relative_to(ROOT)}:{n}" for top in (*SOURCES, "tests") for p in sorted((ROOT / top).rglob("*.py"))
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if "sys.path." + "insert" in line or "sys.path." + "append" in line]
    assert not edits, "the package is installed (pip install -e .); no sys.path edits:\n" + "\n".join(edits)


def test_the_checker_sees_edges():
    """The graph walk itself finds known edges (a broken walk would pass every test above)."""
    edges = {(src, dst) for src, dst, _, _ in _imports()}
    assert ("refine_ray.training.gan", "refine_ray.nn.refiner") in edges
    assert ("refine_ray.inference.units", "refine_ray.metrics") in edges
    assert _layer("refine_ray.inference.batch") > _layer("refine_ray.training.loop") > _layer("refine_ray.nn.refiner")
