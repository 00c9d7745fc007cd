"""The ``replan`` demo: the first plan hits a failing tool, the joiner asks for a new plan, and the
second plan, which sees the first one's observations, takes another route and succeeds.

The company directory only knows exact full names, and the question uses a nickname: the lookup
of "Dana Whitfield" raises, the task that needed its result is skipped, and the joiner answers
``Replan(...)``. The new plan starts with a fuzzy people search, follows the exact name it finds,
then the manager link. The model is scripted; its replies read their prompts, so the answer is
what the tools really returned.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass
from typing import Any

from fleetcall import LLMRequest, Orchestrator, Tool, tool
from fleetcall.demos.common import (
    LLMFactory, check_pace, errors_in, last_plan, literals, observation_turns, pause, scripted_model, user_text,
)

NAME = "replan"
DESCRIPTION = "the first plan hits a failing lookup; the joiner replans and another tool recovers"
QUESTION = ("Do Dana Whitfield's manager and Lena Fischer's manager work from the same office? "
            "Which offices are they in?")
ASKED: tuple[str, str] = ("Dana Whitfield", "Lena Fischer")   # the names as the question gives them

LOOKUP_LATENCY_S = 0.3    # an HR directory API call
SEARCH_LATENCY_S = 0.5    # a fuzzy people search
TTFT_S = 0.2              # model time to first token
TPOT_S = 0.01             # model time per output token


@dataclass(frozen=True, slots=True)
class Employee:
    name: str                 # exact full name, the directory's key
    title: str
    team: str
    manager: str | None       # the manager's exact full name (None at the top)
    office: str
    aliases: tuple[str, ...] = ()   # names people use, searchable but not a directory key


DIRECTORY: tuple[Employee, ...] = (
    Employee("Ruth Okafor", "VP Engineering", "Engineering", None, "Amsterdam"),
    Employee("Omar Haddad", "Engineering Manager", "Data Platform", "Ruth Okafor", "Lisbon"),
    Employee("Sofia Marino", "Engineering Manager", "Mobile", "Ruth Okafor", "Milan"),
    Employee("Danielle Whitfield", "Senior Data Engineer", "Data Platform", "Omar Haddad", "Dublin", ("Dana",)),
    Employee("Dan Whitaker", "Support Engineer", "Customer Success", "Priya Raman", "Dublin"),
    Employee("Priya Raman", "Support Lead", "Customer Success", "Ruth Okafor", "Amsterdam"),
    Employee("Tomasz Zielinski", "Data Engineer", "Data Platform", "Omar Haddad", "Lisbon"),
    Employee("Aiko Tanaka", "iOS Engineer", "Mobile", "Sofia Marino", "Milan"),
    Employee("Lena Fischer", "Android Engineer", "Mobile", "Sofia Marino", "Amsterdam", ("Lenny",)),
    Employee("Marcus Bell", "Site Reliability Engineer", "Data Platform", "Omar Haddad", "Dublin"),
    Employee("Nadia Karimi", "Support Engineer", "Customer Success", "Priya Raman", "Lisbon"),
    Employee("Pieter de Vries", "Data Analyst", "Data Platform", "Omar Haddad", "Amsterdam", ("Piet",)),
)
_BY_NAME = {e.name.lower(): e for e in DIRECTORY}


def _record(e: Employee) -> dict[str, Any]:
    return {k: v for k, v in asdict(e).items() if k != "aliases"}


def lookup(name: str) -> dict[str, Any]:
    """The directory entry under an exact full name (any case); ``LookupError`` otherwise."""
    found = _BY_NAME.get(" ".join(name.split()).lower())
    if found is None:
        raise LookupError(f"no employee named {name!r} in the directory (exact full names only)")
    return _record(found)


def search(query: str, limit: int = 3) -> dict[str, Any]:
    """Employees whose names or aliases resemble ``query``, best first (word by word, fuzzy)."""
    words = [w.lower() for w in re.findall(r"[\w'-]+", query)]

    def score(e: Employee) -> float:
        names = [w.lower() for w in re.findall(r"[\w'-]+", " ".join((e.name, *e.aliases)))]
        return sum(max(difflib.SequenceMatcher(None, w, n).ratio() for n in names) for w in words)

    ranked = sorted(DIRECTORY, key=score, reverse=True)
    matches = [{"name": e.name, "title": e.title, "team": e.team, "aka": list(e.aliases)}
               for e in ranked[:limit] if score(e) >= 0.8 * len(words)]
    return {"matches": matches, "best_match": matches[0]["name"] if matches else None}


def make_tools(pace: float = 1.0) -> list[Tool]:
    """The directory's two tools: an exact lookup and a fuzzy search."""

    @tool
    async def directory_lookup(name: str) -> dict[str, Any]:
        """The company directory entry of an employee (title, team, manager, office), by exact full name."""
        await pause(LOOKUP_LATENCY_S, pace)
        return lookup(name)

    @tool
    async def people_search(query: str) -> dict[str, Any]:
        """Fuzzy search of employees by any part of their name or nickname; returns matches and the best_match's exact name."""  # noqa: E501 - the tool's one-line description
        await pause(SEARCH_LATENCY_S, pace)
        return search(query)

    return [directory_lookup, people_search]


# -- the scripted model ----------------------------------------------------------------------------
def first_plan() -> str:
    a, b = ASKED
    return "\n".join([
        "Thought: Look both employees up at once, then each one's manager.",
        f"1. directory_lookup({a!r})",
        f"2. directory_lookup({b!r})",
        "3. directory_lookup($1.manager)",
        "4. directory_lookup($2.manager)",
        "5. join()",
        "<END_OF_PLAN>",
    ])


def second_plan(prompt: str) -> str:
    """After the failed lookup (which the prompt must show, with the chain that worked): search
    for the exact name, then follow it; what the first plan found is not looked up again."""
    failed = any("no employee named" in e for e in errors_in(prompt))
    if not failed or not any(d.get("name") == "Sofia Marino" for d in literals(prompt, "name")):
        raise ValueError("the scripted planner expected the first plan's observations in its prompt")
    return "\n".join([
        f"Thought: {ASKED[1]}'s chain is done; find {ASKED[0]}'s exact directory name, then her manager.",
        f"1. people_search({ASKED[0]!r})",
        "2. directory_lookup($1.best_match)",
        "3. directory_lookup($2.manager)",
        "4. join()",
        "<END_OF_PLAN>",
    ])


def _resolved(prompt: str) -> dict[str, str]:
    """Asked name -> exact directory name: itself, or a search's best match with the same surname."""
    names = {asked: asked for asked in ASKED}
    for found in literals(prompt, "matches"):
        best = found.get("best_match") or ""
        for asked in ASKED:
            if best.split()[-1:] == asked.split()[-1:]:
                names[asked] = best
    return names


def answer_from(prompt: str) -> str | None:
    """The answer from the directory entries in ``prompt``, or None while one is missing."""
    entries = {d["name"]: d for d in literals(prompt, "name") if "office" in d}
    parts, offices = [], []
    for asked, exact in _resolved(prompt).items():
        person = entries.get(exact)
        boss = entries.get(person["manager"]) if person else None
        if boss is None:
            return None
        listed = f" (listed as {exact})" if exact != asked else ""
        parts.append(f"{asked}{listed} reports to {boss['name']}, who works from {boss['office']}")
        offices.append(boss["office"])
    verdict = "Yes" if len(set(offices)) == 1 else "No"
    return f"{verdict}: " + "; ".join(parts)


def join_reply(prompt: str) -> str:
    answer = answer_from(prompt)
    if answer is not None:
        return f"Thought: Both managers' entries are known.\nAction: Finish({answer})"
    errors = errors_in(last_plan(prompt))
    why = errors[0] if errors else "a manager's entry is missing"
    return ("Thought: A lookup failed, so one manager is unknown.\n"
            f"Action: Replan({why}. It may be a nickname: search people by name to find the exact directory "
            "name, then look up the manager.)")


def react_step(step: int, request: LLMRequest) -> str:
    """One ReAct step: the same route (a failed lookup, a search, four lookups), one call at a time."""
    text = user_text(request)
    a, b = ASKED
    entries = [d for d in literals(text, "name") if "office" in d]
    if step == 0:
        return f"Thought: Look up {a}.\nAction: directory_lookup({a!r})"
    if step == 1:
        return f"Thought: No exact entry; search by name.\nAction: people_search({a!r})"
    if step == 2:
        best = literals(text, "matches")[-1]["best_match"]
        return f"Thought: The exact name is {best}.\nAction: directory_lookup({best!r})"
    if step in (3, 5):
        return f"Thought: Now the manager.\nAction: directory_lookup({entries[-1]['manager']!r})"
    if step == 4:
        return f"Thought: Now {b}.\nAction: directory_lookup({b!r})"
    return f"Thought: I have all four entries.\nAction: Finish({answer_from(text)})"


def respond(request: LLMRequest) -> str:
    """The scripted model: what it answers for each kind of call of this demo."""
    kind = request.context.kind
    prompt = user_text(request)
    if kind == "planner":
        return first_plan() if request.context.stage == 0 else second_plan(prompt)
    if kind == "joiner":
        return join_reply(prompt)
    if kind == "react":
        return react_step(observation_turns(request), request)
    raise ValueError(f"the scripted model of the {NAME} demo has no reply for a {kind!r} call")


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
    return Orchestrator(tools=make_tools(pace), llm=llm)
