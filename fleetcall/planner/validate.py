"""Plan validation: every problem of a plan at once, each naming its line. Pure, no I/O.

Two entry points:

* :func:`check_task` - one task as it streams in: its tool, its arguments, its references to the
  tasks accepted so far (``known_ids``);
* :func:`validate_plan` - a whole plan: every task's problems, duplicate ids, cycles, a missing
  ``join()``, too many tasks, an empty plan (no tasks and no ``join()``).

Messages are deterministic, so the same problem found by both reads the same (callers dedupe).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping

import networkx as nx

from fleetcall.errors import PlanError
from fleetcall.plan import IssueKind, Plan, PlanIssue, Task
from fleetcall.tools.base import Tool


def check_task(task: Task, *, tools: Mapping[str, Tool], known_ids: Collection[int]) -> list[PlanIssue]:
    """Problems of one streamed task: unknown tool, bad arguments, references outside ``known_ids``.

    ``known_ids`` are the ids the task may refer to (in a streamed text plan: the tasks before it).
    A reference to an unknown id greater than the task's own is a FORWARD_REFERENCE, otherwise a
    MISSING_REFERENCE.

    >>> # check_task(task, tools={"search": search_tool}, known_ids={1, 2})
    """
    return tool_issues(task, tools) + _ref_issues(task, known_ids, all_ids=None)


def tool_issues(task: Task, tools: Mapping[str, Tool]) -> list[PlanIssue]:
    """UNKNOWN_TOOL or BAD_ARGUMENTS problems of one task."""
    tool = tools.get(task.tool)
    if tool is None:
        known = sorted(tools)
        close = difflib.get_close_matches(task.tool, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = ", ".join(known) or "(none)"
        return [PlanIssue(IssueKind.UNKNOWN_TOOL, f"task {task.id} uses unknown tool {task.tool!r}{hint}; "
                          f"known tools: {listed}", task.line, task.id)]
    try:
        problems = tool.check_arguments(task.args, task.kwargs_dict)
    except Exception as exc:  # a tool's own checker failing is a problem of this task, not a crash
        problems = [f"could not check the arguments: {type(exc).__name__}: {exc}"]
    return [PlanIssue(IssueKind.BAD_ARGUMENTS, f"task {task.id} {task.tool}(): {p}", task.line, task.id)
            for p in problems]


def _ref_issues(task: Task, known_ids: Collection[int], all_ids: Collection[int] | None) -> list[PlanIssue]:
    """Reference problems; with ``all_ids`` (a whole plan) an id in it but not known is FORWARD."""
    issues: list[PlanIssue] = []
    for target in sorted(task.deps):
        if target == task.id:
            issues.append(PlanIssue(IssueKind.SELF_REFERENCE, f"task {task.id} refers to its own result "
                                    f"${target}", task.line, task.id))
        elif target in known_ids:
            continue
        elif (target in all_ids) if all_ids is not None else target > task.id:
            issues.append(PlanIssue(IssueKind.FORWARD_REFERENCE, f"task {task.id} refers to ${target}, a "
                                    "later task; a task may use only the results of earlier tasks",
                                    task.line, task.id))
        else:
            issues.append(PlanIssue(IssueKind.MISSING_REFERENCE, f"task {task.id} refers to ${target}, but "
                                    f"there is no task {target}", task.line, task.id))
    return issues


def validate_plan(
    plan: Plan,
    tools: Mapping[str, Tool],
    *,
    max_tasks: int | None = None,
    ordered: bool = False,
) -> list[PlanIssue]:
    """Every problem of ``plan``, sorted by line.

    References may point to any task of the plan (JSON plans list tasks in any order) as long as
    the graph has no cycle; with ``ordered=True`` (a text plan's rule) only to earlier tasks.
    ``joined`` is required: JSON plans set it, text plans need their ``join()``. A joined plan
    without tasks is valid (LLMCompiler's "just join()": the joiner answers from the question and
    earlier rounds); no tasks and no join is EMPTY.

    >>> # issues = validate_plan(plan, {"search": search_tool}, max_tasks=20)
    """
    issues: list[PlanIssue] = []
    if not plan.tasks and not plan.joined:
        issues.append(PlanIssue(IssueKind.EMPTY, "the plan has no tasks and no join()", _end_line(plan)))
    elif not plan.joined:
        issues.append(PlanIssue(IssueKind.NO_JOIN, "the plan does not end with join()", _end_line(plan)))
    all_ids = {t.id for t in plan.tasks}
    seen: dict[int, Task] = {}
    for task in plan.tasks:
        if task.id in seen:
            issues.append(PlanIssue(IssueKind.DUPLICATE_ID, f"task id {task.id} is used twice (also on "
                                    f"line {seen[task.id].line})", task.line, task.id))
        seen.setdefault(task.id, task)
        # A reference to the task itself is caught as SELF_REFERENCE before membership is asked,
        # so the id sets need no per-task copy without it (that copy made validation quadratic).
        known = seen.keys() if ordered else all_ids
        issues += tool_issues(task, tools) + _ref_issues(task, known, all_ids)
    if not ordered:
        issues += cycle_issues(plan)
    if max_tasks is not None and len(plan.tasks) > max_tasks:
        extra = plan.tasks[max_tasks]
        issues.append(PlanIssue(IssueKind.TOO_MANY_TASKS, f"the plan has {len(plan.tasks)} tasks; at most "
                                f"{max_tasks} are allowed", extra.line, extra.id))
    issues.sort(key=lambda i: i.line if i.line is not None else 0)
    return issues


def cycle_issues(plan: Plan) -> list[PlanIssue]:
    """One CYCLE issue per group of tasks that depend on each other (self references excluded)."""
    graph = plan.graph()
    graph.remove_edges_from(list(nx.selfloop_edges(graph)))
    issues: list[PlanIssue] = []
    for component in nx.strongly_connected_components(graph):
        if len(component) < 2:
            continue
        cycle = nx.find_cycle(graph.subgraph(component))
        ids = [u for u, _ in cycle]
        first = min(ids, key=lambda i: (_line_of(graph, i), i))
        start = ids.index(first)
        ids = ids[start:] + ids[:start]
        path = " -> ".join(f"${i}" for i in [*ids, ids[0]])
        issues.append(PlanIssue(IssueKind.CYCLE, f"tasks depend on each other in a cycle (each feeds the next): {path}",
                                _line_of(graph, first), first))
    return issues


def _line_of(graph: nx.DiGraph, task_id: int) -> int:
    task = graph.nodes[task_id].get("task")
    return task.line if task is not None else 0


def _end_line(plan: Plan) -> int:
    """The line a plan-wide problem is reported on: the plan's last task, or line 1."""
    return max((t.line for t in plan.tasks), default=1) or 1


def raise_for_issues(issues: Collection[PlanIssue]) -> None:
    """Raise :class:`PlanError` carrying every issue, if there are any."""
    if issues:
        raise PlanError(list(issues))
