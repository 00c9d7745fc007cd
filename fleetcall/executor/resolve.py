"""Substituting references by value: ``$1`` keeps its Python type, ``"a $1 b"`` is formatted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetcall.observe import describe_exception, render, safe_repr
from fleetcall.plan import Interp, Ref, Value


class ResolveError(Exception):
    """A reference that cannot be followed (missing key, bad index): the task fails with it."""


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
        except ResolveError:
            raise
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ResolveError(f"cannot resolve {ref}: no {step!r} in the result of task {ref.task}") from exc
        except BaseException as exc:  # the result's own __getitem__ / attribute raised: the task fails
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise ResolveError(f"cannot resolve {ref}: reading {step!r} of the result of task {ref.task} "
                               f"raised {describe_exception(exc)}") from exc
    return value


def substitute(value: Value, results: Mapping[int, Any]) -> Any:
    """``value`` with every reference replaced by the referenced result; a reference inside a
    string is formatted in by :func:`fleetcall.observe.render` (strings as they are, structures
    as JSON)."""
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
        parts.append(f"{k}={safe_repr(v, limit)}")
    return f"{tool}({', '.join(parts)})"
