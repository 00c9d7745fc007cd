"""Prompts of the planner and the joiner. Pure functions of their inputs.

The system prompt depends only on the tools, the examples, the format and ``max_tasks`` (not on
the query), so every query over the same tool set shares it: a cache-aware scheduler can reuse
its KV cache. The query and earlier rounds go into the user message.

Replans: every plan numbers its tasks from 1 and ``$N`` refers only to tasks of the same plan.
Earlier rounds are shown as context (each task, its observation, the plan's problems and the
joiner's reason); the new plan copies the values it needs from them and does not redo work.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetcall.llm.base import Message
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

Example of the format:
Thought: The two lookups are independent.
1. search("population of France")
2. search("population of Germany")
3. compare($1, $2)
4. join()
<END_OF_PLAN>"""

_JSON_RULES = """\
Rules:
- Answer with one JSON object: {{"tasks": [{{"id": 1, "thought": "...", "tool": "<action name>", "args": {{"<parameter>": <value>}}}}, ...]}}.
- Every task has a unique integer id. "thought" says briefly why the task is needed (may be empty).
- "args" gives the action's arguments by parameter name, as JSON values.
- To use the result of another task, write the string "$N", where N is that task's id: {{"numbers": "$1"}}. Reach into a structured result with a path: "$1.price", "$1[0]". Inside longer text, "${{N}}" inserts a result as text: "compare ${{1}} and ${{2}}".
- Tasks must not depend on each other in a cycle. Tasks that do not depend on each other run in parallel: maximize parallelism.
- Use only the actions listed above; never invent new ones. If they cannot answer the question, answer {{"tasks": []}}.
{limit}- The results are combined automatically after the last task; do not add a join task.

Example of the format:
{{"tasks": [{{"id": 1, "thought": "", "tool": "search", "args": {{"query": "population of France"}}}},
           {{"id": 2, "thought": "", "tool": "search", "args": {{"query": "population of Germany"}}}},
           {{"id": 3, "thought": "compare both", "tool": "compare", "args": {{"a": "$1", "b": "$2"}}}}]}}"""

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
) -> tuple[Message, ...]:
    """System prompt (tools, join, syntax, examples) and a user message (query, earlier rounds).

    >>> # build_planner_messages("What is 2+3?", [math_tool], examples=[EXAMPLE], rounds=history)
    """
    system = _planner_system(tools, examples, json_mode, max_tasks)
    user = f"Question: {query}"
    if rounds:
        user += "\n\n" + _history(rounds)
        user += ("\n\nWrite a new plan for the question. Number its tasks from 1 again: $N refers only to tasks "
                 "of the new plan, never to the results above. Copy the values you need from the results "
                 "above into the arguments, and do not repeat work whose result you already have.")
    return Message("system", system), Message("user", user)


def _planner_system(tools: Sequence[Tool], examples: Sequence[str], json_mode: bool, max_tasks: int | None) -> str:
    intro = ("Given a user question, create a plan to answer it with the utmost parallelism. Each task "
             f"of the plan is one of the following {len(tools)} action types:\n")
    listing = [_describe(i, t) for i, t in enumerate(tools, start=1)]
    limit = f"- Use at most {max_tasks} tasks.\n" if max_tasks is not None else ""
    if json_mode:
        rules = _JSON_RULES.format(limit=limit)
    else:
        listing.append(f"{len(tools) + 1}. join()\n   Collects the results of the actions before it and hands "
                       "them to an agent that either answers the question or asks for a new plan. Always the "
                       "last action of a plan.")
        rules = _TEXT_RULES.format(limit=limit)
    parts = [intro + "\n".join(listing), rules]
    if examples:
        parts.append("Here are some examples:\n\n" + "\n###\n".join(e.strip() for e in examples))
    return "\n\n".join(parts)


def _describe(number: int, tool: Tool) -> str:
    description = "\n".join(f"   {line}" for line in tool.description.strip().splitlines())
    return f"{number}. {tool.signature()}" + (f"\n{description}" if description else "")


def build_joiner_messages(query: str, rounds: Sequence[Round], *, json_mode: bool = False) -> tuple[Message, ...]:
    """The joiner's prompt: its instructions, then the question and every round's results.

    >>> # build_joiner_messages("What is 2+3?", [*history, current_round])
    """
    system = _JOINER_JSON if json_mode else _JOINER_TEXT
    user = f"Question: {query}\n\n{_history(rounds)}\n\nDecide now: answer the question, or ask for a new plan."
    return Message("system", system), Message("user", user)


def _history(rounds: Sequence[Round]) -> str:
    """Every round: its tasks with observations, its problems, the reason it was replanned."""
    blocks: list[str] = []
    for number, rnd in enumerate(rounds, start=1):
        lines = [f"Plan {number}:" if len(rounds) > 1 else "Plan:"]
        lines += _round_tasks(rnd)
        if rnd.issues:
            lines.append("The plan as written:")
            lines.append(_cut(rnd.plan_text.rstrip(), MAX_PLAN_TEXT_CHARS))
            lines.append("Problems with this plan:")
            lines += [f"- {issue}" for issue in rnd.issues]
        if rnd.thoughts:
            lines.append("Thoughts: " + " ".join(t.strip() for t in rnd.thoughts))
        if rnd.replan_reason:
            lines.append(f"Why a new plan was needed: {rnd.replan_reason}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _round_tasks(rnd: Round) -> list[str]:
    observed = {o.task_id: o for o in rnd.observations}
    lines: list[str] = []
    for task in rnd.tasks:
        obs = observed.get(task.id)
        lines.append(f"{task.id}. {obs.call if obs is not None and obs.call else show_task(task)}")
        if task.thought:
            lines.append(f"   Thought: {task.thought}")
        lines.append(f"   Observation: {_observation(obs)}")
    if not rnd.tasks:
        lines.append("(no tasks)")
    return lines


def _observation(obs: Observation | None) -> str:
    if obs is None:
        return "(not run)"
    return _cut(obs.render(), MAX_OBSERVATION_CHARS).replace("\n", "\n   ")


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
