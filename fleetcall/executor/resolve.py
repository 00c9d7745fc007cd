"""Substituting references by value: ``$1`` keeps its Python type, ``"a $1 b"`` is formatted."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fleetcall.plan import Interp, Ref, Value


class ResolveError(Exception):
    """A reference that cannot be followed (missing key, bad index): the task fails with it."""


def render(value: Any) -> str:
    """How a result reads when formatted into text: strings as they are, structures as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def follow(ref: Ref, results: Mapping[int, Any]) -> Any:
    """The value ``ref`` names: the task's result, then each path step (key, attribute, index)."""
    value = results[ref.task]
    for step in ref.path:
        try:
            if isinstance(step, int):
                value = value[step]
            elif isinstance(value, Mapping):
                value = value[step]
            elif step.startswith("_"):
                # model output must not walk Python internals ($1.__class__.__init__.__globals__)
                raise ResolveError(f"cannot resolve {ref}: {step!r} is private (a path may name keys, "
                                   "indexes and public attributes only)")
            else:
                value = getattr(value, step)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ResolveError(f"cannot resolve {ref}: no {step!r} in the result of task {ref.task}") from exc
    return value


def substitute(value: Value, results: Mapping[int, Any]) -> Any:
    """``value`` with every reference replaced by the referenced result."""
    if isinstance(value, Ref):
        return follow(value, results)
    if isinstance(value, Interp):
        return "".join(p if isinstance(p, str) else render(follow(p, results)) for p in value.parts)
    if isinstance(value, dict):
        return {k: substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, results) for v in value]
    if isinstance(value, tuple):
        return tuple(substitute(v, results) for v in value)
    return value


def show_call(tool: str, arguments: Mapping[str, Any], limit: int = 300) -> str:
    """``tool(a=1, b='x')`` with long values cut, for prompts and logs."""
    parts = []
    for k, v in arguments.items():
        text = repr(v)
        if len(text) > limit:
            text = text[: limit - 3] + "..."
        parts.append(f"{k}={text}")
    return f"{tool}({', '.join(parts)})"
