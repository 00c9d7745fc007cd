"""OpenTelemetry spans of runs, plans, tasks and LLM calls; a no-op without ``opentelemetry-api``.

With the ``otel`` extra (``pip install 'fleetcall[otel]'``) and a tracer provider (the global
one, or ``Orchestrator(tracer_provider=...)``), every run gives one span tree::

    fleetcall.run                      the query (status, plans, tokens)
    ├── fleetcall.plan                 planning and executing plan round 0
    │   ├── chat <model>               the planner's LLM call
    │   ├── execute_tool search        a task (error status if it failed)
    │   └── execute_tool llm
    │       └── chat <model>           the llm tool's call, under its task
    ├── chat <model>                   the joiner's call (Replan)
    ├── fleetcall.plan                 round 1 ...
    └── chat <model>                   the joiner's call (Finish)

(The ``react`` and ``parallel_calls`` baselines have no plans: their calls and tasks are under
the run.) Attributes follow OpenTelemetry's GenAI semantic conventions where they apply
(``gen_ai.operation.name``: ``invoke_agent``, ``chat``, ``execute_tool``;
``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``,
``gen_ai.response.finish_reasons``, ``gen_ai.tool.name``), plus fleetcall's own
(:data:`ATTRIBUTES`). A failed run, a rejected plan, a failed task or LLM call sets the span's
status to ERROR with the error as its description and ``error.type``.

Parents come from OpenTelemetry's context, which lives in context variables: the run's span is
current inside the run (so a run started inside a span of the caller is its child), the plan's
while it plans (its tasks, started in the round's task group, and the planner's call are its
children) and each task's while its tool runs (an ``llm`` tool's call, and any span the tool
makes itself, are the task's children; a sync tool's thread gets the context too).

Span times are the run's loop times (``loop.time()``) anchored to the wall clock when the run
starts: on the real clock that is wall time; under the virtual clock the spans show the
simulated timeline, as the run's records do.

Without ``opentelemetry-api`` nothing is imported and runs are not traced. With it but with no
tracer provider configured, or a sampler that drops the run, the run's span does not record
and no other span is made for that run: one no-op span per run is the whole cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fleetcall.errors import ConfigError

if TYPE_CHECKING:
    import asyncio

    from fleetcall.executor.result import LLMCallRecord, RunResult, TaskRecord
    from fleetcall.llm.base import LLMRequest
    from fleetcall.plan import Round

__all__ = ["ATTRIBUTES", "NO_TRACE", "NoTrace", "RunTrace", "Tracing", "available", "model_name"]

# fleetcall's own span attributes (the GenAI ones are OpenTelemetry's)
ATTRIBUTES = {
    "fleetcall.query_id": "the run's query id (every span of the run)",
    "fleetcall.run.mode": "compiled | react | parallel_calls",
    "fleetcall.run.deadline_s": "the run's budget, seconds (absent: no deadline)",
    "fleetcall.run.status": "answered | failed | timed_out | cancelled",
    "fleetcall.run.plans": "plans made", "fleetcall.run.replans": "replans",
    "fleetcall.run.tasks": "tasks planned", "fleetcall.run.llm_calls": "LLM calls made",
    "fleetcall.plan.id": "<query id>/<round>", "fleetcall.plan.round": "0 for the first plan",
    "fleetcall.plan.format": "text | json | tool_call",
    "fleetcall.plan.tasks": "tasks of the plan", "fleetcall.plan.issues": "why it was rejected, counted",
    "fleetcall.task.id": "the task's id in its plan", "fleetcall.task.status": "ok | error | cancelled",
    "fleetcall.task.attempts": "calls of the tool", "fleetcall.task.abandoned": "its thread was abandoned",
    "fleetcall.task.loop_blocked_s": "longest step that blocked the event loop, wall seconds",
    "fleetcall.llm.kind": "planner | joiner | tool:<name> | react | parallel_calls",
    "fleetcall.llm.endpoint": "the pool's endpoint that served the call",
    "fleetcall.llm.queue_s": "seconds waiting for an endpoint slot, every attempt",
    "fleetcall.llm.ttft_s": "time to first token, seconds", "fleetcall.llm.attempts": "attempts",
    "fleetcall.llm.usage_estimated": "token counts estimated (the model sent none)",
}

MAX_DESCRIPTION_CHARS = 500   # an error status's description is cut to this length

_otel: Any = None   # the OpenTelemetry API once looked up (an _Api); False if not installed


class _Api:
    """The few parts of ``opentelemetry-api`` used here, imported on the first run (typed Any:
    the dependency is optional, and its objects only pass through here)."""

    attach: Any
    detach: Any
    get_tracer: Any
    in_context: Any
    Status: Any
    ERROR: Any
    INTERNAL: Any
    CLIENT: Any

    def __init__(self) -> None:
        from opentelemetry import context, trace

        self.attach, self.detach = context.attach, context.detach
        self.get_tracer, self.in_context = trace.get_tracer, trace.set_span_in_context
        self.Status, self.ERROR = trace.Status, trace.StatusCode.ERROR
        self.INTERNAL, self.CLIENT = trace.SpanKind.INTERNAL, trace.SpanKind.CLIENT


def _api() -> _Api | None:
    global _otel
    if _otel is None:
        try:
            _otel = _Api()
        except ImportError:
            _otel = False
    return _otel or None


def available() -> bool:
    """True iff ``opentelemetry-api`` can be imported (importing it on the first call)."""
    return _api() is not None


def model_name(llm: object) -> str:
    """The model an LLM says it calls (``model`` or ``model_name`` text, its own or its wrapped
    LangChain model's), or "" (a pool: its endpoints' models are known per call)."""
    for owner in (llm, getattr(llm, "model", None)):
        for attr in ("model", "model_name"):
            name = getattr(owner, attr, None)
            if isinstance(name, str) and name:
                return name
    return ""


class Tracing:
    """Where an orchestrator's spans go: ``provider`` (an OpenTelemetry ``TracerProvider``), or
    the global provider when None. ConfigError if ``provider`` has no ``get_tracer``."""

    __slots__ = ("provider", "_tracer")

    def __init__(self, provider: object | None = None) -> None:
        if provider is not None and not callable(getattr(provider, "get_tracer", None)):
            raise ConfigError(f"tracer_provider must be an OpenTelemetry TracerProvider, got {type(provider).__name__}")
        self.provider = provider
        self._tracer: Any = None   # resolved on the first run

    def start(self, query_id: str, mode: str, deadline: float | None,
              loop: asyncio.AbstractEventLoop) -> RunTrace | NoTrace:
        """The run's trace, its span started now; :data:`NO_TRACE` when nothing records it."""
        api = _api()
        if api is None:
            return NO_TRACE
        if self._tracer is None:
            self._tracer = api.get_tracer("fleetcall", tracer_provider=self.provider)
        now_ns, now = time.time_ns(), loop.time()
        span = self._tracer.start_span("fleetcall.run", kind=api.INTERNAL, start_time=now_ns)
        if not span.is_recording():
            return NO_TRACE
        span.set_attributes({"gen_ai.operation.name": "invoke_agent", "fleetcall.query_id": query_id,
                             "fleetcall.run.mode": mode})
        if deadline is not None:
            span.set_attribute("fleetcall.run.deadline_s", deadline - now)
        return RunTrace(api, self._tracer, span, query_id, loop, now_ns, now)


class _Scope:
    """A span made current for a ``with`` block and ended at its exit: ``close(span, value)``
    first (``value``: what :meth:`done` was given), then an error status if the block raised."""

    __slots__ = ("trace", "span", "_close", "_token", "_value")

    def __init__(self, trace: RunTrace, span: Any, close: Callable[[Any, Any], None] | None = None) -> None:
        self.trace, self.span, self._close = trace, span, close
        self._token: object = None
        self._value: Any = None

    def __enter__(self) -> _Scope:
        self._token = self.trace.api.attach(self.trace.api.in_context(self.span))
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.trace.api.detach(self._token)
        if self._close is not None:
            self._close(self.span, self._value)
        if exc is not None:
            self.trace.error(self.span, _error_type(exc), _describe(exc))
        self.span.end(end_time=self.trace.ns())

    def done(self, value: Any) -> None:
        """What the block produced (a plan's Round), for the span's attributes."""
        self._value = value


class _CallSpan:
    """An LLM call's span and the model it was asked for ("" if not known)."""

    __slots__ = ("span", "model")

    def __init__(self, span: Any, model: str) -> None:
        self.span, self.model = span, model


class RunTrace:
    """The spans of one run (see the module docstring); made by :meth:`Tracing.start`."""

    __slots__ = ("api", "tracer", "span", "query_id", "loop", "_anchor_ns", "_anchor", "_run_ctx", "_parent")

    def __init__(self, api: _Api, tracer: Any, span: Any, query_id: str, loop: asyncio.AbstractEventLoop,
                 anchor_ns: int, anchor: float) -> None:
        self.api, self.tracer, self.span, self.query_id, self.loop = api, tracer, span, query_id, loop
        self._anchor_ns, self._anchor = anchor_ns, anchor   # wall ns at loop time ``anchor``
        self._run_ctx = api.in_context(span)                # the context holding the run's span
        self._parent = self._run_ctx                        # of a task: the open plan's, else the run's

    def ns(self, at: float | None = None) -> int:
        """Loop time ``at`` (default: now) as wall-clock nanoseconds since the epoch."""
        at = self.loop.time() if at is None else at
        return self._anchor_ns + int((at - self._anchor) * 1e9)

    def error(self, span: Any, kind: str, description: str) -> None:
        span.set_attribute("error.type", kind)
        span.set_status(self.api.Status(self.api.ERROR, description[:MAX_DESCRIPTION_CHARS]))

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> _Scope:
        """The run's span, current for the ``with`` block (the run's body)."""
        return _Scope(self, self.span)

    def run_done(self, result: RunResult) -> None:
        """The run's outcome on its span (an ERROR status if it failed or timed out)."""
        self.span.set_attributes({
            "fleetcall.run.status": result.status.value, "fleetcall.run.plans": len(result.plans),
            "fleetcall.run.replans": len(result.replans), "fleetcall.run.tasks": len(result.tasks),
            "fleetcall.run.llm_calls": len(result.llm_calls),
            "gen_ai.usage.input_tokens": result.usage.prompt_tokens,
            "gen_ai.usage.output_tokens": result.usage.completion_tokens,
        })
        if result.status.value in ("failed", "timed_out"):
            self.error(self.span, result.status.value, result.error or result.status.value)

    # -- plans -----------------------------------------------------------------------------------
    def plan(self, round_no: int, plan_format: str) -> _Scope:
        """A plan's span (child of the run), current for the ``with`` block (planning and
        executing the plan) and its tasks' parent until the block ends."""
        span = self.tracer.start_span("fleetcall.plan", context=self._run_ctx, kind=self.api.INTERNAL,
                                      start_time=self.ns(), attributes={
                                          "fleetcall.query_id": self.query_id,
                                          "fleetcall.plan.id": f"{self.query_id}/{round_no}",
                                          "fleetcall.plan.round": round_no, "fleetcall.plan.format": plan_format})
        self._parent = self.api.in_context(span)
        return _Scope(self, span, self._plan_closed)

    def _plan_closed(self, span: Any, done: Round | None) -> None:
        """The plan's tasks and issues on its span (ERROR if it was rejected)."""
        self._parent = self._run_ctx
        if done is None:
            return
        span.set_attributes({"fleetcall.plan.tasks": len(done.tasks), "fleetcall.plan.issues": len(done.issues)})
        if done.issues:
            more = f" (and {len(done.issues) - 1} more issues)" if len(done.issues) > 1 else ""
            self.error(span, "plan_rejected", f"plan rejected: {done.issues[0]}{more}")

    # -- tasks -----------------------------------------------------------------------------------
    def task(self, record: TaskRecord) -> _Scope:
        """A task's span (child of its plan, else of the run), current while its tool runs; the
        record's final state goes on it when the block ends."""
        span = self.tracer.start_span(f"execute_tool {record.tool}", context=self._parent, kind=self.api.INTERNAL,
                                      start_time=self.ns(), attributes={
                                          "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": record.tool,
                                          "gen_ai.tool.call.id": f"{record.round}.{record.id}",
                                          "fleetcall.query_id": self.query_id, "fleetcall.plan.round": record.round,
                                          "fleetcall.task.id": record.id})
        return _Scope(self, span, lambda s, _v: self._task_closed(s, record))

    def _task_closed(self, span: Any, record: TaskRecord) -> None:
        span.set_attributes({"fleetcall.task.status": record.status, "fleetcall.task.attempts": record.attempts})
        if record.abandoned:
            span.set_attribute("fleetcall.task.abandoned", True)
        if record.loop_blocked_s:
            span.set_attribute("fleetcall.task.loop_blocked_s", record.loop_blocked_s)
        if record.status not in ("ok", "running"):   # (running: it raised; the scope says what)
            self.error(span, record.status, record.error or record.status)

    # -- LLM calls -------------------------------------------------------------------------------
    def llm_start(self, request: LLMRequest, model: str, start: float) -> _CallSpan:
        """An LLM call's span, child of the current span (plan, task or run), started at loop
        time ``start``; not made current (the call streams through an async generator)."""
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "fleetcall.query_id": self.query_id,
                                      "fleetcall.llm.kind": request.context.kind,
                                      "gen_ai.request.temperature": request.temperature}
        if model:
            attributes["gen_ai.request.model"] = model
        if request.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_tokens
        span = self.tracer.start_span(f"chat {model}" if model else "chat", kind=self.api.CLIENT,
                                      start_time=self.ns(start), attributes=attributes)
        return _CallSpan(span, model)

    def llm_end(self, call: _CallSpan | None, record: LLMCallRecord, error: BaseException | None) -> None:
        """The call's usage and serving details on its span, ended at ``record.end``."""
        if call is None:
            return
        span = call.span
        span.set_attributes({"fleetcall.plan.round": record.round,
                             "gen_ai.usage.input_tokens": record.prompt_tokens,
                             "gen_ai.usage.output_tokens": record.completion_tokens})
        if record.usage_estimated:
            span.set_attribute("fleetcall.llm.usage_estimated", True)
        if record.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", (record.finish_reason,))
        info = record.info or {}
        served = info.get("model")
        if isinstance(served, str) and served:
            span.set_attribute("gen_ai.response.model", served)
            if not call.model:   # a pool: the request named its endpoint's model
                span.set_attribute("gen_ai.request.model", served)
                span.update_name(f"chat {served}")
        for key, attr in (("endpoint", "fleetcall.llm.endpoint"), ("queue_s", "fleetcall.llm.queue_s"),
                          ("ttft_s", "fleetcall.llm.ttft_s"), ("attempts", "fleetcall.llm.attempts")):
            got = info.get(key)
            if isinstance(got, (str, int, float)) and not isinstance(got, bool):
                span.set_attribute(attr, got)
        if error is not None and not isinstance(error, GeneratorExit):   # (closed early: not an error)
            self.error(span, _error_type(error), _describe(error))
        span.end(end_time=self.ns(record.end))


class _NullScope:
    """What :class:`NoTrace` hands out: a ``with`` block that does nothing."""

    __slots__ = ()

    def __enter__(self) -> _NullScope:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def done(self, value: Any) -> None:
        return None


_NULL_SCOPE = _NullScope()


class NoTrace:
    """A run nobody traces: every hook of :class:`RunTrace`, doing nothing."""

    __slots__ = ()

    def run(self) -> _NullScope:
        return _NULL_SCOPE

    def run_done(self, result: RunResult) -> None:
        return None

    def plan(self, round_no: int, plan_format: str) -> _NullScope:
        return _NULL_SCOPE

    def task(self, record: TaskRecord) -> _NullScope:
        return _NULL_SCOPE

    def llm_start(self, request: LLMRequest, model: str, start: float) -> None:
        return None

    def llm_end(self, call: Any, record: LLMCallRecord, error: BaseException | None) -> None:
        return None


NO_TRACE = NoTrace()


def _error_type(exc: BaseException) -> str:
    import asyncio

    return "cancelled" if isinstance(exc, asyncio.CancelledError) else type(exc).__qualname__


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
