"""The ``parallelqa`` demo: parallel lookups, arithmetic on each result, one comparison.

The model is scripted (its replies are written out below, streamed at a realistic pace) and the
search tool answers from a small table after a fixed latency, so the demo needs no network; the
planner, task fetching unit, executor, math tool and joiner are the real ones.
"""

from __future__ import annotations

from fleetcall import LLMRequest, Orchestrator, Tool, tool
from fleetcall.demos.common import LLMFactory, check_pace, observation_turns, pause, scripted_model

NAME = "parallelqa"
DESCRIPTION = "parallel lookups, arithmetic on each, a comparison"
QUESTION = "Which of France, Germany, Italy and Spain is the most densely populated, and how many people per km2?"
ENTITIES: tuple[str, ...] = ("France", "Germany", "Italy", "Spain")   # in the order the question names them

# entity -> (population, area in km2), public figures rounded (2023).
COUNTRIES: dict[str, tuple[int, int]] = {
    "France": (68_170_000, 551_695),
    "Germany": (84_480_000, 357_592),
    "Italy": (58_850_000, 302_068),
    "Spain": (48_350_000, 505_990),
}
SEARCH_LATENCY_S = 0.6   # a web search's typical latency
TTFT_S = 0.25            # model time to first token
TPOT_S = 0.012           # model time per output token


def make_search(pace: float = 1.0) -> Tool:
    """The encyclopedia search tool, answering after ``SEARCH_LATENCY_S * pace``."""

    @tool
    async def search(query: str) -> dict[str, object]:
        """Search an encyclopedia for a country: returns its name, population and area_km2."""
        await pause(SEARCH_LATENCY_S, pace)
        for name, (people, area) in COUNTRIES.items():
            if name.lower() in query.lower():
                return {"name": name, "population": people, "area_km2": area}
        raise LookupError(f"no country found in {query!r}")

    return search


def density(name: str) -> float:
    people, area = COUNTRIES[name]
    return people / area


def expected_answer() -> str:
    best = max(ENTITIES, key=density)
    return f"{best}, with about {density(best):.0f} people per km2"


def plan_text() -> str:
    n = len(ENTITIES)
    lines = ["Thought: look up every country at once, then compute each density."]
    lines += [f'{i + 1}. search("{e} population and area")' for i, e in enumerate(ENTITIES)]
    lines += [f'{n + i + 1}. math("c0 / c1", context=[${i + 1}.population, ${i + 1}.area_km2])' for i in range(n)]
    refs = ", ".join(f"${n + i + 1}" for i in range(n))
    lines.append(f'{2 * n + 1}. math("max(c0, c1, c2, c3)", context=[{refs}])')
    lines += [f"{2 * n + 2}. join()", "<END_OF_PLAN>"]
    return "\n".join(lines)


def react_step(step: int) -> str:
    if step < len(ENTITIES):
        e = ENTITIES[step]
        return f'Thought: I need {e}\'s figures.\nAction: search("{e} population and area")'
    return f"Thought: I can compute every density now.\nAction: Finish({expected_answer()})"


def respond(request: LLMRequest) -> str:
    """The scripted model: what it answers for each kind of call of this demo."""
    kind = request.context.kind
    if kind == "planner":
        return plan_text()
    if kind == "joiner":
        return f"Thought: the densities are computed.\nAction: Finish({expected_answer()})"
    if kind == "react":
        return react_step(observation_turns(request))
    if observation_turns(request) == 0:   # parallel_calls: one batch of searches, then the answer
        return "\n".join(f'{i + 1}. search("{e} population and area")' for i, e in enumerate(ENTITIES))
    return f"Finish({expected_answer()})"


def model(pace: float = 1.0) -> LLMFactory:
    """The demo's default model: the scripted one, at ``TTFT_S`` / ``TPOT_S`` times ``pace``."""
    return scripted_model(TTFT_S, TPOT_S, pace)


def build(llm_factory: LLMFactory | None = None, *, pace: float = 1.0) -> Orchestrator:
    """A fresh orchestrator for this demo; ``llm_factory(respond)`` makes its model.

    >>> orch = build()
    >>> # result = await orch.run(QUESTION)
    """
    pace = check_pace(pace)
    llm = (llm_factory or model(pace))(respond)
    return Orchestrator(tools=[make_search(pace)], llm=llm)
