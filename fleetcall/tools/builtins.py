"""The built-in tools every run may use: ``math`` (safe arithmetic) and ``llm`` (ask the model).

Both are async functions wrapped as :class:`FunctionTool`, so they run on the loop (no worker
thread: they work under the virtual clock). ``math`` is bounded CPU work (see
:mod:`fleetcall.tools.arith`); ``llm`` awaits the run's model.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BeforeValidator

from fleetcall.errors import ConfigError
from fleetcall.llm.base import LLMRequest, Message, complete
from fleetcall.tools.arith import evaluate
from fleetcall.tools.base import Tool, ToolContext, ToolOptions
from fleetcall.tools.function import FunctionTool


def _as_list(value: Any) -> Any:
    """``context`` accepts one value as a list of one (planners often pass ``context=$1``)."""
    if value is None or isinstance(value, (list, tuple)):
        return value
    return [value]


Context = Annotated[list | None, BeforeValidator(_as_list)]

MATH_DESCRIPTION = (
    "Evaluate an arithmetic expression exactly (no guessing): + - * / // % ** (or ^), "
    "parentheses, comparisons, min max abs round sqrt log exp floor ceil pow sum mean, pi, e. "
    "Put results of earlier tasks in context=[$1, $2] and use them as c0, c1 in the expression "
    "(text such as '$3.5 million', '1,234' or '15%' is read as a number), "
    "e.g. math('c0 * 2 + c1', context=[$1, $2])."
)


async def _math(expression: str, context: Context = None) -> float:
    """Evaluate ``expression`` with the context items as ``c0, c1, ...``.

    Args:
        expression: arithmetic only, e.g. "(c0 + c1) / 2" or "sqrt(2) * 10".
        context: earlier results, usable as c0, c1, ... in the expression.
    """
    return evaluate(expression, context)


class MathTool(FunctionTool):
    """``math(expression: str, context: list | None = None) -> float``: safe arithmetic.

    Raises ``ValueError`` with a clear message for anything that is not arithmetic (the
    executor turns it into an error observation the joiner can read).
    """

    def __init__(self, *, name: str = "math", options: ToolOptions | None = None) -> None:
        super().__init__(_math, name=name, description=MATH_DESCRIPTION, options=options)


LLM_DESCRIPTION = (
    "Ask a language model to do what no other tool does: summarize, compare, extract, "
    "classify, reason over text. Pass the results it needs in context=[$1, $2]. Returns text."
)

LLM_SYSTEM = (
    "You are a precise assistant used as a tool inside a larger plan. Answer the request "
    "directly and concisely, using the given context when there is one. Do not ask questions."
)


def render_context(context: list[Any] | None) -> str:
    """Context items as numbered blocks, JSON for structured values."""
    if not context:
        return ""
    blocks = []
    for i, item in enumerate(context, 1):
        text = item if isinstance(item, str) else _to_text(item)
        blocks.append(f"[{i}] {text}")
    return "\n".join(blocks)


def _to_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


class LLMTool(FunctionTool):
    """``llm(prompt: str, context: list | None = None) -> str``: one call to the run's model.

    The call goes through ``ctx.llm`` with ``ctx.call_context("tool:<name>")``, so a scheduler
    sees which query it belongs to and how urgent it is.

    >>> tool = LLMTool(max_tokens=256)
    """

    uses_llm = True  # the executor counts such tasks in the LLM calls left after a task

    def __init__(
        self,
        *,
        name: str = "llm",
        system: str = LLM_SYSTEM,
        max_tokens: int | None = 512,
        temperature: float = 0.0,
        options: ToolOptions | None = None,
    ) -> None:
        self.system = system
        self.max_tokens = max_tokens
        self.temperature = temperature
        super().__init__(self._ask, name=name, description=LLM_DESCRIPTION, options=options)

    async def _ask(self, prompt: str, context: Context = None, *, ctx: ToolContext) -> str:
        """Ask the model.

        Args:
            prompt: what to ask, in plain words.
            context: earlier results the answer needs.
        """
        if ctx.llm is None:
            raise ConfigError(
                f"the {self.name!r} tool needs a model, but this run has none (ctx.llm is None); "
                "give the orchestrator an llm or tool_llm"
            )
        shown = render_context(context)
        user = f"{prompt}\n\nContext:\n{shown}" if shown else prompt
        request = LLMRequest(
            messages=(Message("system", self.system), Message("user", user)),
            context=ctx.call_context(f"tool:{self.name}"),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
        )
        completion = await complete(ctx.llm, request)
        return completion.text.strip()


math_tool = MathTool()
llm_tool = LLMTool()


def default_tools() -> list[Tool]:
    """The built-in tools: ``[math_tool, llm_tool]`` (shared instances)."""
    return [math_tool, llm_tool]
