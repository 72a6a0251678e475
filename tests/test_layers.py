"""The layers of the package and the rule each keeps (docs/architecture.md, "Layers").

- The training core (``mlitb.training``) imports numpy, the standard library and the layers
  below it (``mlitb.nn``, ``mlitb.optim``, ``mlitb.protocol`` — which also parses with msgspec —,
  ``mlitb.datasets``, ``mlitb.errors``) only: importing any of them loads no web stack and none of
  the packages built on it.
- Closures depend on the core, never on the master or the nodes.
- The modules of ``mlitb`` (nodes, console, browser and bench included) import each other
  without a cycle at module level.

The import graph is read from the source with ``ast`` (no module is imported to build it).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
WEB_STACK = ("trio", "trio_websocket", "hypercorn", "starlette", "textual")
CORE_PACKAGES = ("mlitb.training", "mlitb.nn", "mlitb.optim", "mlitb.protocol", "mlitb.datasets",
                 "mlitb.errors")
"""The training core and the layers below it."""
SHELL_PACKAGES = ("mlitb.master", "mlitb.nodes", "mlitb.dataserver", "mlitb.closure",
                  "mlitb.console", "mlitb.cluster", "mlitb.client", "mlitb.cli")
"""Packages built on the core: the core never imports them."""


def modules() -> dict[str, Path]:
    """Every module of the ``mlitb`` package (the tree matches the import names) -> its file."""
    found: dict[str, Path] = {}
    for path in sorted((ROOT / "mlitb").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if any(part.startswith(".") or part == "__pycache__" for part in parts):
            continue
        name = ".".join(parts).removesuffix(".__init__")
        found[name] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt], *, everywhere: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (``everywhere``: also those in
    function bodies and under ``if TYPE_CHECKING``)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if everywhere:
                yield from _imports(node.body, everywhere=everywhere)
        elif isinstance(node, ast.If):
            if everywhere or not _is_type_checking(node.test):
                yield from _imports(node.body, everywhere=everywhere)
            yield from _imports(node.orelse, everywhere=everywhere)
        elif isinstance(node, (ast.Try, ast.TryStar)):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse,
                          node.finalbody):
                yield from _imports(block, everywhere=everywhere)
        elif isinstance(node, (ast.ClassDef, ast.With, ast.For, ast.While)):
            yield from _imports(node.body, everywhere=everywhere)


def imported_names(name: str, path: Path, *, everywhere: bool = False) -> set[str]:
    """Absolute names of the modules (and of their parent packages) that ``name`` imports;
    relative imports resolved; ``from M import x`` also yields ``M.x`` (x may be a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path)).body, everywhere=everywhere):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
        else:
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            bases = [base]
            names.update(f"{base}.{alias.name}" for alias in node.names)
        for base in bases:
            parts = base.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return names


def import_graph() -> dict[str, list[str]]:
    """Module -> the package's modules it imports at module level. A module's own parent
    packages are left out: they are already being imported when it runs."""
    found = modules()
    graph = {}
    for name, path in found.items():
        parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = sorted(m for m in imported_names(name, path)
                             if m in found and m != name and m not in parents)
    return graph


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (its first module repeated at the end), or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path, on_path = [start], {start}
        stack = [iter(graph[start])]
        while stack:
            target = next(stack[-1], None)
            if target is None:  # every import of path[-1] explored
                stack.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
            elif target in on_path:
                return path[path.index(target):] + [target]
            elif target not in done:
                path.append(target)
                on_path.add(target)
                stack.append(iter(graph.get(target, ())))
    return None


def core_modules() -> list[str]:
    return sorted(name for name in modules()
                  if any(name == p or name.startswith(p + ".") for p in CORE_PACKAGES))


def loaded_after_import(names: list[str]) -> set[str]:
    """``sys.modules`` of a fresh interpreter after importing ``names``."""
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


# -- the core ------------------------------------------------------------------------------------
def test_the_core_imports_without_the_web_stack_or_the_shell() -> None:
    core = core_modules()
    assert "mlitb.training._project" in core and "mlitb.training._compute" in core
    loaded = loaded_after_import(core)
    web = sorted({m.split(".")[0] for m in loaded} & set(WEB_STACK))
    assert not web, f"importing the core loaded the web stack: {web}"
    shell = sorted(m for m in loaded
                   if any(m == p or m.startswith(p + ".") for p in SHELL_PACKAGES))
    assert not shell, f"importing the core loaded packages built on it: {shell}"


def test_closures_and_the_data_servers_pure_modules_import_without_the_web_stack() -> None:
    """The master and data-server packages load their exports on first use, so their pure
    modules (and closures, which use the data server's ingest) import without the web stack."""
    names = ["mlitb.closure", "mlitb.dataserver._ingest", "mlitb.dataserver._client",
             "mlitb.dataserver._store", "mlitb.dataserver._backend", "mlitb.master._persist"]
    loaded = loaded_after_import(names)
    web = sorted({m.split(".")[0] for m in loaded} & set(WEB_STACK))
    assert not web, f"importing {names} loaded the web stack: {web}"


def test_the_core_imports_nothing_but_numpy_the_stdlib_and_the_layers_below() -> None:
    """Function bodies and ``if TYPE_CHECKING`` included: a late import is still a dependency."""
    allowed = {"numpy", *CORE_PACKAGES}
    found = modules()
    bad = []
    for name in core_modules():
        if not name.startswith("mlitb.training"):
            continue
        for imported in imported_names(name, found[name], everywhere=True):
            if imported.split(".")[0] in sys.stdlib_module_names or imported == "mlitb":
                continue
            if not any(imported == a or imported.startswith(a + ".") for a in allowed):
                bad.append(f"{name} imports {imported}")
    assert not bad, "\n".join(bad)


def test_closures_never_import_the_master_or_the_nodes() -> None:
    found = modules()
    bad = [f"{name} imports {imported}"
           for name in sorted(found) if name == "mlitb.closure" or name.startswith("mlitb.closure.")
           for imported in sorted(imported_names(name, found[name], everywhere=True))
           if imported.split(".")[:2] in (["mlitb", "master"], ["mlitb", "nodes"])]
    assert not bad, "\n".join(bad)


# -- the whole package ---------------------------------------------------------------------------
def test_the_tree_matches_the_import_names() -> None:
    """No package-dir mapping: ``mlitb.nodes`` is ``mlitb/nodes/`` (and so on), so a checkout
    imports what the installed package does."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "package-dir" not in setuptools
    found = modules()
    for name in ("mlitb.nodes._worker", "mlitb.console._app", "mlitb.console.screens",
                 "mlitb.browser", "mlitb.bench.recipe", "mlitb.cli"):
        assert name in found, name
    code = ("import mlitb.nodes, mlitb.console, mlitb.browser, mlitb.bench, mlitb.cli\n"
            "for m in (mlitb.nodes, mlitb.console, mlitb.browser, mlitb.bench, mlitb.cli):\n"
            "    print(m.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    names = ("nodes", "console", "browser", "bench", "cli")
    assert [Path(f) for f in out] == [ROOT / "mlitb" / n / "__init__.py" for n in names]


def test_the_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle (module level): " + " -> ".join(cycle or [])


@pytest.mark.parametrize("graph, cycle", [
    ({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
    ({"a": ["b"], "b": ["c"], "c": ["b"]}, ["b", "c", "b"]),
    ({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, None),
])
def test_find_cycle_reports_the_path(graph: dict[str, list[str]],
                                     cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


@pytest.mark.parametrize("module", ["_hub.py", "_loop.py", "_requests.py"])
def test_the_hub_the_loops_and_the_requests_use_only_masters_public_methods(module: str) -> None:
    """docs/architecture.md: ``Master`` is split along its seams; the connection hub, the
    project loops and the request handlers reach it through public names only."""
    tree = ast.parse((ROOT / "mlitb" / "master" / module).read_text(encoding="utf-8"))
    private = sorted({f"master.{node.attr}" for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and node.attr.startswith("_")
                      and (isinstance(node.value, ast.Name) and node.value.id == "master"
                           or isinstance(node.value, ast.Attribute)
                           and node.value.attr == "master")})
    assert not private, f"mlitb/master/{module} uses private names of Master: {private}"
