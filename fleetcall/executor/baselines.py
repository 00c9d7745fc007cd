"""Baselines on the same tools and the same LLM, for comparison with the compiled mode.

* ``react``: one Thought / Action / Observation step at a time (Yao et al.), as LLMCompiler's
  paper compares against;
* ``parallel_calls``: each turn the model returns a flat batch of independent calls, which run
  concurrently (as OpenAI parallel function calling does), repeated until it answers.

Both parse actions with the plan parser (so argument syntax is identical) and record tasks, LLM
calls and usage in the same :class:`RunResult` as the compiled mode.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from fleetcall.errors import LLMError
from fleetcall.executor.result import RunResult, RunStatus
from fleetcall.executor.run import Run
from fleetcall.executor.settings import RunSettings
from fleetcall.llm.base import LLMRequest, Message, complete
from fleetcall.planner import PlanParser, parse_joiner, Finish
from fleetcall.plan import Observation, ObservationStatus, PlanIssue, Task
from fleetcall.planner.prompts import MAX_OBSERVATION_CHARS


_FINISH = re.compile(r"(?:^|\n)\s*(?:Action:\s*)?(Finish\s*\()", re.IGNORECASE)
_ACTION = re.compile(r"^\s*(?:Action:\s*|\d+\.\s*)(?!Finish\b)([^\W\d][\w.-]*\s*\(.*)$", re.IGNORECASE)

REACT_SYSTEM = """Answer the question by reasoning and acting one step at a time.
Tools:
{tools}
Reply with exactly:
Thought: <your reasoning>
Action: <one tool call, e.g. {example}>
You will then see its Observation. When you know the answer, reply:
Thought: <your reasoning>
Action: Finish(<the answer>)"""

PARALLEL_SYSTEM = """Answer the question by calling tools. Each turn, reply with every tool call you can make
now, one per line, numbered (1. tool(args)). Calls of one turn run in parallel and cannot use each
other's results; you will see all their results in the next turn.
Tools:
{tools}
When you know the answer, reply: Finish(<the answer>)"""


def _tool_lines(settings: RunSettings) -> str:
    return "\n".join(f"- {t.signature()}: {t.description}" for t in settings.tools.values())


def _parse_actions(text: str, truncated: bool = False) -> tuple[list[Task], list[PlanIssue], str | None]:
    """Tool calls (numbered from 1) and, if the reply finishes, the answer (not when the reply was
    cut off at max_tokens before its ``Finish(`` closed)."""
    finish = _FINISH.search(text)
    if finish is not None:
        decision = parse_joiner(text[finish.start(1):], truncated=truncated)
        if isinstance(decision, Finish):
            return [], [], decision.answer
    lines: list[str] = []
    for raw in text.splitlines():
        m = _ACTION.match(raw)
        if m:
            lines.append(f"{len(lines) + 1}. {m.group(1)}")
    parser = PlanParser()
    items = parser.feed("\n".join(lines) + "\n") + parser.close()
    tasks = [i for i in items if isinstance(i, Task)]
    issues = [i for i in items if isinstance(i, PlanIssue)]
    return tasks, issues, None


class BaselineRun(Run):
    """A :class:`Run` whose rounds are ReAct steps or parallel-call turns."""

    def __init__(self, *args: object, mode: str, max_steps: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]  # Run's own signature
        self.mode = mode
        self.max_steps = max_steps           # most LLM turns before giving up

    async def _rounds(self) -> tuple[str | None, str | None]:
        system = REACT_SYSTEM if self.mode == "react" else PARALLEL_SYSTEM
        example = next(iter(self.settings.tools.values())).name + "(...)" if self.settings.tools else "tool(...)"
        messages = [
            Message("system", system.format(tools=_tool_lines(self.settings), example=example)),
            Message("user", f"Question: {self.query}"),
        ]
        for step in range(self.max_steps):
            self.round = step
            request = LLMRequest(tuple(messages), self._ctx(self.mode))
            try:
                completion = await complete(self._llm(self.settings.planner_llm), request)
            except LLMError as exc:
                return None, str(exc)
            reply = completion.text
            messages.append(Message("assistant", reply))
            tasks, issues, answer = _parse_actions(reply, completion.truncated)
            if answer is not None:
                return answer, None
            if self.mode == "react":
                tasks = tasks[:1]
            observations = await self._run_batch(tasks, issues)
            messages.append(Message("user", _render_observations(observations, issues)))
        return None, f"no answer after {self.max_steps} steps"

    async def _run_batch(self, tasks: Sequence[Task], issues: Sequence[PlanIssue]) -> list[Observation]:
        results: list[Observation] = []

        async def one(task: Task) -> None:
            if task.tool not in self.settings.tools or task.deps:
                why = "unknown tool" if task.tool not in self.settings.tools else "references are not allowed here"
                results.append(Observation(task.id, task.tool, ObservationStatus.ERROR, error=f"{why}: {task.tool}"))
                return
            self._record_planned(task)
            results.append(await self._execute_task(task, task.args, dict(task.kwargs)))

        async with asyncio.TaskGroup() as group:
            for task in tasks:
                group.create_task(one(task))
        return sorted(results, key=lambda o: o.task_id)

    def _result(self, started: float, status: RunStatus, answer: str | None, error: str | None) -> RunResult:
        result = super()._result(started, status, answer, error)
        result.mode = self.mode
        return result


def _render_observations(observations: Sequence[Observation], issues: Sequence[PlanIssue]) -> str:
    if not observations and not issues:
        return "Observation: no action found; reply with an Action or Finish(answer)."
    lines = [f"Observation {o.task_id} ({o.call or o.tool}): {o.render(MAX_OBSERVATION_CHARS)}" for o in observations]
    lines += [f"Observation: could not parse: {i}" for i in issues]
    return "\n".join(lines)
