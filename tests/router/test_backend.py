"""The backend seam: the router finds in-process endpoints by URL scheme, never by importing the
simulator (DESIGN.md: "router never imports sim")."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetcall.errors import ConfigError
from fleetcall.llm.base import complete
from fleetcall.router.backend import (
    ENTRY_POINT_GROUP,
    Backend,
    BackendSpec,
    register_backend,
    resolve_backend,
    unregister_backend,
)
from fleetcall.router.pool import EndpointPool, script_responder
from tests.router.helpers import MODEL, ask, vrun

ROOT = Path(__file__).resolve().parents[2]
ROUTER = ROOT / "fleetcall" / "router"


def test_no_router_module_imports_the_simulator_even_inside_a_function() -> None:
    for path in sorted(ROUTER.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value] if node.value.startswith("fleetcall.sim") else []
            bad = [n for n in names if n == "fleetcall.sim" or n.startswith("fleetcall.sim.")]
            assert not bad, f"{path.name}:{node.lineno} names {bad}"


def test_importing_every_router_module_loads_no_simulator_module() -> None:
    code = """
import importlib, pkgutil, sys
import fleetcall.router
for module in pkgutil.iter_modules(fleetcall.router.__path__):
    importlib.import_module("fleetcall.router." + module.name)
from fleetcall.router.pool import EndpointPool
pool = EndpointPool([{"name": "a", "base_url": "http://127.0.0.1:9/v1", "model": "m"}])
print(sorted(name for name in sys.modules if name.split(".")[:2] == ["fleetcall", "sim"]))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_emulated_backend_is_declared_as_an_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"][ENTRY_POINT_GROUP] == {
        "emulated": "fleetcall.sim.backend:EmulatedBackend"}


def test_the_installed_entry_point_resolves_to_the_emulated_backend() -> None:
    """Fails until the package is (re)installed with its entry points: pip install -e ."""
    installed = {ep.name: ep.value for ep in
                 importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert installed.get("emulated") == "fleetcall.sim.backend:EmulatedBackend", (
        f"installed {ENTRY_POINT_GROUP} entry points: {installed}; run pip install -e .")
    from fleetcall.sim.backend import EmulatedBackend
    assert resolve_backend(f"emulated://A100-80G/{MODEL}") is EmulatedBackend


def test_http_needs_no_backend_and_an_unknown_scheme_is_a_clear_error() -> None:
    assert resolve_backend("http://127.0.0.1:8000/v1") is None
    assert resolve_backend("https://api.example.com/v1") is None
    with pytest.raises(ConfigError, match=r"no backend serves carrier-pigeon:// endpoints "
                                          r"\(known: .*\).*pip install -e \..*register_backend"):
        resolve_backend("carrier-pigeon://coop/llama")


class _Canned:
    """A backend answering every chat completion with one fixed streamed text."""

    call_metadata = False
    gpu, model, tp, capacity_tokens = "unknown", None, 1, 4096

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.closed = False
        body = (b'data: {"choices": [{"index": 0, "delta": {"content": "canned"}}]}\n\n'
                b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
                b"data: [DONE]\n\n")
        self.transport = httpx.MockTransport(lambda request: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=body))

    def stats(self) -> dict[str, Any]:
        return {"spec": self.spec.config.name, "options": dict(self.spec.options)}

    async def aclose(self) -> None:
        self.closed = True


def test_a_backend_registered_in_code_serves_its_scheme_in_place_of_the_entry_point() -> None:
    made: list[_Canned] = []

    def factory(spec: BackendSpec) -> Backend:
        made.append(_Canned(spec))
        return made[-1]

    register_backend("emulated", factory)
    try:
        async def main() -> tuple[str, dict[str, Any]]:
            async with EndpointPool([{"name": "x", "base_url": f"emulated://A100-80G/{MODEL}"}],
                                    seed=7, backend_options={"colour": "blue"}) as pool:
                done = await complete(pool, ask())
                return done.text, pool.engine_stats()

        text, stats = vrun(main())
    finally:
        unregister_backend("emulated")
    assert text == "canned"
    assert stats == {"x": {"spec": "x", "options": {"seed": 7, "colour": "blue"}}}
    assert made[0].closed


def test_script_responder_reads_the_call_context_the_pool_sends_to_emulated_endpoints() -> None:
    seen: list[tuple[str, str]] = []

    def script(request: Any) -> str:
        seen.append((request.context.query_id, request.context.kind))
        return f"hello {request.context.kind}"

    async def main() -> str:
        async with EndpointPool.emulated(["A100-80G"], MODEL,
                                         responder=script_responder(script)) as pool:
            return (await complete(pool, ask(query="q7", kind="joiner"))).text

    assert vrun(main()) == "hello joiner"
    assert seen == [("q7", "joiner")]


def test_the_public_api_keeps_pool_and_script_responder() -> None:
    import fleetcall
    assert fleetcall.EndpointPool is EndpointPool
    assert fleetcall.script_responder is script_responder
