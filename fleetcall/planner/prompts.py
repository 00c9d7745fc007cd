"""Prompts of the planner and the joiner. Pure functions of their inputs.

The system prompt depends only on the tools, the examples, the format and ``max_tasks`` (not on
the query), so every query over the same tool set shares it: a cache-aware scheduler can reuse
its KV cache. The query and earlier rounds go into the user message.

Replans: every plan numbers its tasks from 1 and ``$N`` refers only to tasks of the same plan.
Earlier rounds are shown as context (each task, its observation, the plan's problems and the
joiner's reason); the new plan copies the values it needs from them and does not redo work.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleetcall.llm.base import Message, count_tokens
from fleetcall.plan import Interp, Observation, Ref, Round, Task, Value
from fleetcall.tools.base import Tool

MAX_OBSERVATION_CHARS = 2000   # longer observations are cut in prompts (the executor keeps them whole)
MAX_PLAN_TEXT_CHARS = 4000     # an invalid plan's text is shown up to this length

_TEXT_RULES = """\
Rules:
- Write one action per line, numbered from 1: `1. tool(arguments)`. Every number is used once, in increasing order.
- Arguments use Python syntax: positional and/or keyword (`name=value`) arguments, written as literals: "quoted strings", numbers, True/False/None, [lists], {{dicts}}.
- To use the result of an earlier action, write $N, where N is that action's number: `tool($1)`. Reach into a structured result with a path: `$1.price`, `$1[0]`, `$1["key"]`. Inside a string, ${{N}} inserts a result as text: "compare ${{1}} and ${{2}}".
- An action may use only the results of actions with smaller numbers. Actions that do not depend on each other run in parallel: maximize parallelism.
- Optionally write a line `Thought: ...` before an action to say why it is needed.
- Use only the actions listed above; never invent new ones. If they cannot answer the question, just call join().
{limit}- End the plan with a numbered `join()` action and then `<END_OF_PLAN>`. Write nothing after <END_OF_PLAN>.

Example of the format (with the actions above; "..." stands for real arguments):
{example}"""

_JSON_RULES = """\
Rules:
- Answer with one JSON object: {{"tasks": [{{"id": 1, "thought": "...", "tool": "<action name>", "args": {{"<parameter>": <value>}}}}, ...]}}.
- Every task has a unique integer id. "thought" says briefly why the task is needed (may be empty).
- "args" gives the action's arguments by parameter name, as JSON values.
- To use the result of another task, write the string "$N", where N is that task's id: {{"numbers": "$1"}}. Reach into a structured result with a path: "$1.price", "$1[0]". Inside longer text, "${{N}}" inserts a result as text: "compare ${{1}} and ${{2}}".
- Tasks must not depend on each other in a cycle. Tasks that do not depend on each other run in parallel: maximize parallelism.
- Use only the actions listed above; never invent new ones. If they cannot answer the question, answer {{"tasks": []}}.
{limit}- The results are combined automatically after the last task; do not add a join task.

Example of the format (with the actions above; "..." stands for real arguments):
{example}"""

_JOINER_TEXT = """\
Solve a question-answering task. You are given the results of plans that were executed to answer the user's question.
- Thought: reason about the question based on the observations in 1-2 sentences. Ignore irrelevant results.
- If the required information is present, give a concise but complete and helpful answer to the user's question.
- If you cannot give a satisfactory answer, ask for a new plan to get the missing information.

Respond in this format:
Thought: <your reasoning about the results and whether they are enough to answer>
Action: <one of the actions below>

Available actions:
(1) Finish(the final answer to return to the user): returns the answer and finishes the task.
(2) Replan(what is missing and anything else that helps to plan again; any length): asks for a new plan."""

_JOINER_JSON = """\
Solve a question-answering task. You are given the results of plans that were executed to answer the user's question.
- Reason about the question based on the observations in 1-2 sentences. Ignore irrelevant results.
- If the required information is present, give a concise but complete and helpful answer to the user's question.
- If you cannot give a satisfactory answer, ask for a new plan to get the missing information.

Respond with one JSON object:
{"thought": "<your reasoning>", "action": "finish" or "replan", "answer": "<the final answer, or empty when replanning>", "reason": "<what is missing, or empty when finishing>"}"""


def build_planner_messages(
    query: str,
    tools: Sequence[Tool],
    *,
    examples: Sequence[str] = (),
    rounds: Sequence[Round] = (),
    json_mode: bool = False,
    max_tasks: int | None = None,
    max_prompt_tokens: int | None = None,
) -> tuple[Message, ...]:
    """System prompt (tools, join, syntax, examples) and a user message (query, earlier rounds).

    ``max_prompt_tokens`` bounds the whole prompt (as :func:`~fleetcall.llm.base.count_tokens`
    counts): earlier rounds are shown in less detail, older ones first, until it fits (see
    :func:`fit_history`); the system prompt and the question are never cut.

    >>> # build_planner_messages("What is 2+3?", [math_tool], examples=[EXAMPLE], rounds=history)
    """
    system = _planner_system(tools, examples, json_mode, max_tasks)
    user = f"Question: {query}"
    if rounds:
        tail = ("Write a new plan for the question. Number its tasks from 1 again: $N refers only to tasks "
                "of the new plan, never to the results above. Copy the values you need from the results "
                "above into the arguments, and do not repeat work whose result you already have.")
        room = None if max_prompt_tokens is None else max_prompt_tokens - count_tokens(system + user + tail) - 4
        user += "\n\n" + fit_history(rounds, room) + "\n\n" + tail
    return Message("system", system), Message("user", user)


def _planner_system(tools: Sequence[Tool], examples: Sequence[str], json_mode: bool, max_tasks: int | None) -> str:
    intro = ("Given a user question, create a plan to answer it with the utmost parallelism. Each task "
             f"of the plan is one of the following {len(tools)} action types:\n")
    listing = [_describe(i, t) for i, t in enumerate(tools, start=1)]
    limit = f"- Use at most {max_tasks} tasks.\n" if max_tasks is not None else ""
    if json_mode:
        rules = _JSON_RULES.format(limit=limit, example=format_example(tools, json_mode=True))
    else:
        listing.append(f"{len(tools) + 1}. join()\n   Collects the results of the actions before it and hands "
                       "them to an agent that either answers the question or asks for a new plan. Always the "
                       "last action of a plan.")
        rules = _TEXT_RULES.format(limit=limit, example=format_example(tools, json_mode=False))
    parts = [intro + "\n".join(listing), rules]
    if examples:
        parts.append("Here are some examples:\n\n" + "\n###\n".join(e.strip() for e in examples))
    return "\n\n".join(parts)


def format_example(tools: Sequence[Tool], *, json_mode: bool) -> str:
    """A plan in the prompt's format made of ``tools`` only, so a model that copies the example
    (small models do) copies calls it can make. Arguments are placeholders by type (``"..."``, 1).

    Text: two independent calls of the first tool, then a call of another that uses both results
    (``$1``, ``$2``), then ``join()``. JSON: the two independent calls only: JSON mode is what small
    models plan in, and SmolLM2-135M copied a reference-using example task into every task (each
    then referring to itself); the rules above show the references."""
    if not tools:
        return '{"tasks": []}' if json_mode else "1. join()\n<END_OF_PLAN>"
    first = tools[0]
    if json_mode:
        args = _example_args(first, {})
        tasks = [json.dumps({"id": i, "thought": "", "tool": first.name, "args": args}) for i in (1, 2)]
        return '{"tasks": [' + ",\n           ".join(tasks) + "]}"
    second = next((t for t in tools[1:] if _ref_param(t) is not None), tools[1] if len(tools) > 1 else first)
    calls = [(first, {}, "These two calls do not depend on each other."), (first, {}, ""),
             (second, _ref_args(second), "This call uses both results.")]
    lines: list[str] = []
    for i, (tool, refs, thought) in enumerate(calls, start=1):
        if thought:
            lines.append(f"Thought: {thought}")
        lines.append(f"{i}. {tool.name}({_example_call(tool, refs)})")
    return "\n".join([*lines, f"{len(calls) + 1}. join()", "<END_OF_PLAN>"])


_PARAMS_CACHE: OrderedDict[int, tuple[Tool, tuple[dict[str, dict[str, Any]], list[str]]]] = OrderedDict()
_PARAMS_CACHE_SIZE = 256   # tools whose parameters are remembered (a schema costs ~1 ms to build)


def _params(tool: Tool) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(parameter -> its JSON schema, required parameters in order) of ``tool``, never raising.
    Remembered per tool object: every planner prompt asks."""
    cached = _PARAMS_CACHE.get(id(tool))
    if cached is not None and cached[0] is tool:
        _PARAMS_CACHE.move_to_end(id(tool))
        return cached[1]
    found = _read_params(tool)
    _PARAMS_CACHE[id(tool)] = (tool, found)
    while len(_PARAMS_CACHE) > _PARAMS_CACHE_SIZE:
        _PARAMS_CACHE.popitem(last=False)
    return found


def _read_params(tool: Tool) -> tuple[dict[str, dict[str, Any]], list[str]]:
    try:
        schema = tool.json_schema()
    except Exception:  # a tool whose schema cannot be built is still listed, without an example call
        return {}, []
    props = schema.get("properties") if isinstance(schema, dict) else None
    props = {k: v for k, v in props.items() if isinstance(v, dict)} if isinstance(props, dict) else {}
    required = schema.get("required")
    required = required if isinstance(required, list) else []
    return props, [p for p in props if p in required]


def _type_of(prop: dict[str, Any]) -> str:
    for option in [prop, *(prop.get("anyOf") or [])]:
        if isinstance(option, dict) and isinstance(option.get("type"), str) and option["type"] != "null":
            return option["type"]
    return "string"


def _ref_param(tool: Tool) -> str | None:
    """The parameter the example passes both results to: a list one if any, else the first required."""
    props, required = _params(tool)
    arrays = [p for p, prop in props.items() if _type_of(prop) == "array"]
    return arrays[0] if arrays else (required[0] if required else None)


def _ref_args(tool: Tool) -> dict[str, Any]:
    param = _ref_param(tool)
    if param is None:
        return {}
    kind = _type_of(_params(tool)[0][param])
    return {param: ["$1", "$2"] if kind == "array" else "... ${1} ... ${2}" if kind == "string" else "$1"}


def _placeholder(prop: dict[str, Any]) -> Any:
    if isinstance(prop.get("enum"), list) and prop["enum"]:
        return prop["enum"][0]
    return {"string": "...", "integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}.get(
        _type_of(prop), "...")


def _example_args(tool: Tool, refs: dict[str, Any]) -> dict[str, Any]:
    props, required = _params(tool)
    return {p: refs[p] if p in refs else _placeholder(props[p]) for p in props if p in required or p in refs}


def _example_call(tool: Tool, refs: dict[str, Any]) -> str:
    """The arguments in plan syntax: leading required ones by position, the rest by name."""
    props, required = _params(tool)
    values = _example_args(tool, refs)
    parts: list[str] = []
    positional = True
    for name in props:
        if name not in values:
            positional = False
            continue
        value = values[name]
        shown = ("[" + ", ".join(value) + "]" if isinstance(value, list) and value and str(value[0]).startswith("$")
                 else value if isinstance(value, str) and value.startswith("$")
                 else json.dumps(value) if not isinstance(value, bool) else repr(value))
        positional = positional and name in required
        parts.append(shown if positional else f"{name}={shown}")
    return ", ".join(parts)


def _describe(number: int, tool: Tool) -> str:
    description = "\n".join(f"   {line}" for line in tool.description.strip().splitlines())
    return f"{number}. {tool.signature()}" + (f"\n{description}" if description else "")


def build_joiner_messages(query: str, rounds: Sequence[Round], *, json_mode: bool = False,
                          max_prompt_tokens: int | None = None) -> tuple[Message, ...]:
    """The joiner's prompt: its instructions, then the question and every round's results;
    ``max_prompt_tokens`` as in :func:`build_planner_messages` (the latest round is kept longest).

    >>> # build_joiner_messages("What is 2+3?", [*history, current_round])
    """
    system = _JOINER_JSON if json_mode else _JOINER_TEXT
    head, tail = f"Question: {query}", "Decide now: answer the question, or ask for a new plan."
    room = None if max_prompt_tokens is None else max_prompt_tokens - count_tokens(system + head + tail) - 4
    user = f"{head}\n\n{fit_history(rounds, room)}\n\n{tail}"
    return Message("system", system), Message("user", user)


@dataclass(frozen=True, slots=True)
class _Detail:
    """How much of the rounds a prompt shows (the latest round, and the ones before it)."""

    observation: int        # characters of each observation
    plan_text: int          # characters of an invalid plan's text, and of a replan reason
    issues: int             # problems listed per plan
    tasks: int              # tasks listed in the latest plan
    older: str              # earlier plans: "full", "brief" (tasks, short observations) or "omitted"


# From everything down to the latest plan in brief: the first level whose history fits is used.
_DETAILS = (
    _Detail(MAX_OBSERVATION_CHARS, MAX_PLAN_TEXT_CHARS, 1_000_000, 1_000_000, "full"),
    _Detail(500, 1500, 20, 1_000_000, "brief"),
    _Detail(200, 600, 10, 200, "omitted"),
    _Detail(80, 200, 5, 30, "omitted"),
)


def fit_history(rounds: Sequence[Round], max_tokens: int | None = None) -> str:
    """The rounds as shown in prompts, in at most ``max_tokens`` tokens (None: all of them).

    Less detail until it fits: shorter observations, plan texts and reasons, then earlier plans
    in brief, then earlier plans omitted (a line says how many), then fewer of the latest plan's
    tasks. If even that is too long, its start is cut. Every cut is marked in the text.
    """
    text = ""
    for detail in _DETAILS:
        text = _history(rounds, detail)
        if max_tokens is None or count_tokens(text) <= max_tokens:
            return text
    assert max_tokens is not None
    keep = max(max_tokens, 0) * 3
    while keep > 0:
        marker = f"[... {len(text) - keep} characters of earlier results cut to fit the model's context ...]\n"
        cut = marker + text[len(text) - keep:]
        if count_tokens(cut) <= max_tokens:
            return cut
        keep = keep * 4 // 5
    return "[earlier results omitted to fit the model's context]"


def _history(rounds: Sequence[Round], detail: _Detail = _DETAILS[0]) -> str:
    """Every round: its tasks with observations, its problems, the reason it was replanned."""
    blocks: list[str] = []
    last = len(rounds)
    omitted = [n for n in range(1, last) if detail.older == "omitted"]
    if omitted:
        blocks.append(f"[Plan{'s' if len(omitted) > 1 else ''} {omitted[0]}"
                      f"{f'-{omitted[-1]}' if len(omitted) > 1 else ''} omitted to fit the model's context; "
                      "what was still missing after them:]\n"
                      + "\n".join(f"- {_cut(' '.join((r.replan_reason or '').split()), detail.plan_text)}"
                                  for r in rounds[:-1] if r.replan_reason))
    for number, rnd in enumerate(rounds, start=1):
        if number in omitted:
            continue
        brief = number < last and detail.older == "brief"
        limit = _Detail(100, 0, 5, 1_000_000, "brief") if brief else detail
        lines = [f"Plan {number}:" if len(rounds) > 1 else "Plan:"]
        lines += _round_tasks(rnd, limit)
        if rnd.issues:
            if not brief:
                lines.append("The plan as written:")
                lines.append(_cut(rnd.plan_text.rstrip(), detail.plan_text))
            lines.append("Problems with this plan:")
            lines += [f"- {_cut(str(issue), detail.plan_text)}" for issue in rnd.issues[:limit.issues]]
            if len(rnd.issues) > limit.issues:
                lines.append(f"- ... and {len(rnd.issues) - limit.issues} more problems")
        if rnd.thoughts and not brief:
            lines.append("Thoughts: " + _cut(" ".join(t.strip() for t in rnd.thoughts), detail.plan_text))
        if rnd.replan_reason:
            lines.append(f"Why a new plan was needed: {_cut(rnd.replan_reason, max(detail.plan_text, 200))}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _round_tasks(rnd: Round, detail: _Detail) -> list[str]:
    observed = {o.task_id: o for o in rnd.observations}
    lines: list[str] = []
    for task in rnd.tasks[:detail.tasks]:
        obs = observed.get(task.id)
        call = obs.call if obs is not None and obs.call else show_task(task)
        lines.append(f"{task.id}. {_cut(call, max(detail.observation, 200))}")
        if task.thought:
            lines.append(f"   Thought: {_cut(task.thought, detail.observation)}")
        lines.append(f"   Observation: {_observation(obs, detail.observation)}")
    if len(rnd.tasks) > detail.tasks:
        lines.append(f"... and {len(rnd.tasks) - detail.tasks} more tasks, not shown to fit the model's context")
    if not rnd.tasks:
        lines.append("(no tasks)")
    return lines


def _observation(obs: Observation | None, limit: int = MAX_OBSERVATION_CHARS) -> str:
    if obs is None:
        return "(not run)"
    # (any value renders, by fleetcall.observe's rule, without converting more of it than shown)
    return _cut(obs.render(limit), limit).replace("\n", "\n   ")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def show_task(task: Task) -> str:
    """A task as a call in plan syntax: ``search('x', k=$1.n)``."""
    parts = [show_value(v) for v in task.args] + [f"{k}={show_value(v)}" for k, v in task.kwargs]
    return f"{task.tool}({', '.join(parts)})"


def show_value(value: Value) -> str:
    """A value in plan syntax, references included (``$1``, ``"a ${1}"``)."""
    if isinstance(value, Ref):
        return str(value)
    if isinstance(value, Interp):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(show_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{show_value(k)}: {show_value(v)}" for k, v in value.items()) + "}"
    return repr(value)
