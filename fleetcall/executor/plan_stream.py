"""Reading a plan out of the planner's stream, in any plan format, without starving the loop.

* :class:`PlanReader` feeds each chunk to the parser of the run's plan format: LLMCompiler's text
  (:class:`~fleetcall.planner.PlanParser`), or JSON (:class:`~fleetcall.planner.JsonPlanParser`)
  from the answer's text (``json``) or from its first tool call's arguments as they stream
  (``tool_call``). Both parsers return each task as soon as it is complete, so it can start while
  the model writes the next one.
* :class:`LoopYielder` gives the event loop a turn after every so much parsing: a stream whose
  chunks come without a pause (a scripted model, a fast local server, a buffered response) would
  otherwise keep the loop from running the tasks already started and from firing the deadline.
"""

from __future__ import annotations

import asyncio

from fleetcall.llm.base import Chunk
from fleetcall.planner import JsonPlanParser, PlanParser
from fleetcall.plan import Join, PlanIssue, Task

Item = Task | Join | PlanIssue

YIELD_EVERY = 16_384   # units of parsing work between turns given to the loop (a character is 1)
ITEM_COST = 64         # units charged for each task or issue (validation, records, launching)


class LoopYielder:
    """``await spent(units)`` after each piece of work; it yields to the loop once ``budget`` units
    have been spent since the last turn. Deterministic: it counts work, it does not read a clock."""

    def __init__(self, budget: int = YIELD_EVERY) -> None:
        self._budget = budget
        self._left = budget      # units left before the next turn

    async def spent(self, units: int) -> None:
        self._left -= units
        if self._left <= 0:
            self._left = self._budget
            await asyncio.sleep(0)


class PlanReader:
    """The plan in a planner's stream, for one plan format (``text``, ``json`` or ``tool_call``).

    :meth:`feed` takes each :class:`~fleetcall.llm.base.Chunk` and returns the tasks, issues and
    join it completed. In ``tool_call`` mode the plan is the first tool call's arguments, read from
    its deltas as they stream, or whole from the last chunk's ``tool_calls`` when the LLM sent no
    deltas (the protocol makes deltas optional: LangChain models and the OpenAI-client adapter give
    whole calls); a model (or a scripted LLM) that writes the JSON plan as text instead is read
    from its text: whichever of the two first yields something is the plan, the other is ignored.
    """

    def __init__(self, plan_format: str) -> None:
        self.format = plan_format
        self._text = PlanParser() if plan_format == "text" else JsonPlanParser()
        self._tool = JsonPlanParser() if plan_format == "tool_call" else None
        self._active: PlanParser | JsonPlanParser | None = None if self._tool is not None else self._text
        self._call: int | None = None   # index of the tool call that carries the plan
        self._saw_deltas = False        # True once a piece of the plan's tool call streamed in

    @property
    def parser(self) -> PlanParser | JsonPlanParser:
        """The parser reading the plan (in ``tool_call`` mode: the one that found it, if any)."""
        if self._active is not None:
            return self._active
        assert self._tool is not None
        return self._tool if self._tool.text else self._text

    @property
    def done(self) -> bool:
        return self.parser.done

    @property
    def text(self) -> str:
        return self.parser.text

    @property
    def tasks_read(self) -> int:
        """Tasks parsed so far (a JSON plan's held tasks included)."""
        return self.parser.task_count

    @property
    def held(self) -> tuple[Task, ...]:
        """Tasks parsed but never returned (a JSON plan's tasks referring to tasks that never came)."""
        parser = self.parser
        return parser.held if isinstance(parser, JsonPlanParser) else ()

    def feed(self, chunk: Chunk) -> list[Item]:
        if self._tool is None:
            return self._text.feed(chunk.text)
        out: list[Item] = []
        if chunk.text and self._active is not self._tool:
            out += self._take(self._text, chunk.text)
        pieces = [d for d in chunk.tool_deltas if d.arguments and self._is_plan_call(d.index)]
        if pieces and self._active is not self._text:
            self._saw_deltas = True
            out += self._take(self._tool, "".join(d.arguments for d in pieces))
        elif chunk.tool_calls and not self._saw_deltas and self._active is not self._text:
            out += self._take(self._tool, chunk.tool_calls[0].arguments)
        return out

    def close(self) -> list[Item]:
        return self.parser.close()

    def _take(self, parser: PlanParser | JsonPlanParser, text: str) -> list[Item]:
        items = parser.feed(text)
        if items and self._active is None:
            self._active = parser
        return items if self._active is parser else []

    def _is_plan_call(self, index: int) -> bool:
        if self._call is None:
            self._call = index
        return index == self._call
