"""The two packages' boundaries, read from the source by AST (nothing is imported):

* ``orchestrator/`` (login node) never imports torch, transformers, peft, datasets,
  bitsandbytes or accelerate: not at module level, not inside a function, and not through a
  ``jobs`` module it imports (the login node may import torch-free registries under ``jobs/``);
* ``jobs/`` (compute node) never imports ``orchestrator``;
* no import cycles among ``orchestrator`` modules, nor among ``jobs`` modules: the graph has
  an edge for every import that can run, inside functions too (such an import only postpones
  the cycle), not those under ``if TYPE_CHECKING:``; importing ``a.b.c`` runs
  ``a/b/__init__.py`` first, so that is an edge too.

The checks run on a directory, so the tests below also prove that they catch what they look for.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = frozenset({"torch", "transformers", "peft", "datasets", "bitsandbytes", "accelerate"})
PACKAGES = ("orchestrator", "jobs")
# No cycle is allowed: never add an entry here, remove the cycle instead.
KNOWN_CYCLES: set[frozenset[str]] = set()

Graph = dict[str, set[str]]


def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``root/package``."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _executed(body: list[ast.stmt], in_functions: bool) -> Iterator[ast.stmt]:
    """The simple statements that can run: the body and what its ``if``/``try``/``with``/``for``
    blocks and class bodies hold, function bodies too if ``in_functions``; never what an
    ``if TYPE_CHECKING:`` block holds (only a type checker reads it)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not in_functions:
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from _executed(node.orelse, in_functions)
            continue
        blocks = [getattr(node, field, []) for field in ("body", "orelse", "finalbody")]
        blocks += [handler.body for handler in getattr(node, "handlers", [])]
        if not any(blocks):
            yield node
        for block in blocks:
            yield from _executed(block, in_functions)


def imported(node: ast.Import | ast.ImportFrom | ast.Call, module: str, is_package: bool) -> list[str]:
    """The dotted names ``node`` imports (``from a import b`` gives ``a.b`` and ``a``):
    ``import x``, ``from x import y``, relative forms, ``importlib.import_module("x")``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join(anchor + ([base] if base else []))
        return [base] + [f"{base}.{alias.name}" for alias in node.names]
    if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return [node.args[0].value]
    return []


def import_sites(root: Path, package: str, scope: str) -> Iterator[tuple[str, int, str]]:
    """``(module, line, imported name)`` for the imports of ``package``: ``"all"`` of them,
    those that can run (``"executed"``: not under ``if TYPE_CHECKING``), or those that run
    when the module is imported (``"module"``: not in functions either)."""
    for name, path in modules(root, package).items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        statements = [tree] if scope == "all" else _executed(tree.body, in_functions=scope == "executed")
        for node in (node for statement in statements for node in ast.walk(statement)):
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.Call)):
                for target in imported(node, name, is_package):
                    yield name, node.lineno, target


def import_graph(root: Path, package: str, scope: str = "executed") -> Graph:
    """Import edges between the modules of ``package``, from every import that can run: an
    import inside a function only postpones a cycle (``executors`` imported ``submit`` in a
    function to break one); ``scope="module"``: only those that run at import. ``from a import b``
    points at module ``a.b`` when there is one, else at ``a``; every package above a target
    is imported first, so it is a target too (except the importer's own packages, which are
    already being imported)."""
    known = modules(root, package)
    graph: Graph = {name: set() for name in known}
    for name, _, target in import_sites(root, package, scope):
        parts = target.split(".")
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            own_package = name == prefix or name.startswith(prefix + ".")
            if prefix in known and not own_package:
                graph[name].add(prefix)
    return graph


def cycles(graph: Graph) -> list[frozenset[str]]:
    """Every strongly connected component of more than one module (Tarjan), or a module
    that imports itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the number of modules
        index[node] = low[node] = len(index)
        stack.append(node)
        for child in sorted(graph[node]):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def heavy_imports(root: Path) -> list[str]:
    """Where ``orchestrator`` imports a heavy library, directly (anywhere in its code) or
    through the module-level imports of a ``jobs`` module it imports."""
    problems = sorted({f"{module}:{line} imports {target.split('.')[0]}"
                       for module, line, target in import_sites(root, "orchestrator", "all")
                       if target.split(".")[0] in HEAVY})
    jobs_graph = import_graph(root, "jobs", "module")
    jobs_heavy = {module: target.split(".")[0] for module, _, target in import_sites(root, "jobs", "module")
                  if target.split(".")[0] in HEAVY}
    reached = {target.rsplit(".", end)[0] for _, _, target in import_sites(root, "orchestrator", "all")
               if target.startswith("jobs") for end in range(target.count(".") + 1)} & set(jobs_graph)
    for start in sorted(reached):
        seen = {start}
        todo = [(start, [start])]
        while todo:
            module, path = todo.pop()
            if module in jobs_heavy:
                problems.append(f"orchestrator imports {start}, which imports {jobs_heavy[module]} "
                                f"(via {' -> '.join(path)})")
                break
            for child in sorted(jobs_graph[module] - seen):
                seen.add(child)
                todo.append((child, path + [child]))
    return problems


def test_orchestrator_never_imports_a_training_library() -> None:
    assert heavy_imports(REPO) == []


def orchestrator_imports_in_jobs(root: Path) -> list[str]:
    """Where ``jobs`` imports ``orchestrator`` (anywhere in its code)."""
    return sorted({f"{module}:{line} imports orchestrator" for module, line, target in import_sites(root, "jobs", "all")
                   if target.split(".")[0] == "orchestrator"})


def test_jobs_never_imports_orchestrator() -> None:
    assert orchestrator_imports_in_jobs(REPO) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package: str) -> None:
    found = set(cycles(import_graph(REPO, package)))
    assert sorted(map(sorted, found - KNOWN_CYCLES)) == []
    stale = {cycle for cycle in KNOWN_CYCLES if cycle <= set(modules(REPO, package))} - found
    assert not stale, f"{sorted(map(sorted, stale))} is no longer a cycle: delete it from KNOWN_CYCLES"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    """A made-up tree with each kind of breach: every one is found, and nothing else."""
    root = _tree(tmp_path, {
        "orchestrator/__init__.py": "",
        "orchestrator/a.py": "from orchestrator import b\n",
        "orchestrator/b.py": "import orchestrator.c\n",
        "orchestrator/c.py": "from . import a\n\ndef late():\n    import orchestrator.d\n",
        "orchestrator/d.py": "import os\n\ndef train():\n    from transformers import Trainer\n",
        "orchestrator/pkg/__init__.py": "from orchestrator.pkg.inner import x\n",
        "orchestrator/pkg/inner.py": "from orchestrator.pkg import sibling\nx = 1\n",
        "orchestrator/pkg/sibling.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import orchestrator.e\n",
        "orchestrator/e.py": "import importlib\nfrom jobs import light\nimportlib.import_module('orchestrator.pkg.sibling')\n",
        "orchestrator/f.py": "import orchestrator.g\n",
        "orchestrator/g.py": "def later():\n    import orchestrator.f\n",
        "jobs/__init__.py": "",
        "jobs/light.py": "from jobs.deep import model\n",
        "jobs/deep.py": "try:\n    import torch\nexcept ImportError:\n    torch = None\nmodel = 1\n",
        "jobs/back.py": "def f():\n    from orchestrator.a import b\n",
    })
    assert cycles(import_graph(root, "orchestrator")) == [
        frozenset({"orchestrator.a", "orchestrator.b", "orchestrator.c"}), frozenset({"orchestrator.f", "orchestrator.g"})]
    assert cycles(import_graph(root, "jobs")) == []
    assert heavy_imports(root) == [
        "orchestrator.d:4 imports transformers",
        "orchestrator imports jobs.light, which imports torch (via jobs.light -> jobs.deep)",
    ]
    assert orchestrator_imports_in_jobs(root) == ["jobs.back:2 imports orchestrator"]
