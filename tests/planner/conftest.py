"""A tiny fake Tool (implements fleetcall.tools.base.Tool) so planner tests need no real tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from fleetcall.plan import Interp, Ref
from fleetcall.tools.base import ToolContext, ToolOptions

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list, tuple), "object": (dict,),
}


@dataclass
class FakeTool:
    """A tool with typed parameters; ``check_arguments`` follows the protocol's rules."""

    name: str
    params: tuple[tuple[str, str], ...] = (("query", "string"),)   # (name, JSON type), in order
    required: tuple[str, ...] | None = None                          # default: all parameters
    description: str = "A fake tool."
    options: ToolOptions = field(default_factory=ToolOptions)

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {p: {"type": t} for p, t in self.params},
            "required": list(self._required()),
        }

    def signature(self) -> str:
        return f"{self.name}({', '.join(f'{p}: {t}' for p, t in self.params)}) -> str"

    def parameter_names(self) -> list[str]:
        return [p for p, _ in self.params]

    def _required(self) -> tuple[str, ...]:
        return tuple(self.parameter_names()) if self.required is None else self.required

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        names = self.parameter_names()
        problems: list[str] = []
        if len(args) > len(names):
            problems.append(f"takes {len(names)} positional arguments but {len(args)} were given")
        bound = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                problems.append(f"unexpected argument {k!r}")
            elif k in bound:
                problems.append(f"argument {k!r} given twice")
            else:
                bound[k] = v
        problems += [f"missing argument {p!r}" for p in self._required() if p not in bound]
        types = dict(self.params)
        for k, v in bound.items():
            if isinstance(v, Ref) or (isinstance(v, Interp) and types[k] == "string"):
                continue
            if not isinstance(v, _PY_TYPES[types[k]]) or (types[k] != "boolean" and isinstance(v, bool)):
                problems.append(f"argument {k!r} must be {types[k]}, got {type(v).__name__}")
        return problems

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**dict(zip(self.parameter_names(), args)), **kwargs}

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        return f"{self.name}:{arguments}"


@pytest.fixture
def tools() -> dict[str, FakeTool]:
    search = FakeTool("search", description="Search the web.\nReturns text.")
    math = FakeTool("math", (("expr", "string"), ("context", "array")), required=("expr",),
                    description="Evaluate an expression.")
    scale = FakeTool("scale", (("x", "number"), ("factor", "integer")), description="Scale a number.")
    return {t.name: t for t in (search, math, scale)}


@pytest.fixture
def fake_tool() -> type[FakeTool]:
    """The FakeTool class, for tests that build their own tools."""
    return FakeTool
