"""Planner and joiner prompts."""

from __future__ import annotations

from fleetcall.planner import (
    Interp, IssueKind, Observation, ObservationStatus, PlanIssue, Ref, Round, Task, build_joiner_messages,
    build_planner_messages, parse_plan, show_task,
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


def test_example_in_text_prompt_parses(tools: dict) -> None:
    system = build_planner_messages("q", list(tools.values()))[0].content
    example = system.split("Example of the format:\n", 1)[1]
    plan, issues = parse_plan(example)
    assert issues == [] and len(plan.tasks) == 3 and plan.joined


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
