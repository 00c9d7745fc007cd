"""The parallelqa demo: correct answer, parallel lookups, the pace and the model seam."""

from __future__ import annotations

from fleetcall import ScriptedLLM
from fleetcall.demos import parallelqa
from fleetcall.demos.runner import run_demo
from fleetcall.vclock import run_virtual


def test_answers_the_densest_country_and_beats_react() -> None:
    outcome = run_virtual(run_demo(parallelqa))
    densities = {name: people / area for name, (people, area) in parallelqa.COUNTRIES.items()}
    best = max(densities, key=densities.__getitem__)
    assert best == "Germany"
    assert outcome.result.answer == f"Germany, with about {densities[best]:.0f} people per km2"
    assert outcome.react.answer == outcome.result.answer
    assert outcome.speedup > 1.5   # four searches at once instead of one per turn


def test_searches_run_in_parallel() -> None:
    result = run_virtual(parallelqa.build().run(parallelqa.QUESTION))
    searches = [t for t in result.tasks if t.tool == "search"]
    assert len(searches) == 4 and all(t.status == "ok" for t in searches)
    assert max(t.start for t in searches) < min(t.end for t in searches)   # all four overlap


def test_pace_scales_every_latency() -> None:
    async def both() -> tuple[float, float]:
        full = await parallelqa.build().run(parallelqa.QUESTION)
        half = await parallelqa.build(pace=0.5).run(parallelqa.QUESTION)
        return full.latency, half.latency

    full, half = run_virtual(both())
    assert abs(half - full / 2) < 1e-6


def test_llm_factory_gets_the_scripted_responder() -> None:
    made: list[ScriptedLLM] = []

    def factory(responder):  # the seam an endpoint pool plugs into
        made.append(ScriptedLLM(responder))
        return made[-1]

    result = run_virtual(parallelqa.build(factory).run(parallelqa.QUESTION))
    assert result.answer == parallelqa.expected_answer()
    assert len(made) == 1
    assert [r.context.kind for r in made[0].requests] == ["planner", "joiner"]
