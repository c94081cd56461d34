"""The layout's dependency rules, read from every import statement (function-level ones included).

- the kit (kit/) imports no subsystem, no tool (loadtest), no development stack (devstack) and not the root;
- only the composition root (peak/) imports every subsystem; subsystems never import the root;
- core subsystems (sso, seckill) never import non-core ones (reviews, customer_service); degrade imports no
  subsystem; the ops console (console/) imports the kit and degrade only; other subsystems use SSO only
  through ``sso.client``;
- nothing that runs in an API or worker process imports the development stack;
- no import circle between files: an import moved into a function does not hide one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

SUBSYSTEMS = {"sso", "seckill", "degrade", "reviews", "customer_service", "console"}
TOOLS = {"loadtest", "devstack"}
PACKAGES = {"kit", "peak"} | SUBSYSTEMS | TOOLS
# package -> top-level packages it must never import
FORBIDDEN = {
    "kit": PACKAGES - {"kit"},
    "sso": PACKAGES - {"kit", "sso"},
    "seckill": PACKAGES - {"kit", "seckill", "sso"},
    "degrade": PACKAGES - {"kit", "degrade"},
    "reviews": PACKAGES - {"kit", "reviews", "sso", "seckill", "degrade"},
    "customer_service": PACKAGES - {"kit", "customer_service", "sso", "seckill", "degrade"},
    # Generic like degrade: its authorize and the components' feeds are handed in.
    "console": PACKAGES - {"kit", "console", "degrade"},
    "devstack": SUBSYSTEMS | {"loadtest"},
}
# The one place the runtime names the development stack: the `peak up` command.
DEVSTACK_IMPORTERS = {"peak/cli.py"}
SSO_PUBLIC = "sso.client"


def _files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def _module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _imports(path: Path) -> set[str]:
    """Every module this file imports at run time (``from a import b`` gives ``a.b`` when b is a module)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _module_file(sub) else node.module)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package: str) -> None:
    for path in sorted((REPO / package).rglob("*.py")):
        for name in sorted(_imports(path)):
            top = name.split(".")[0]
            assert top not in FORBIDDEN[package], f"{_relative(path)} imports {name}"
            if top == "sso" and package != "sso":
                assert name == SSO_PUBLIC or name.startswith(SSO_PUBLIC + "."), (
                    f"{_relative(path)} imports {name}: other subsystems use SSO only through sso.client"
                )


def test_only_the_up_command_names_the_development_stack() -> None:
    runtime = [p for p in _files() if p.parts[len(REPO.parts)] not in TOOLS]
    for path in runtime:
        if _relative(path) in DEVSTACK_IMPORTERS:
            continue
        for name in _imports(path):
            assert name.split(".")[0] not in TOOLS, f"{_relative(path)} imports the tool {name}"


@pytest.mark.parametrize("entry", ["import peak.app", "import peak.cli; peak.cli.build_parser()"])
def test_api_and_worker_processes_load_no_development_stack(entry: str) -> None:
    probe = (
        f"{entry}; import sys; print(' '.join(sorted(m for m in sys.modules if m.startswith('devstack'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.split()
    assert loaded == [], f"`{entry}` loads the development stack: {loaded}"


def test_no_import_circle_between_files() -> None:
    graph: dict[str, set[str]] = {}
    for path in _files():
        targets = (_module_file(name) for name in _imports(path))
        graph[_relative(path)] = {_relative(t) for t in targets if t is not None and t != path}
    circles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert circles == [], "import circles: " + "; ".join(" <-> ".join(sorted(c)) for c in circles)


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively (the graph has a few hundred files)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found
