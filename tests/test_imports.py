"""Importing one layer loads only it: the package's public names are lazy (PEP 562)."""

from __future__ import annotations

import json
import subprocess
import sys

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
