"""Importing one layer loads only it: the package's public names are lazy (PEP 562)."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

import fleetcall


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; import json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize("module", ["fleetcall.router.queue", "fleetcall.router.dispatcher",
                                    "fleetcall.planner.parser", "fleetcall.vclock"])
def test_a_pure_module_does_not_load_the_frameworks(module: str) -> None:
    loaded = _loaded_after(f"import {module}")
    heavy = {"langchain_core", "starlette", "uvicorn", "httpx", "rich", "fleetcall.executor",
             "fleetcall.service", "fleetcall.sim"}
    assert not heavy & loaded, f"import {module} loaded {sorted(heavy & loaded)}"


def test_import_fleetcall_loads_nothing_but_itself() -> None:
    loaded = {m for m in _loaded_after("import fleetcall") if m.startswith("fleetcall")}
    assert loaded == {"fleetcall", "fleetcall._lazy"}


@pytest.mark.parametrize("name", fleetcall.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(fleetcall, name) is not None
    assert name in dir(fleetcall)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        fleetcall.no_such_name  # noqa: B018


def _top_level_imports(nodes: list[ast.stmt], typing: bool = False) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements run when a module is imported: top level, incl. under if/try;
    not inside functions; under ``if TYPE_CHECKING`` only if ``typing``."""
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            if typing:
                yield from _top_level_imports(node.body, typing)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try)):
            yield from _top_level_imports(node.body, typing)
            yield from _top_level_imports(node.orelse, typing)
            for handler in getattr(node, "handlers", []):
                yield from _top_level_imports(handler.body, typing)
            yield from _top_level_imports(getattr(node, "finalbody", []), typing)


def _module_imports(root: pathlib.Path, typing: bool = False) -> dict[str, set[str]]:
    """fleetcall module -> the fleetcall modules importing it imports (``typing``: and those
    it names for type checking only)."""
    mods = {}
    for path in (root / "fleetcall").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        wanted: list[str] = []
        for node in _top_level_imports(ast.parse(path.read_text()).body, typing):
            if isinstance(node, ast.Import):
                wanted += [a.name for a in node.names]
                continue
            base = node.module or ""
            if node.level:
                pkg = package
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            wanted += [f"{base}.{a.name}" for a in node.names]
        graph[name] = {m for m in map(owner, wanted) if m is not None and m != name}
    return graph

def test_no_module_imports_itself_back() -> None:
    """No import cycle among fleetcall's modules (issue 10): a run is given its settings, not
    the orchestrator; view types live apart from the dispatcher and the queue."""
    root = pathlib.Path(fleetcall.__file__).parent.parent
    typed = _module_imports(root, typing=True)
    for layer in ("fleetcall.executor.run", "fleetcall.executor.baselines"):
        assert "fleetcall.executor.orchestrator" not in typed[layer], f"{layer} names the orchestrator"
    graph = _module_imports(root)
    cycles = []
    for start in graph:
        seen, stack = {start}, [(start, [start])]
        while stack:
            node, path = stack.pop()
            for dep in graph[node]:
                if dep == start:
                    cycles.append(" -> ".join([*path, start]))
                elif dep not in seen:
                    seen.add(dep)
                    stack.append((dep, [*path, dep]))
    assert not cycles, "\n".join(sorted(cycles)[:10])
