"""The tool protocol: what the planner shows the model and what the executor calls.

Implementations: :class:`fleetcall.tools.FunctionTool` (``@tool`` on sync or async functions),
the LangChain adapter (``BaseTool`` / ``StructuredTool``), and the built-ins ``math`` and ``llm``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from fleetcall.errors import ConfigError
from fleetcall.llm.base import LLM, CallContext


@dataclass(frozen=True, slots=True)
class ToolOptions:
    """How the executor runs a tool. ``None`` means no limit."""

    timeout_s: float | None = None        # per attempt
    retries: int = 0                      # extra attempts after a raise or a timeout
    max_concurrency: int | None = None    # calls of this tool running at once, across runs (a sync
                                          # tool's worker threads too; unset: the orchestrator's 8)
    rate_limit: int | None = None         # calls started per ``rate_period_s`` (asyncio-throttle)
    rate_period_s: float = 1.0


class ThreadRunner(Protocol):
    """Runs a sync callable in a worker thread the executor owns (the tool's bounded lane)."""

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in a thread; if the caller is cancelled the call is abandoned
        (the thread keeps running it: Python cannot stop a thread) and ``CancelledError`` raised."""
        ...


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a running tool may know of its run; LLM tools pass ``call_context`` to the LLM."""

    query_id: str
    task_id: int
    llm: LLM | None = None
    deadline: float | None = None          # loop time the query must be done by
    remaining_work_s: float = 0.0          # predicted work of the plan after this task
    remaining_calls: int = 0               # LLM calls on the longest path after it (joiner included)
    stage: int = 0                         # depth of the task in the plan (the planner is 0)
    # (remaining_calls, stage) computed when an LLM call is made, from the plan as known then;
    # replaces the two fields above when set (most tasks never ask, so they never pay for it)
    plan_position: Callable[[], tuple[int, int]] | None = None
    # where sync work runs: the tool's own bounded worker threads, given by the orchestrator
    # (None outside one: FunctionTool then uses the loop's default executor, asyncio.to_thread)
    threads: ThreadRunner | None = None

    def call_context(self, kind: str) -> CallContext:
        remaining, stage = (self.plan_position() if self.plan_position is not None
                            else (self.remaining_calls, self.stage))
        return CallContext(
            query_id=self.query_id,
            kind=kind,
            deadline=self.deadline,
            remaining_calls=remaining,
            remaining_work_s=self.remaining_work_s,
            stage=stage,
        )


@runtime_checkable
class Tool(Protocol):
    name: str
    description: str
    options: ToolOptions

    def json_schema(self) -> dict[str, Any]:
        """JSON schema (an object) of the tool's arguments, by parameter name."""
        ...

    def signature(self) -> str:
        """How the planner prompt shows the tool, e.g. ``search(query: str) -> str``."""
        ...

    def parameter_names(self) -> list[str]:
        """Parameter names in positional order."""
        ...

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        """Problems with these arguments, at plan time. Values that are ``Ref`` or ``Interp``
        (results not known yet) are accepted for any type; an ``Interp`` counts as a string."""
        ...

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Validated keyword arguments; raises ``ToolArgumentError`` naming each problem."""
        ...

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        """Run the tool with bound arguments. Sync work runs in ``ctx.threads`` (worker threads)."""
        ...


@runtime_checkable
class Toolset(Protocol):
    """Tools that share a resource they own (the session of an MCP server).

    Given to an ``Orchestrator`` in ``tools`` (as an item, or as ``tools`` itself), it adds
    every one of its tools, and ``await orchestrator.aclose()`` closes it.
    """

    @property
    def tools(self) -> Sequence[Tool]: ...

    async def aclose(self) -> None: ...


def check_options(options: ToolOptions) -> ToolOptions:
    """The options unchanged if they make sense; a ``ConfigError`` naming the bad field if not."""

    def bad(field: str, rule: str) -> ConfigError:
        return ConfigError(f"ToolOptions.{field} must be {rule}, got {getattr(options, field)!r}")

    if options.timeout_s is not None and not (
        isinstance(options.timeout_s, (int, float)) and options.timeout_s > 0
    ):
        raise bad("timeout_s", "a positive number of seconds or None")
    if not isinstance(options.retries, int) or isinstance(options.retries, bool) or options.retries < 0:
        raise bad("retries", "an integer >= 0")
    for field in ("max_concurrency", "rate_limit"):
        value = getattr(options, field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise bad(field, "a positive integer or None")
    if not isinstance(options.rate_period_s, (int, float)) or options.rate_period_s <= 0:
        raise bad("rate_period_s", "a positive number of seconds")
    return options
