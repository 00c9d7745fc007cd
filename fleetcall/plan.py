"""The plan model: tasks, references, problems and rounds. Frozen, slotted, no I/O.

A plan is a DAG of tasks; each task is one tool call whose arguments may hold references to the
results of earlier tasks:

* :class:`Ref` - a whole argument, ``$1`` / ``${1}``, optionally reaching into the result
  (``$1.price``, ``$1[0]``): substituted by value, keeping the result's Python type;
* :class:`Interp` - a string with references inside (``"compare $1 and $2"``): the results are
  formatted into the text.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import networkx as nx

from fleetcall.observe import render, safe_repr

JOIN = "join"


@dataclass(frozen=True, slots=True)
class Ref:
    task: int                            # id of the task whose result is used
    path: tuple[str | int, ...] = ()     # attribute / key / index steps into that result

    def __str__(self) -> str:
        tail = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path)
        return f"${self.task}{tail}"


@dataclass(frozen=True, slots=True)
class Interp:
    parts: tuple[str | Ref, ...]         # text pieces and references, in order

    def __str__(self) -> str:
        return "".join(p if isinstance(p, str) else "${" + str(p)[1:] + "}" for p in self.parts)


# An argument value: a JSON/Python literal whose leaves may be Ref or Interp.
Value: TypeAlias = Any


def iter_refs(value: Value) -> Iterator[Ref]:
    """Every reference inside an argument value, depth first."""
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, Interp):
        for part in value.parts:
            if isinstance(part, Ref):
                yield part
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_refs(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from iter_refs(v)


@dataclass(frozen=True, slots=True)
class Task:
    id: int                                   # the plan's own number for this task (N. ...)
    tool: str                                 # tool name
    args: tuple[Value, ...] = ()              # positional arguments
    kwargs: tuple[tuple[str, Value], ...] = ()  # keyword arguments, in written order
    thought: str | None = None                # the Thought: line(s) before it, if any
    line: int = 0                             # 1-based line in the plan text (or index in JSON)
    source: str = ""                          # the action as written
    _deps: frozenset[int] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # computed once: the executor and the validator ask for it on every hand-off
        refs = frozenset(r.task for v in (*self.args, *(v for _, v in self.kwargs)) for r in iter_refs(v))
        object.__setattr__(self, "_deps", refs)

    @property
    def deps(self) -> frozenset[int]:
        return self._deps

    @property
    def kwargs_dict(self) -> dict[str, Value]:
        return dict(self.kwargs)


class IssueKind(str, enum.Enum):
    SYNTAX = "syntax"
    UNKNOWN_TOOL = "unknown_tool"
    BAD_ARGUMENTS = "bad_arguments"
    SELF_REFERENCE = "self_reference"
    FORWARD_REFERENCE = "forward_reference"
    MISSING_REFERENCE = "missing_reference"
    DUPLICATE_ID = "duplicate_id"
    CYCLE = "cycle"
    NO_JOIN = "no_join"
    TOO_MANY_TASKS = "too_many_tasks"
    EMPTY = "empty"


@dataclass(frozen=True, slots=True)
class PlanIssue:
    kind: IssueKind
    message: str
    line: int | None = None   # 1-based line of the plan text (or JSON index) it concerns
    task: int | None = None   # task id it concerns

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.message}"


@dataclass(frozen=True, slots=True)
class Join:
    """The plan's final ``join()`` action."""

    line: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    tasks: tuple[Task, ...]
    joined: bool = False          # True iff a join() action was seen
    text: str = ""                # the plan as the model wrote it

    def task(self, task_id: int) -> Task:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    def graph(self) -> nx.DiGraph:
        """Tasks as nodes (attribute ``task``), edges dependency -> dependent."""
        g: nx.DiGraph = nx.DiGraph()
        for t in self.tasks:
            g.add_node(t.id, task=t)
        for t in self.tasks:
            for d in t.deps:
                g.add_edge(d, t.id)
        return g


class ObservationStatus(str, enum.Enum):
    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Observation:
    task_id: int
    tool: str
    status: ObservationStatus
    value: Any = None              # the result when status is OK
    error: str | None = None       # what went wrong when ERROR / SKIPPED (names the failed task)
    call: str = ""                 # the call with resolved arguments, as shown to the LLMs

    def __repr__(self) -> str:   # the value's own repr may raise, or be huge
        return (f"Observation(task_id={self.task_id!r}, tool={self.tool!r}, status={self.status!s}, "
                f"value={safe_repr(self.value, 500)}, error={self.error!r}, call={self.call!r})")

    def render(self, limit: int | None = None) -> str:
        """How the LLMs see it: the value by :func:`fleetcall.observe.render` (any value renders;
        about ``limit`` characters at most), or ``ERROR: ...`` / ``SKIPPED: ...``."""
        if self.status is ObservationStatus.OK:
            return render(self.value, limit)
        return f"{self.status.value.upper()}: {self.error}"


@dataclass(frozen=True, slots=True)
class Round:
    """One plan and what came of it, as shown to the planner on a replan and to the joiner."""

    plan_text: str
    tasks: tuple[Task, ...] = ()
    observations: tuple[Observation, ...] = ()
    issues: tuple[PlanIssue, ...] = ()       # validation problems of this plan, if any
    replan_reason: str | None = None         # why the joiner (or validation) asked for a new plan
    thoughts: tuple[str, ...] = field(default=())
