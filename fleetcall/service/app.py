"""The HTTP service: one :class:`~fleetcall.Orchestrator` (and optionally its pool) behind an ASGI app.

Routes (JSON in and out; errors are ``{"error": {"type": ..., "message": ...}}`` with a 4xx/5xx)::

    POST   /v1/runs        {"query": str, "deadline_s"?: float, "stream"?: bool, "mode"?: str}
                           -> 200 the RunResult (plus "id"), or with "stream": true server-sent
                              events, one per orchestrator event, ending with RunFinished
    GET    /v1/runs/{id}   -> {"id", "state": "running"|"finished", "result"?}   (404 if unknown)
    DELETE /v1/runs/{id}   -> 202 {"id", "state": "cancelling"} (200 if already finished)
    GET    /v1/endpoints   -> the pool's snapshot, a list of dicts ([] without a pool)
    GET    /healthz        -> {"status": "ok"} (never needs the token)
    GET    /metrics        -> Prometheus text: runs, tasks, LLM calls, queue waits, endpoints

Only the tools registered on the orchestrator can run: a request carries a query, never code or
tool definitions. Plan size is the orchestrator's ``max_tasks``; request bodies are capped at
``max_body_bytes``; a configured ``token`` is required as ``Authorization: Bearer <token>``.

Runs are tasks owned by the app (its :class:`RunRegistry`): a streamed run whose client goes
away is cancelled, and the app's lifespan shutdown cancels every run still in flight, waits for
each to settle, and lists their ids in ``app.state.shutdown_report``.

Embedding in an existing Starlette or FastAPI app, on its event loop and inside its lifespan
(a mounted app's own lifespan is not run by the parent, so enter it from the parent's)::

    import contextlib
    from fastapi import FastAPI
    from fleetcall import Orchestrator, EndpointPool
    from fleetcall.service.app import create_app

    pool = EndpointPool.load("pool.toml")
    fleet = create_app(Orchestrator(tools=[search], llm=pool), pool=pool, token="s3cret")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with fleet.router.lifespan_context(fleet):   # cancels fleetcall's runs on exit
            yield
        await pool.aclose()

    app = FastAPI(lifespan=lifespan)
    app.mount("/fleetcall", fleet)          # POST /fleetcall/v1/runs, GET /fleetcall/metrics, ...

With plain Starlette: ``Starlette(routes=[Mount("/fleetcall", app=fleet)], lifespan=lifespan)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import hmac
import json
import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from fleetcall.executor import events as ev
from fleetcall.executor.orchestrator import MODES, Orchestrator, RunHandle
from fleetcall.executor.result import RunResult, RunStatus
from fleetcall.router.pool import EndpointPool

__all__ = ["create_app", "RunRegistry", "ServiceMetrics", "event_json"]

log = logging.getLogger("fleetcall.service.app")

Handler = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    """A caller's mistake (or a refusal), turned into a JSON error response at the route."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"type": self.type, "message": self.message}}, status_code=self.status)


# -- JSON of events and snapshots ------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: dataclasses and pydantic models as dicts, enums as values.

    Tool observations can be any Python object; what JSON cannot hold is shown as ``str()``.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return str(value)


def event_json(event: ev.Event) -> str:
    """One orchestrator event as a server-sent event: ``event: <ClassName>`` and its JSON data."""
    data = json.dumps(jsonable(event), separators=(",", ":"))
    return f"event: {type(event).__name__}\ndata: {data}\n\n"


# -- metrics ---------------------------------------------------------------------------------
@dataclasses.dataclass(slots=True)
class _SumCount:
    sum: float = 0.0
    count: int = 0

    def add(self, value: float) -> None:
        self.sum += value
        self.count += 1


class ServiceMetrics:
    """Counters of finished runs, fed by :meth:`record` once per run (cheap: no per-event work)."""

    __slots__ = ("runs_started", "runs_finished", "tasks", "llm_calls", "queue_wait", "endpoint_latency")

    def __init__(self) -> None:
        self.runs_started = 0
        self.runs_finished: dict[str, int] = {}            # run status -> runs
        self.tasks: dict[str, int] = {}                    # task status -> tasks
        self.llm_calls: dict[str, int] = {}                # call kind -> calls
        self.queue_wait = _SumCount()                      # seconds waiting for an endpoint slot
        self.endpoint_latency: dict[str, _SumCount] = {}   # endpoint -> call seconds

    def record(self, result: RunResult) -> None:
        _bump(self.runs_finished, result.status.value)
        for task in result.tasks:
            _bump(self.tasks, task.status)
        for call in result.llm_calls:
            _bump(self.llm_calls, call.kind)
            info = call.info or {}
            queue_s = info.get("queue_s")
            if isinstance(queue_s, (int, float)):
                self.queue_wait.add(float(queue_s))
            endpoint = info.get("endpoint")
            if isinstance(endpoint, str):
                total = info.get("total_s")
                seconds = float(total) if isinstance(total, (int, float)) else call.end - call.start
                self.endpoint_latency.setdefault(endpoint, _SumCount()).add(seconds)

    def render(self, in_flight: int, pool: EndpointPool | None) -> str:
        """The Prometheus text exposition (version 0.0.4) of the counters and the pool's state."""
        out: list[str] = []
        _family(out, "fleetcall_runs_started_total", "counter", "Runs accepted.", [({}, self.runs_started)])
        _family(out, "fleetcall_runs_in_flight", "gauge", "Runs running now.", [({}, in_flight)])
        _family(out, "fleetcall_runs_finished_total", "counter", "Runs finished, by status.",
                [({"status": k}, v) for k, v in sorted(self.runs_finished.items())])
        _family(out, "fleetcall_tasks_total", "counter", "Tasks of finished runs, by status.",
                [({"status": k}, v) for k, v in sorted(self.tasks.items())])
        _family(out, "fleetcall_llm_calls_total", "counter", "LLM calls of finished runs, by kind.",
                [({"kind": k}, v) for k, v in sorted(self.llm_calls.items())])
        _family(out, "fleetcall_llm_queue_wait_seconds", "summary", "Seconds LLM calls waited for an endpoint slot.",
                [({}, self.queue_wait)])
        _family(out, "fleetcall_endpoint_latency_seconds", "summary", "LLM call seconds, by endpoint.",
                [({"endpoint": k}, v) for k, v in sorted(self.endpoint_latency.items())])
        self._render_pool(out, pool)
        return "\n".join(out) + "\n"

    def _render_pool(self, out: list[str], pool: EndpointPool | None) -> None:
        snaps = pool.snapshot() if pool is not None else []
        _family(out, "fleetcall_endpoint_calls_total", "counter", "Attempts finished at the endpoint.",
                [({"endpoint": s.name}, s.calls) for s in snaps])
        _family(out, "fleetcall_endpoint_errors_total", "counter", "Failed attempts at the endpoint.",
                [({"endpoint": s.name}, s.failures) for s in snaps])
        _family(out, "fleetcall_endpoint_in_flight", "gauge", "Calls running at the endpoint.",
                [({"endpoint": s.name}, s.in_flight) for s in snaps])
        _family(out, "fleetcall_endpoint_queued", "gauge", "Calls waiting in the endpoint's queue.",
                [({"endpoint": s.name}, s.queued) for s in snaps])
        _family(out, "fleetcall_endpoint_ttft_seconds", "gauge", "EWMA time to first token.",
                [({"endpoint": s.name}, s.ttft_s) for s in snaps if s.ttft_s is not None])


def _drop(event: ev.Event) -> None:
    """The event sink of a run nobody streams."""


def _bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _label_value(value: str) -> str:
    """A label value escaped as the exposition format wants: backslash, quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}"


def _family(out: list[str], name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], Any]]) -> None:
    out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        if isinstance(value, _SumCount):
            out.append(f"{name}_sum{_labels(labels)} {value.sum:.6g}")
            out.append(f"{name}_count{_labels(labels)} {value.count}")
        else:
            out.append(f"{name}{_labels(labels)} {value:.6g}" if isinstance(value, float)
                       else f"{name}{_labels(labels)} {value}")


# -- runs ------------------------------------------------------------------------------------
class RunRegistry:
    """Owns every run the app started: handles in flight, results of finished runs (an LRU).

    Each run executes in a task created here that records its result and metrics when it ends,
    whoever (if anyone) is awaiting it, so ``GET /v1/runs/{id}`` sees every run settle.
    """

    def __init__(self, orchestrator: Orchestrator, max_runs: int, max_in_flight: int | None = None) -> None:
        self.orchestrator = orchestrator
        self.max_runs = max_runs
        self.max_in_flight = max_in_flight  # runs executing at once; more get a 429
        self.metrics = ServiceMetrics()
        self.running: dict[str, RunHandle] = {}                   # run id -> handle, until it ends
        self.finished: OrderedDict[str, RunResult] = OrderedDict()  # run id -> result, oldest first
        self.closed = False                                       # True once shutdown began

    def start(self, query: str, deadline_s: float | None, mode: str, emit: ev.Emit | None = None) -> RunHandle:
        """Start a run now; ``emit`` receives its events. Raises ``ValueError`` on bad input."""
        if self.closed:
            raise ApiError(503, "shutting_down", "the service is shutting down")
        if self.max_in_flight is not None and len(self.running) >= self.max_in_flight:
            raise ApiError(429, "overloaded", f"{len(self.running)} runs are in flight, the most this "
                           "service takes at once; retry later")
        sink = emit or _drop
        handle = self.orchestrator.start(query, deadline=deadline_s, mode=mode, emit=sink)  # type: ignore[arg-type]  # mode checked by the orchestrator
        run_id = handle.query_id
        # Registered before anyone awaits the handle, so it runs first: a waiter finds the record.
        handle.add_done_callback(lambda t: self._settled(run_id, query, mode, sink, t))
        self.running[run_id] = handle
        self.metrics.runs_started += 1
        return handle

    def _settled(self, run_id: str, query: str, mode: str, emit: ev.Emit, task: "asyncio.Task[RunResult]") -> None:
        """Record a run's result; a run that never produced one (its task cancelled from
        outside the handle, or a bug) gets a stand-in result, and its stream a RunFinished, so
        nothing hangs. (A cancel through the handle always yields the run's own result.)"""
        self.running.pop(run_id, None)
        error = None if task.cancelled() else task.exception()
        if task.cancelled() or error is not None:
            now = asyncio.get_running_loop().time()
            status = RunStatus.CANCELLED if error is None else RunStatus.FAILED
            result = RunResult(query_id=run_id, query=query, mode=mode, status=status,
                               error="run cancelled" if error is None else f"internal error: {error!r}",
                               started_at=now, finished_at=now)
            emit(ev.RunFinished(result))
        else:
            result = task.result()
        self.finished[run_id] = result
        while len(self.finished) > self.max_runs:
            self.finished.popitem(last=False)
        self.metrics.record(result)

    async def outcome(self, handle: RunHandle) -> RunResult:
        """The run's result; if the caller is cancelled meanwhile, the run is cancelled too."""
        try:
            return await handle.result()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                handle.cancel()
                raise
        except Exception:   # noqa: BLE001  # recorded as a failed run by _settled
            pass
        result = self.finished.get(handle.query_id)
        if result is None:
            raise ApiError(500, "internal", f"run {handle.query_id} ended without a result")
        return result

    def lookup(self, run_id: str) -> RunHandle | RunResult:
        if (handle := self.running.get(run_id)) is not None:
            return handle
        if (result := self.finished.get(run_id)) is not None:
            self.finished.move_to_end(run_id)
            return result
        raise ApiError(404, "not_found", f"no run {run_id!r} (unknown, or evicted from the last {self.max_runs})")

    async def shutdown(self) -> list[str]:
        """Refuse new runs, cancel every run in flight and wait for each to settle; their ids."""
        self.closed = True
        handles = list(self.running.values())
        for handle in handles:
            handle.cancel()
        for handle in handles:
            with contextlib.suppress(ApiError):
                await self.outcome(handle)
        return [h.query_id for h in handles]


# -- request parsing -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class RunRequest:
    query: str
    deadline_s: float | None
    stream: bool
    mode: str


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"request body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"request body exceeds the limit of {limit} bytes")
    return bytes(body)


def parse_run_request(body: bytes) -> RunRequest:
    """Validate a ``POST /v1/runs`` body; every mistake is a 400 (syntax) or 422 (fields)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", "body must be a JSON object")
    unknown = sorted(set(data) - {"query", "deadline_s", "stream", "mode"})
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown fields: {', '.join(unknown)}")
    query = data.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ApiError(422, "invalid_query", "query must be a non-empty string")
    deadline = data.get("deadline_s")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))
                                 or not math.isfinite(deadline) or deadline <= 0):
        raise ApiError(422, "invalid_deadline", f"deadline_s must be a positive number of seconds, got {deadline!r}")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(422, "invalid_request", f"stream must be true or false, got {stream!r}")
    mode = data.get("mode", "compiled")
    if mode not in MODES:
        raise ApiError(422, "invalid_mode", f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return RunRequest(query, None if deadline is None else float(deadline), stream, mode)


# -- routes ----------------------------------------------------------------------------------
class _Service:
    """The route handlers, over one registry, pool and auth setting."""

    def __init__(self, registry: RunRegistry, pool: EndpointPool | None, token: str | None,
                 max_body_bytes: int) -> None:
        self.registry = registry
        self.pool = pool
        self._token = None if token is None else token.encode()
        self.max_body_bytes = max_body_bytes

    def guarded(self, handler: Handler) -> Handler:
        """``handler`` behind the bearer token (if one is set), with ApiError turned into JSON."""

        async def endpoint(request: Request) -> Response:
            try:
                self._authorize(request)
                return await handler(request)
            except ApiError as exc:
                return exc.response()

        return endpoint

    def _authorize(self, request: Request) -> None:
        if self._token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            raise ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required")

    async def create_run(self, request: Request) -> Response:
        req = parse_run_request(await _read_body(request, self.max_body_bytes))
        if req.stream:
            return self._stream_run(req)
        try:
            handle = self.registry.start(req.query, req.deadline_s, req.mode)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from exc
        result = await self.registry.outcome(handle)
        return JSONResponse({"id": result.query_id, **result.model_dump(mode="json")},
                            headers={"x-run-id": result.query_id})

    def _stream_run(self, req: RunRequest) -> Response:
        queue: asyncio.Queue[ev.Event] = asyncio.Queue()
        try:
            handle = self.registry.start(req.query, req.deadline_s, req.mode, queue.put_nowait)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from exc
        return StreamingResponse(_sse(handle, queue), media_type="text/event-stream",
                                 headers={"x-run-id": handle.query_id, "cache-control": "no-cache"})

    async def get_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        found = self.registry.lookup(run_id)
        if isinstance(found, RunHandle):
            return JSONResponse({"id": run_id, "state": "running"})
        return JSONResponse({"id": run_id, "state": "finished", "result": found.model_dump(mode="json")})

    async def delete_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        found = self.registry.lookup(run_id)
        if isinstance(found, RunHandle):
            found.cancel()
            return JSONResponse({"id": run_id, "state": "cancelling"}, status_code=202)
        return JSONResponse({"id": run_id, "state": "finished", "status": found.status.value})

    async def endpoints(self, request: Request) -> Response:
        snaps = self.pool.snapshot() if self.pool is not None else []
        return JSONResponse([jsonable(s) for s in snaps])

    async def metrics(self, request: Request) -> Response:
        text = self.registry.metrics.render(len(self.registry.running), self.pool)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 / 405 in the same JSON error shape as the API's."""
    status = getattr(exc, "status_code", 500)
    return ApiError(status, "not_found" if status == 404 else "http_error", str(getattr(exc, "detail", exc))).response()


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _sse(handle: RunHandle, queue: "asyncio.Queue[ev.Event]") -> AsyncIterator[str]:
    """The run's events as SSE until RunFinished; if the client leaves first, cancel the run."""
    try:
        while True:
            event = await queue.get()
            yield event_json(event)
            if isinstance(event, ev.RunFinished):
                return
    finally:
        handle.cancel()   # no-op once finished


def create_app(orchestrator: Orchestrator, *, pool: EndpointPool | None = None, token: str | None = None,
               max_body_bytes: int = 64_000, max_runs: int = 10_000,
               max_in_flight: int | None = None) -> Starlette:
    """The ASGI app serving ``orchestrator`` (see the module docstring for routes and embedding).

    Args:
        orchestrator: runs every query; its registered tools are the only ones callers can use.
        pool: shown by ``/v1/endpoints`` and ``/metrics``; the app does not close it.
        token: if set, every route but ``/healthz`` needs ``Authorization: Bearer <token>``.
        max_body_bytes: larger request bodies are refused with 413.
        max_runs: finished runs kept for ``GET /v1/runs/{id}`` (least recently used dropped).
        max_in_flight: runs executing at once; a new run past it gets 429 (None: no cap, only
            the pool's own admission control, whose ``OverloadedError`` ends a run as failed).

    >>> # app = create_app(Orchestrator(tools=[search], llm=pool), pool=pool, token="s3cret")
    >>> # uvicorn.run(app, host="127.0.0.1", port=8080)
    """
    if max_body_bytes < 1 or max_runs < 1 or (max_in_flight is not None and max_in_flight < 1):
        raise ValueError("max_body_bytes, max_runs and max_in_flight must be >= 1")
    registry = RunRegistry(orchestrator, max_runs, max_in_flight)
    service = _Service(registry, pool, token, max_body_bytes)
    g = service.guarded
    routes = [
        Route("/v1/runs", g(service.create_run), methods=["POST"]),
        Route("/v1/runs/{run_id}", g(service.get_run), methods=["GET"]),
        Route("/v1/runs/{run_id}", g(service.delete_run), methods=["DELETE"]),
        Route("/v1/endpoints", g(service.endpoints), methods=["GET"]),
        Route("/metrics", g(service.metrics), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.shutdown_report = []
        try:
            yield
        finally:
            cancelled = await registry.shutdown()
            app.state.shutdown_report = cancelled
            if cancelled:
                log.warning("fleetcall: shutdown cancelled %d run(s) in flight: %s", len(cancelled), ", ".join(cancelled))

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.registry = registry
    app.state.shutdown_report = []
    return app
