"""The SDK entry point: :class:`Orchestrator` compiles queries into plans and runs them.

>>> import asyncio
>>> from fleetcall import Orchestrator, ScriptedLLM, tool
>>> @tool
... async def search(query: str) -> str:
...     "Look something up."
...     return f"{query}: 42"
>>> llm = ScriptedLLM(["1. search('x')\\n2. join()<END_OF_PLAN>", "Finish(42)"])
>>> result = asyncio.run(Orchestrator(tools=[search], llm=llm).run("What is x?"))
>>> result.status.value, result.answer
('answered', '42')
"""

from __future__ import annotations

import asyncio
import enum
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from fleetcall.errors import ConfigError
from fleetcall.executor import events as ev
from fleetcall.executor.result import RunResult
from fleetcall.executor.baselines import BaselineRun
from fleetcall.executor.run import Run
from fleetcall.executor.runner import DEFAULT_SYNC_THREADS, ToolLimits
from fleetcall.executor.settings import JoinerFormat, PlanFormat, RunSettings
from fleetcall.llm.adapters import as_llm, require_tool_calls
from fleetcall.llm.base import LLM, ModelInfo, model_info
from fleetcall.tools import ToolRegistry, as_tool, default_tools
from fleetcall.tools.base import Tool, Toolset
from fleetcall.tracing import Tracing

if TYPE_CHECKING:
    from fleetcall.executor.runnable import OrchestratorRunnable

Mode = Literal["compiled", "react", "parallel_calls"]
MODES: tuple[str, ...] = ("compiled", "react", "parallel_calls")
DEFAULT_CONTEXT_TOKENS = 8192   # the model's context when neither the caller nor the LLM says

DEFAULT_DEADLINE_S = 300.0   # a run's budget when neither the call nor the orchestrator sets one


class _Default(enum.Enum):
    DEADLINE = "the orchestrator's default_deadline"


DEFAULT = _Default.DEADLINE   # ``deadline=`` not given: use the orchestrator's ``default_deadline``
Deadline = float | None | _Default


class RunHandle:
    """A run started with :meth:`Orchestrator.start`: await its result, or cancel it."""

    def __init__(self, run: Run, task: "asyncio.Task[RunResult]") -> None:
        self._run = run
        self._task = task
        self.query_id = run.query_id

    def cancel(self) -> None:
        """Cancel the run and every task it started; its result then has status ``cancelled``."""
        if not self._task.done():
            self._run.cancel_requested = True
            # A task cancelled before its first step would never enter execute() and so never
            # produce a result: a run not yet executing sees the request when it starts.
            if self._run.executing:
                self._task.cancel()

    def done(self) -> bool:
        return self._task.done()

    def add_done_callback(self, callback: "Callable[[asyncio.Task[RunResult]], object]") -> None:
        """Call ``callback(task)`` when the run's task ends (as ``asyncio.Task.add_done_callback``)."""
        self._task.add_done_callback(callback)

    async def result(self) -> RunResult:
        return await asyncio.shield(self._task)


class Orchestrator:
    """Compiles each query into a DAG of tool calls, runs it in parallel, joins, replans.

    One orchestrator serves many concurrent runs in one event loop; per-tool concurrency and rate
    limits are shared by all of them.

    Args:
        tools: functions decorated with ``@tool``, plain functions, LangChain tools, or ``Tool``s.
        llm: the model for planner, joiner and LLM tools: anything :func:`~fleetcall.as_llm`
            accepts (an LLM such as a ``ScriptedLLM`` or an ``EndpointPool``, a LangChain
            ``BaseChatModel``, ``as_llm(openai.AsyncOpenAI(...), model=...)``); anything else is
            a ``ConfigError`` here.
        planner_llm, joiner_llm, tool_llm: override ``llm`` for one role.
        max_replans: how many times a run may plan again (after an invalid plan or a Replan).
        max_tasks: the most tasks one plan may hold.
        examples: few-shot plan examples shown to the planner.
        plan_format: ``text`` (LLMCompiler's streamed syntax), ``json`` (JSON-schema
            ``response_format``), ``tool_call`` (one forced tool call carrying the plan), or
            ``auto`` (the default): ``json`` if the planner LLM says it enforces JSON schemas
            (:func:`~fleetcall.llm.base.model_info`: an endpoint pool whose endpoints are all
            llama.cpp servers or set ``json_schema = true``), else ``text``. Every format streams.
            ``self.plan_format`` holds the format chosen.
        joiner_format: ``text`` (``Finish(...)`` / ``Replan(...)``), ``json``, or ``auto`` (the
            same choice, made for the joiner LLM).
        context_tokens: the model's context (prompt and answer, tokens); prompts of the planner
            and the joiner are kept within it minus room for the answer (``planner_max_tokens``, or
            a quarter of it up to 1,024), earlier rounds shown in less detail as needed. Default:
            what the planner LLM says (a pool endpoint's ``context_tokens``), else 8,192.
        builtin_tools: add the built-in ``math`` and ``llm`` tools unless a tool of that name is given.
        max_steps: the most LLM turns of the ``react`` and ``parallel_calls`` baselines.
        default_deadline: seconds a run may take when ``run``/``start``/``stream`` get no
            ``deadline`` (300 by default); ``None``: runs without a deadline unless given one.
        grace_s: loop seconds a cancelled tool call gets to end (deadline, ``timeout_s``,
            cancel) before the run stops waiting for it and records it as abandoned.
        sync_threads: worker threads of each sync tool whose ``max_concurrency`` is not set
            (a sync tool's threads are its own: see "What fleetcall guarantees" in the README).
        slow_step_s: a tool step holding the event loop this long (wall seconds) is logged on
            ``fleetcall.executor`` and recorded in the task's ``loop_blocked_s``; ``None``: off.
        tracer_provider: an OpenTelemetry ``TracerProvider`` for the runs' spans (default: the
            global one; see :mod:`fleetcall.tracing`; nothing is traced without
            ``opentelemetry-api``).

    ``async with Orchestrator(...) as orch:`` (or ``await orch.aclose()``) cancels the runs still
    in flight from :meth:`start`, closes the tools' threads without waiting for them and closes
    the toolsets given in ``tools``.
    """

    def __init__(
        self,
        tools: Iterable[Any] = (),
        llm: object | None = None,
        *,
        planner_llm: object | None = None,
        joiner_llm: object | None = None,
        tool_llm: object | None = None,
        max_replans: int = 2,
        max_tasks: int | None = 64,
        examples: Sequence[str] = (),
        plan_format: PlanFormat = "auto",
        joiner_format: JoinerFormat = "auto",
        planner_max_tokens: int | None = None,
        context_tokens: int | None = None,
        builtin_tools: bool = True,
        max_steps: int = 20,
        default_deadline: float | None = DEFAULT_DEADLINE_S,
        grace_s: float = 1.0,
        sync_threads: int = DEFAULT_SYNC_THREADS,
        slow_step_s: float | None = 0.1,
        tracer_provider: object | None = None,
    ) -> None:
        tools, self._toolsets = _take_toolsets(tools)   # toolsets (MCP sessions) closed by aclose()
        given = [as_tool(t) for t in tools]
        if builtin_tools:
            names = {t.name for t in given}
            given += [t for t in default_tools() if t.name not in names]
        self.tools = ToolRegistry(given)
        default_llm = None if llm is None else as_llm(llm)
        self.planner_llm = _role_llm(planner_llm, default_llm, "planner_llm")
        self.joiner_llm = _role_llm(joiner_llm, default_llm, "joiner_llm")
        self.tool_llm = (as_llm(tool_llm, role="tool_llm") if tool_llm is not None
                         else default_llm if default_llm is not None else self.planner_llm)
        if not isinstance(max_replans, int) or max_replans < 0:
            raise ConfigError(f"max_replans must be an integer >= 0, got {max_replans!r}")
        if max_tasks is not None and (not isinstance(max_tasks, int) or max_tasks < 1):
            raise ConfigError(f"max_tasks must be a positive integer or None, got {max_tasks!r}")
        if plan_format not in ("auto", "text", "json", "tool_call"):
            raise ConfigError(f"plan_format must be 'auto', 'text', 'json' or 'tool_call', got {plan_format!r}")
        if plan_format == "tool_call":
            require_tool_calls(self.planner_llm, "planner_llm")
        if joiner_format not in ("auto", "text", "json"):
            raise ConfigError(f"joiner_format must be 'auto', 'text' or 'json', got {joiner_format!r}")
        if context_tokens is not None and (not isinstance(context_tokens, int) or context_tokens < 256):
            raise ConfigError(f"context_tokens must be an integer >= 256 or None, got {context_tokens!r}")
        self.max_replans = max_replans
        self.max_tasks = max_tasks
        self.examples = tuple(examples)
        planner_info, joiner_info = model_info(self.planner_llm), model_info(self.joiner_llm)
        self.plan_format: PlanFormat = _chosen(plan_format, planner_info)
        self.joiner_format: JoinerFormat = _chosen(joiner_format, joiner_info)
        self.planner_max_tokens = planner_max_tokens
        self.context_tokens: int = context_tokens or planner_info.context_tokens or DEFAULT_CONTEXT_TOKENS
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ConfigError(f"max_steps must be a positive integer, got {max_steps!r}")
        self.max_steps = max_steps
        self.default_deadline = None if default_deadline is None else _seconds("default_deadline", default_deadline)
        self.grace_s = _seconds("grace_s", grace_s, zero_ok=True)
        if not isinstance(sync_threads, int) or isinstance(sync_threads, bool) or sync_threads < 1:
            raise ConfigError(f"sync_threads must be a positive integer, got {sync_threads!r}")
        self.sync_threads = sync_threads
        self.slow_step_s = None if slow_step_s is None else _seconds("slow_step_s", slow_step_s)
        self.tracing = Tracing(tracer_provider)    # where the runs' spans go
        self._limits: dict[str, ToolLimits] = {}   # tool name -> limits shared by every run
        self._runs: set[RunHandle] = set()         # runs from start() still in flight
        self._closed = False                       # True once aclose() began: no new runs

    def limits_for(self, tool: Tool) -> ToolLimits:
        limits = self._limits.get(tool.name)
        if limits is None:
            limits = self._limits[tool.name] = ToolLimits.for_tool(tool, self.sync_threads)
        return limits

    def settings(self) -> RunSettings:
        """What a run made now reads of this orchestrator (frozen: a setting changed later
        applies to later runs)."""
        return RunSettings(
            tools=self.tools, planner_llm=self.planner_llm, joiner_llm=self.joiner_llm,
            tool_llm=self.tool_llm, max_replans=self.max_replans, max_tasks=self.max_tasks,
            examples=self.examples, plan_format=self.plan_format, joiner_format=self.joiner_format,
            planner_max_tokens=self.planner_max_tokens, context_tokens=self.context_tokens,
            grace_s=self.grace_s, slow_step_s=self.slow_step_s, tracing=self.tracing,
            limits_for=self.limits_for)

    def abandoned(self) -> list[str]:
        """The sync tool calls abandoned while their thread still runs: one line each."""
        return [f"tool {name!r}: {label}, running for {seconds:.1f}s"
                for name, limits in self._limits.items() if limits.lane is not None
                for label, seconds in limits.lane.abandoned]

    async def aclose(self) -> None:
        """Close what the orchestrator owns: cancel the runs in flight from :meth:`start` and wait
        for their results (each ends within the grace period), close every tool's threads without
        waiting for them (an abandoned call keeps running until it returns; it is logged), and
        close the toolsets given in ``tools`` (MCP sessions). Idempotent."""
        self._closed = True
        handles = list(self._runs)
        for handle in handles:
            handle.cancel()
        if handles:
            await asyncio.wait([h._task for h in handles])
        for limits in self._limits.values():
            if limits.lane is not None:
                limits.lane.close()
        await self._close_toolsets()

    async def __aenter__(self) -> "Orchestrator":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _new_run(
        self, query: str, deadline: Deadline, query_id: str | None, emit: ev.Emit | None = None,
        mode: Mode = "compiled",
    ) -> Run:
        if self._closed:
            raise RuntimeError("the orchestrator is closed")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        if deadline is DEFAULT:
            deadline = self.default_deadline
        elif deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))
                                       or not deadline > 0):   # (NaN is not > 0 either)
            raise ValueError(f"deadline must be a positive number of seconds or None, got {deadline!r}")
        loop = asyncio.get_running_loop()
        at = None if deadline is None else loop.time() + deadline
        qid = query_id or uuid.uuid4().hex   # random: reveals nothing of how many runs came before
        emit = emit or (lambda _e: None)
        if mode == "compiled":
            return Run(self.settings(), query, qid, at, emit)
        return BaselineRun(self.settings(), query, qid, at, emit, mode=mode, max_steps=self.max_steps)

    async def run(
        self, query: str, *, deadline: Deadline = DEFAULT, query_id: str | None = None, mode: Mode = "compiled"
    ) -> RunResult:
        """Answer ``query``; ``deadline`` is a budget in seconds from now (not given: the
        orchestrator's ``default_deadline``, 300 s unless set; ``None``: no deadline).

        ``mode`` picks the compiled plan (default) or a baseline on the same tools and LLM:
        ``react`` or ``parallel_calls``.

        Returns a :class:`RunResult` whatever happens inside the run (status ``answered``,
        ``failed``, ``timed_out``) within the deadline plus ``grace_s`` (plus any step a tool
        spends blocking the event loop); cancelling the awaiting task cancels the run and raises
        ``CancelledError`` as usual (use :meth:`start` for a handle whose ``cancel`` yields a result).
        """
        return await self._new_run(query, deadline, query_id, mode=mode).execute()

    def start(self, query: str, *, deadline: Deadline = DEFAULT, query_id: str | None = None,
              mode: Mode = "compiled", emit: ev.Emit | None = None) -> RunHandle:
        """Start a run in the background of the running loop and return its handle.

        The handle owns the run's task: await ``handle.result()`` or call ``handle.cancel()``.
        ``emit`` receives the run's typed events as they happen (what :meth:`stream` yields).
        """
        run = self._new_run(query, deadline, query_id, emit, mode=mode)
        handle = RunHandle(run, asyncio.get_running_loop().create_task(run.execute(), name=f"run-{run.query_id}"))
        self._runs.add(handle)
        handle.add_done_callback(lambda _t: self._runs.discard(handle))
        return handle

    async def stream(
        self, query: str, *, deadline: Deadline = DEFAULT, query_id: str | None = None
    ) -> AsyncIterator[ev.Event]:
        """Yield the run's typed events as they happen, ending with :class:`RunFinished`.

        Leaving the loop early cancels the run and everything it started.
        """
        queue: asyncio.Queue[ev.Event | BaseException] = asyncio.Queue()
        handle = self.start(query, deadline=deadline, query_id=query_id, emit=queue.put_nowait)
        def forward_failure(task: asyncio.Task[RunResult]) -> None:
            """A run whose task failed (a bug, not a run outcome) ends the stream with its error."""
            error = None if task.cancelled() else task.exception()
            if error is not None:
                queue.put_nowait(error)

        handle.add_done_callback(forward_failure)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, ev.RunFinished):
                    return
        finally:
            handle.cancel()   # a no-op once the run is done
            await asyncio.wait([handle._task])

    def as_runnable(self, *, input_key: str = "query", output_key: str = "answer", result_key: str = "result",
                    deadline: Deadline = DEFAULT, mode: Mode = "compiled") -> "OrchestratorRunnable":
        """This orchestrator as a LangChain ``Runnable`` (a LangGraph node as it is).

        Input: a query, or a mapping with the query at ``input_key``; output:
        ``{output_key: answer, result_key: RunResult}``. See :mod:`fleetcall.executor.runnable`.

        >>> # graph.add_node("research", orch.as_runnable())
        """
        from fleetcall.executor.runnable import OrchestratorRunnable

        return OrchestratorRunnable(self, input_key=input_key, output_key=output_key, result_key=result_key,
                                    deadline=deadline, mode=mode)

    # -- toolsets given in ``tools`` (MCP sessions): the orchestrator owns and closes them --------
    async def _close_toolsets(self) -> None:
        """Close every toolset given in ``tools``; closing twice is harmless."""
        for toolset in self._toolsets:
            await toolset.aclose()


def _seconds(name: str, value: float, *, zero_ok: bool = False) -> float:
    """``value`` if it is a number of seconds this setting accepts; a ``ConfigError`` if not."""
    if (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (value > 0 or zero_ok and value == 0)):
        return float(value)
    rule = "a number of seconds >= 0" if zero_ok else "a positive number of seconds"
    raise ConfigError(f"{name} must be {rule}, got {value!r}")


def _take_toolsets(tools: Iterable[Any]) -> tuple[list[Any], list[Toolset]]:
    """The tools with every toolset's tools in its place, and the toolsets themselves."""
    items = [tools] if isinstance(tools, Toolset) else list(tools)
    flat: list[Any] = []
    toolsets: list[Toolset] = []
    for item in items:
        if isinstance(item, Toolset):
            if not item.tools:
                raise ConfigError(f"{item!r} gives no tools: is it open? (await toolset.open(), or async with)")
            toolsets.append(item)
            flat.extend(item.tools)
        else:
            flat.append(item)
    return flat, toolsets


def _chosen(fmt: str, info: ModelInfo) -> Any:
    """``fmt``, with ``auto`` made ``json`` for a model that enforces JSON schemas, else ``text``."""
    if fmt != "auto":
        return fmt
    return "json" if info.json_schema else "text"


def _role_llm(given: Any, default: LLM | None, role: str) -> LLM:
    """The LLM of one role: its own if given (anything :func:`as_llm` accepts), else ``llm``'s."""
    if given is not None:
        return as_llm(given, role=role)
    if default is None:
        raise ConfigError(f"no LLM for the {role.removesuffix('_llm')}: pass llm= (or {role}=)")
    return default
