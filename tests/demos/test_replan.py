"""The replan demo: a failing lookup, one replan that sees the observations, a correct answer."""

from __future__ import annotations

import pytest

from fleetcall import ScriptedLLM
from fleetcall.demos import replan
from fleetcall.demos.runner import run_demo
from fleetcall.vclock import run_virtual


def _expected() -> tuple[tuple[str, str], tuple[str, str]]:
    by_name = {e.name: e for e in replan.DIRECTORY}
    dana = next(e for e in replan.DIRECTORY if "Dana" in e.aliases)
    lena = by_name["Lena Fischer"]
    return ((dana.manager, by_name[dana.manager].office), (lena.manager, by_name[lena.manager].office))


def test_one_replan_then_a_correct_answer() -> None:
    made: list[ScriptedLLM] = []

    def factory(responder):
        made.append(ScriptedLLM(responder))
        return made[-1]

    result = run_virtual(replan.build(factory).run(replan.QUESTION))
    (boss_a, office_a), (boss_b, office_b) = _expected()
    assert result.status.value == "answered" and len(result.replans) == 1
    assert result.answer.startswith("No:" if office_a != office_b else "Yes:")
    assert f"{boss_a}, who works from {office_a}" in result.answer
    assert f"{boss_b}, who works from {office_b}" in result.answer
    tasks = {(t.round, t.id): t for t in result.tasks}
    assert tasks[(0, 1)].status == "error" and "no employee named 'Dana Whitfield'" in tasks[(0, 1)].error
    assert tasks[(0, 3)].status == "skipped"
    assert tasks[(1, 1)].tool == "people_search" and tasks[(1, 1)].status == "ok"
    # The second plan saw the first one's observations, and does not redo what worked.
    second = [r for r in made[0].requests if r.context.kind == "planner" and r.context.stage == 1]
    assert len(second) == 1
    prompt = second[0].messages[-1].content
    assert "no employee named 'Dana Whitfield'" in prompt and '"name": "Sofia Marino"' in prompt   # observations as JSON
    assert all("Lena" not in str(t.arguments) for t in result.tasks if t.round == 1)


def test_react_takes_the_same_route() -> None:
    outcome = run_virtual(run_demo(replan))
    assert outcome.react.answer == outcome.result.answer
    assert [t.tool for t in outcome.react.tasks] == ["directory_lookup", "people_search"] + ["directory_lookup"] * 4


def test_directory_tools() -> None:
    with pytest.raises(LookupError, match="no employee named 'Dana Whitfield'"):
        replan.lookup("Dana Whitfield")
    assert replan.lookup("  danielle   WHITFIELD ")["manager"] == "Omar Haddad"
    found = replan.search("Dana Whitfield")
    assert found["best_match"] == "Danielle Whitfield"
    assert replan.search("Zebulon Quartz") == {"matches": [], "best_match": None}


def test_the_scripted_planner_needs_the_observations() -> None:
    with pytest.raises(ValueError, match="observations"):
        replan.second_plan("Question: ...\nPlan:\n1. directory_lookup('Dana Whitfield')\n   Observation: (not run)")
