"""Plan validation: per-task checks and whole-plan checks, every problem at once."""

from __future__ import annotations

import pytest

from fleetcall.errors import PlanError
from fleetcall.planner import (
    Interp, IssueKind, Plan, Ref, Task, check_task, cycle_issues, parse_plan, raise_for_issues, validate_plan,
)


def task(id: int, tool: str = "search", *args: object, line: int | None = None, **kwargs: object) -> Task:
    return Task(id, tool, args, tuple(kwargs.items()), line=id if line is None else line)


def kinds(issues: list) -> list[IssueKind]:
    return [i.kind for i in issues]


def test_good_task_has_no_issues(tools: dict) -> None:
    assert check_task(task(2, "search", Ref(1)), tools=tools, known_ids={1}) == []
    assert check_task(task(2, "math", Interp(("a", Ref(1)))), tools=tools, known_ids={1}) == []


def test_unknown_tool_lists_known_tools_and_suggests(tools: dict) -> None:
    (issue,) = check_task(task(1, "serch", "x"), tools=tools, known_ids=())
    assert issue.kind is IssueKind.UNKNOWN_TOOL and issue.line == 1 and issue.task == 1
    assert "math, scale, search" in issue.message and "did you mean 'search'" in issue.message


def test_bad_arguments_come_from_the_tool(tools: dict) -> None:
    issues = check_task(task(3, "scale", "big", bogus=1), tools=tools, known_ids=())
    assert kinds(issues) == [IssueKind.BAD_ARGUMENTS] * 3
    assert all(i.line == 3 for i in issues) and any("bogus" in i.message for i in issues)


def test_a_raising_argument_checker_is_an_issue(fake_tool: type) -> None:
    class Raising(fake_tool):  # type: ignore[misc, valid-type]
        def check_arguments(self, args, kwargs):  # noqa: ANN001, ANN201
            raise RuntimeError("boom")

    (issue,) = check_task(task(1, "r"), tools={"r": Raising("r")}, known_ids=())
    assert issue.kind is IssueKind.BAD_ARGUMENTS and "boom" in issue.message


def test_reference_issues_of_one_task(tools: dict) -> None:
    issues = check_task(task(3, "math", Interp((Ref(3), Ref(5), Ref(1)))), tools=tools, known_ids={2})
    assert kinds(issues) == [IssueKind.MISSING_REFERENCE, IssueKind.SELF_REFERENCE, IssueKind.FORWARD_REFERENCE]


def test_validate_reports_everything_at_once(tools: dict) -> None:
    plan = Plan((task(1, "serch", "x"), task(2, "search", Ref(9)), task(2, "search", "y", line=3),
                 task(4, "search", Ref(4))), joined=False)
    issues = validate_plan(plan, tools, max_tasks=3)
    assert set(kinds(issues)) == {IssueKind.UNKNOWN_TOOL, IssueKind.MISSING_REFERENCE, IssueKind.DUPLICATE_ID,
                                  IssueKind.SELF_REFERENCE, IssueKind.NO_JOIN, IssueKind.TOO_MANY_TASKS}
    assert all(i.line is not None for i in issues)
    assert [i.line for i in issues] == sorted(i.line for i in issues)


def test_empty_plan(tools: dict) -> None:
    assert kinds(validate_plan(Plan(()), tools)) == [IssueKind.EMPTY]
    assert validate_plan(Plan((), joined=True), tools) == []  # "just join()": the joiner answers


def test_unordered_plans_may_refer_forward_but_not_in_cycles(tools: dict) -> None:
    plan = Plan((task(1, "search", Ref(2)), task(2, "search", "x")), joined=True)
    assert validate_plan(plan, tools) == []
    assert kinds(validate_plan(plan, tools, ordered=True)) == [IssueKind.FORWARD_REFERENCE]


def test_cycles_are_reported_once_per_group(tools: dict) -> None:
    plan = Plan((task(1, "search", Ref(3)), task(2, "search", Ref(1)), task(3, "search", Ref(2)),
                 task(4, "search", Ref(5)), task(5, "search", Ref(4)), task(6, "search", Ref(6))), joined=True)
    issues = validate_plan(plan, tools)
    cycles = [i for i in issues if i.kind is IssueKind.CYCLE]
    assert len(cycles) == 2 and cycles[0].line == 1 and "$1 -> $2 -> $3 -> $1" in cycles[0].message
    assert IssueKind.SELF_REFERENCE in kinds(issues)
    assert cycle_issues(Plan((task(1),))) == []


def test_parsed_text_plan_validates_clean(tools: dict) -> None:
    plan, issues = parse_plan('1. search("x")\n2. math("$1 * 2", context=[$1])\n3. join()')
    assert issues == [] and validate_plan(plan, tools, max_tasks=2, ordered=True) == []


def test_messages_are_identical_between_check_task_and_validate(tools: dict) -> None:
    t = task(1, "serch", "x")
    assert check_task(t, tools=tools, known_ids=()) == validate_plan(Plan((t,), joined=True), tools)


def test_raise_for_issues(tools: dict) -> None:
    raise_for_issues([])
    issues = validate_plan(Plan(()), tools)
    with pytest.raises(PlanError) as err:
        raise_for_issues(issues)
    assert err.value.issues == tuple(issues) and "no tasks" in str(err.value)
