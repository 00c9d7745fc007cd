"""Planner and joiner prompts."""

from __future__ import annotations

import pytest

from fleetcall.llm.base import count_tokens
from fleetcall.planner import (
    Interp, IssueKind, Observation, ObservationStatus, PlanIssue, Ref, Round, Task, build_joiner_messages,
    build_planner_messages, parse_json_plan, parse_plan, show_task, validate_plan,
)


def history() -> list[Round]:
    tasks = (Task(1, "search", ("x",), line=1, source='1. search("x")', thought="look"),
             Task(2, "math", (Interp((Ref(1), " + 1")),), line=2))
    obs = (Observation(1, "search", ObservationStatus.OK, value="A" * 5000),
           Observation(2, "math", ObservationStatus.ERROR, error="division by zero", call="math('A + 1')"))
    issue = PlanIssue(IssueKind.NO_JOIN, "the plan does not end with join()", 2)
    return [Round('1. search("x")\n2. math("$1 + 1")', tasks, obs, (issue,), replan_reason="need more data",
                  thoughts=("not enough",))]


def test_planner_system_prompt(tools: dict) -> None:
    system, user = build_planner_messages("What is X?", list(tools.values()), examples=["Question: q\n1. search('q')\n2. join()"],
                                          max_tasks=5)
    assert system.role == "system" and user.role == "user" and user.content == "Question: What is X?"
    for tool in tools.values():
        assert tool.signature() in system.content
    assert "   Search the web.\n   Returns text." in system.content
    assert "4. join()" in system.content and "<END_OF_PLAN>" in system.content and "$1.price" in system.content
    assert "at most 5 tasks" in system.content and "Question: q" in system.content


def test_system_prompt_is_shared_across_queries(tools: dict) -> None:
    a = build_planner_messages("one", list(tools.values()), rounds=history())
    b = build_planner_messages("two", list(tools.values()))
    assert a[0] == b[0]


def _example(system: str) -> str:
    return system.split("Example of the format", 1)[1].split("\n", 1)[1]


def test_example_in_text_prompt_parses(tools: dict) -> None:
    system = build_planner_messages("q", list(tools.values()))[0].content
    plan, issues = parse_plan(_example(system))
    assert issues == [] and len(plan.tasks) == 3 and plan.joined


@pytest.mark.parametrize("json_mode", [False, True])
def test_the_examples_use_only_the_registered_tools(fake_tool: type, json_mode: bool) -> None:
    """A small model copies the example: its calls must be ones the user's tools can take (the
    built-in example's search() and compare() were copied by SmolLM2 with only population())."""
    population = fake_tool("population", (("country", "string"),))
    math = fake_tool("math", (("expression", "string"), ("context", "array")), required=("expression",))
    for tools in ([population], [population, math], [math, population]):
        system = build_planner_messages("q", tools, json_mode=json_mode)[0].content
        example = _example(system)
        plan, issues = parse_json_plan(example) if json_mode else parse_plan(example)
        assert issues == [] and len(plan.tasks) == (2 if json_mode else 3)
        assert {t.tool for t in plan.tasks} <= {t.name for t in tools}
        assert validate_plan(plan, {t.name: t for t in tools}, ordered=not json_mode) == []
        if not json_mode:
            assert plan.tasks[2].deps == {1, 2}              # it shows how results are used
        assert "search" not in system and "compare(" not in system and "\"compare\"" not in system
    empty = build_planner_messages("q", [], json_mode=json_mode)[0].content
    assert "search" not in empty and "compare(" not in empty


def test_json_mode_prompt(tools: dict) -> None:
    system = build_planner_messages("q", list(tools.values()), json_mode=True)[0].content
    assert '"tasks"' in system and "join()" not in system and '"$1"' in system


def test_replan_prompt_shows_history(tools: dict) -> None:
    user = build_planner_messages("What is X?", list(tools.values()), rounds=history())[1].content
    assert user.startswith("Question: What is X?")
    assert '1. search("x")' in user or "1. search('x')" in user
    assert "Thought: look" in user and "more characters" in user
    assert "2. math('A + 1')" in user and "ERROR: division by zero" in user
    assert "line 2: the plan does not end with join()" in user and "The plan as written:" in user
    assert "need more data" in user and "not enough" in user
    assert "Number its tasks from 1 again" in user


def test_joiner_prompt(tools: dict) -> None:
    system, user = build_joiner_messages("What is X?", history())
    assert "Finish(" in system.content and "Replan(" in system.content
    assert user.content.startswith("Question: What is X?") and "division by zero" in user.content
    system_json, _ = build_joiner_messages("What is X?", history(), json_mode=True)
    assert '"action"' in system_json.content


def test_show_task_round_trips_through_the_parser() -> None:
    task = Task(3, "math", ("a\"b", Ref(1, ("x", 0)), Interp(("v=", Ref(2), '"'))),
                (("k", [1, (2,), {"z": None}]),))
    plan, issues = parse_plan("1. a()\n2. b()\n3. " + show_task(task))
    assert issues == [] and plan.tasks[2].args == task.args and plan.tasks[2].kwargs == task.kwargs


def big_rounds(n: int, tasks: int = 6, size: int = 3000) -> list[Round]:
    out = []
    for r in range(n):
        ts = tuple(Task(i, "search", (f"query {r}.{i}",), line=i) for i in range(1, tasks + 1))
        obs = tuple(Observation(i, "search", ObservationStatus.OK, value=f"round {r} task {i} " + "x" * size)
                    for i in range(1, tasks + 1))
        issues = tuple(PlanIssue(IssueKind.UNKNOWN_TOOL, f"task {i} uses unknown tool 'nope' " + "y" * 300, i)
                       for i in range(1, 30))
        out.append(Round("\n".join(f'{i}. nope("{"z" * 400}")' for i in range(1, 30)), ts, obs, issues,
                         replan_reason="the plan was invalid: " + "w" * 5000))
    return out


@pytest.mark.parametrize("budget", [1500, 3000, 8000])
def test_prompts_fit_the_context_budget_and_say_what_was_cut(tools: dict, budget: int) -> None:
    for n in (1, 2, 5):
        rounds = big_rounds(n)
        for messages in (build_planner_messages("What is X?", list(tools.values()), rounds=rounds,
                                                max_prompt_tokens=budget),
                         build_joiner_messages("What is X?", rounds, max_prompt_tokens=budget)):
            assert sum(count_tokens(m.content) for m in messages) <= budget
            user = messages[1].content
            assert user.startswith("Question: What is X?")
            assert "more characters" in user or "omitted" in user or "cut to fit" in user
    # the latest round is kept longest: its first observation is still there when older ones went
    user = build_planner_messages("q", list(tools.values()), rounds=big_rounds(5), max_prompt_tokens=3000)[1].content
    assert "round 4 task 1" in user and "round 0 task 1" not in user and "omitted to fit" in user


def test_prompts_without_a_budget_are_unchanged(tools: dict) -> None:
    rounds = big_rounds(2, size=100)
    assert build_planner_messages("q", list(tools.values()), rounds=rounds) == build_planner_messages(
        "q", list(tools.values()), rounds=rounds, max_prompt_tokens=10**9)
