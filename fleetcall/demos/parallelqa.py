"""The ``parallelqa`` demo: parallel lookups, arithmetic on each result, one comparison.

The model is scripted (its replies are written out below, streamed at a realistic pace) and the
search tool answers from a small table after a fixed latency, so the demo needs no network; the
planner, task fetching unit, executor, math tool and joiner are the real ones.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fleetcall import LLMRequest, Orchestrator, ScriptedLLM, tool

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


@dataclass(frozen=True)
class Question:
    text: str
    entities: tuple[str, ...]


QUESTION = Question(
    "Which of France, Germany, Italy and Spain is the most densely populated, and how many people per km2?",
    ("France", "Germany", "Italy", "Spain"),
)


@tool
async def search(query: str) -> dict[str, object]:
    """Search an encyclopedia for a country: returns its name, population and area_km2."""
    await asyncio.sleep(SEARCH_LATENCY_S)
    for name, (people, area) in COUNTRIES.items():
        if name.lower() in query.lower():
            return {"name": name, "population": people, "area_km2": area}
    raise LookupError(f"no country found in {query!r}")


def _density(name: str) -> float:
    people, area = COUNTRIES[name]
    return people / area


def _answer(q: Question) -> str:
    best = max(q.entities, key=_density)
    return f"{best}, with about {_density(best):.0f} people per km2"


def plan_text(q: Question) -> str:
    n = len(q.entities)
    lines = ["Thought: look up every country at once, then compute each density."]
    lines += [f'{i + 1}. search("{e} population and area")' for i, e in enumerate(q.entities)]
    lines += [f'{n + i + 1}. math("c0 / c1", context=[${i + 1}.population, ${i + 1}.area_km2])' for i in range(n)]
    refs = ", ".join(f"${n + i + 1}" for i in range(n))
    lines.append(f'{2 * n + 1}. math("max(c0, c1, c2, c3)", context=[{refs}])')
    lines += [f"{2 * n + 2}. join()", "<END_OF_PLAN>"]
    return "\n".join(lines)


def _observations(request: LLMRequest) -> int:
    return sum(1 for m in request.messages[2:] if m.role == "user")


def react_step(q: Question, step: int) -> str:
    n = len(q.entities)
    if step < n:
        return f'Thought: I need {q.entities[step]}\'s figures.\nAction: search("{q.entities[step]} population and area")'
    return f"Thought: I can compute every density now.\nAction: Finish({_answer(q)})"


def parallel_step(q: Question, turn: int) -> str:
    if turn == 0:
        return "\n".join(f'{i + 1}. search("{e} population and area")' for i, e in enumerate(q.entities))
    return f"Finish({_answer(q)})"


def responder(q: Question):
    """The scripted model: what it answers for each kind of call of this demo."""

    def reply(request: LLMRequest) -> str:
        kind = request.context.kind
        if kind == "planner":
            return plan_text(q)
        if kind == "joiner":
            return f"Thought: the densities are computed.\nAction: Finish({_answer(q)})"
        if kind == "react":
            return react_step(q, _observations(request))
        return parallel_step(q, _observations(request))

    return reply


def build(q: Question = QUESTION, *, ttft_s: float = TTFT_S, tpot_s: float = TPOT_S) -> Orchestrator:
    llm = ScriptedLLM(responder(q), ttft_s=ttft_s, tpot_s=tpot_s)
    return Orchestrator(tools=[search], llm=llm)
