"""The HTTP service: one :class:`~fleetcall.Orchestrator` (and optionally its pool) behind an ASGI app.

Routes (JSON in and out; errors are ``{"error": {"message", "type", "param", "code"}}``, OpenAI's
shape, with a 4xx/5xx; a 422 also lists ``fields``, see :mod:`fleetcall.service.requests`)::

    POST   /v1/runs        {"query": str, "deadline_s"?: float, "stream"?: bool, "mode"?: str}
                           (no deadline_s, or null: the orchestrator's default_deadline)
                           -> 200 the RunResult (plus "id"), or with "stream": true server-sent
                              events, one per orchestrator event, ending with RunFinished
    GET    /v1/runs/{id}   -> {"id", "state": "running"|"finished", "result"?}   (404 if unknown)
    DELETE /v1/runs/{id}   -> 202 {"id", "state": "cancelling"} (200 if already finished)
    POST   /v1/chat/completions  the agent as an OpenAI chat model (:mod:`fleetcall.service.openai_compat`)
    GET    /v1/models      -> the agent, as OpenAI lists models
    GET    /v1/endpoints   -> the pool's snapshot, a list of dicts ([] without a pool)
    GET    /healthz        -> {"status": "ok"} (never needs the token)
    GET    /metrics        -> Prometheus text (:mod:`fleetcall.service.metrics`)

Requests are pydantic models (:class:`~fleetcall.service.requests.RunRequest`): a body that is
not JSON is a 400, a field that breaks the rules (wrong type, NaN, out of range, unknown to
``/v1/runs``) a 422 naming it, a non-JSON ``Content-Type`` a 415, a body over
``max_body_bytes`` (``max_chat_body_bytes`` for chat completions) a 413, a wrong method a 405,
a run id of the wrong shape a 404.

Only the tools registered on the orchestrator can run: a request carries a query, never code or
tool definitions. Plan size is the orchestrator's ``max_tasks``; a configured ``token`` is
required as ``Authorization: Bearer <token>`` (401 otherwise, on every route but ``/healthz``).

Runs are tasks owned by the app (its :class:`RunRegistry`): a streamed run whose client goes
away is cancelled, and the app's lifespan shutdown cancels every run still in flight, waits for
each to settle, and lists their ids in ``app.state.shutdown_report``. Run ids are 128 random
bits. Each run logs its start and end at INFO on ``logging.getLogger("fleetcall.executor")``
(``run.start`` / ``run.end``, the run id as ``query_id``, see :mod:`fleetcall.logs`); the service
itself logs only a shutdown that cancelled runs (``service.shutdown``, WARNING).

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
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fleetcall import logs
from fleetcall.executor import events as ev
from fleetcall.executor.orchestrator import Orchestrator, RunHandle
from fleetcall.executor.result import RunResult
from fleetcall.observe import to_jsonable
from fleetcall.router.pool import EndpointPool
from fleetcall.service.metrics import CONTENT_TYPE, ServiceMetrics
from fleetcall.service.openai_compat import ChatFacade, as_openai
from fleetcall.service.requests import ApiError, RunRequest, check_run_id, read_request
from fleetcall.service.runs import RunRegistry

__all__ = ["create_app", "ApiError", "RunRegistry", "ServiceMetrics", "event_json", "jsonable"]

log = logging.getLogger(logs.SERVICE)

Handler = Callable[[Request], Awaitable[Response]]


# -- JSON of events and snapshots ------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types, by fleetcall's one rule for tool values
    (:func:`fleetcall.observe.to_jsonable`): dataclasses and pydantic models as dicts, enums as
    values, bytes as ``{"$bytes_b64": ...}``, NaN/inf as strings, anything else as its text."""
    return to_jsonable(value)


def event_json(event: ev.Event) -> str:
    """One orchestrator event as a server-sent event: ``event: <ClassName>`` and its JSON data."""
    data = json.dumps(jsonable(event), separators=(",", ":"))
    return f"event: {type(event).__name__}\ndata: {data}\n\n"



# -- routes ----------------------------------------------------------------------------------
class _Service:
    """The route handlers, over one registry, pool and auth setting."""

    def __init__(self, registry: RunRegistry, pool: EndpointPool | None, token: str | None,
                 max_body_bytes: int) -> None:
        self.registry = registry
        self.pool = pool
        self._token = None if token is None else token.encode()
        self.max_body_bytes = max_body_bytes

    def guarded(self, handler: Handler, *, openai: bool = False) -> Handler:
        """``handler`` behind the bearer token (if one is set), with ApiError turned into JSON
        (with OpenAI's error types if ``openai``)."""

        async def endpoint(request: Request) -> Response:
            try:
                self._authorize(request)
                return await handler(request)
            except ApiError as exc:
                return (as_openai(exc) if openai else exc).response()

        return endpoint

    def _authorize(self, request: Request) -> None:
        if self._token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            raise ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required",
                           headers={"www-authenticate": "Bearer"})

    async def create_run(self, request: Request) -> Response:
        req = await read_request(request, RunRequest, self.max_body_bytes)
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

    async def run_by_id(self, request: Request) -> Response:
        """``GET`` (and ``HEAD``) or ``DELETE /v1/runs/{id}``: one route, so a 405 lists both."""
        run_id = check_run_id(request.path_params["run_id"])
        found = self.registry.lookup(run_id)
        if request.method == "DELETE":
            return self._delete_run(run_id, found)
        if isinstance(found, RunHandle):
            return JSONResponse({"id": run_id, "state": "running"})
        return JSONResponse({"id": run_id, "state": "finished", "result": found.model_dump(mode="json")})

    @staticmethod
    def _delete_run(run_id: str, found: RunHandle | RunResult) -> Response:
        if isinstance(found, RunHandle):
            found.cancel()
            return JSONResponse({"id": run_id, "state": "cancelling"}, status_code=202)
        return JSONResponse({"id": run_id, "state": "finished", "status": found.status.value})

    async def endpoints(self, request: Request) -> Response:
        snaps = self.pool.snapshot() if self.pool is not None else []
        return JSONResponse([jsonable(s) for s in snaps])

    async def metrics(self, request: Request) -> Response:
        return Response(self.registry.metrics.render(), media_type=CONTENT_TYPE)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 / 405 in the same JSON error shape as the API's (405 keeps ``Allow``)."""
    status = getattr(exc, "status_code", 500)
    headers = getattr(exc, "headers", None)
    kind = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return ApiError(status, kind, str(getattr(exc, "detail", exc)), headers=headers).response()


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug in a handler: a JSON 500 (the exception itself is logged by the server)."""
    return ApiError(500, "internal", f"internal error: {type(exc).__name__}").response()


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
               max_body_bytes: int = 64_000, max_chat_body_bytes: int = 1_000_000, max_runs: int = 10_000,
               max_in_flight: int | None = None, name: str = "fleetcall") -> Starlette:
    """The ASGI app serving ``orchestrator`` (see the module docstring for routes and embedding).

    Args:
        orchestrator: runs every query; its registered tools are the only ones callers can use.
        pool: shown by ``/v1/endpoints`` and ``/metrics``; the app does not close it.
        token: if set, every route but ``/healthz`` needs ``Authorization: Bearer <token>``.
        max_body_bytes: larger request bodies are refused with 413.
        max_chat_body_bytes: the same for ``/v1/chat/completions``, whose clients (chat UIs,
            agent frameworks) send the whole conversation each time although the agent reads only
            the last user message: 1 MB, about 250k tokens of history.
        max_runs: finished runs kept for ``GET /v1/runs/{id}`` (least recently used dropped).
        max_in_flight: runs executing at once; a new run past it gets 429 (None: no cap, only
            the pool's own admission control, whose ``OverloadedError`` ends a run as failed).
        name: the agent's name: the ``model`` of ``/v1/chat/completions`` and ``/v1/models``.

    Raises:
        ValueError: a limit below 1, or a blank name.

    >>> # app = create_app(Orchestrator(tools=[search], llm=pool), pool=pool, token="s3cret")
    >>> # uvicorn.run(app, host="127.0.0.1", port=8080)
    """
    if (max_body_bytes < 1 or max_chat_body_bytes < 1 or max_runs < 1
            or (max_in_flight is not None and max_in_flight < 1)):
        raise ValueError("max_body_bytes, max_chat_body_bytes, max_runs and max_in_flight must be >= 1")
    if not name.strip():
        raise ValueError("name (the agent's model name) must not be blank")
    registry = RunRegistry(orchestrator, max_runs, max_in_flight, pool)
    service = _Service(registry, pool, token, max_body_bytes)
    chat = ChatFacade(registry, name, max_chat_body_bytes, jsonable)
    g = service.guarded
    routes = [
        Route("/v1/runs", g(service.create_run), methods=["POST"]),
        Route("/v1/runs/{run_id}", g(service.run_by_id), methods=["GET", "DELETE"]),
        Route("/v1/chat/completions", g(chat.completions, openai=True), methods=["POST"]),
        Route("/v1/models", g(chat.models, openai=True), methods=["GET"]),
        Route("/v1/models/{model:path}", g(chat.model, openai=True), methods=["GET"]),
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
                logs.event(log, logging.WARNING, "service.shutdown", cancelled=len(cancelled), runs=",".join(cancelled))

    handlers = {HTTPException: _http_error, Exception: _internal_error}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.registry = registry
    app.state.shutdown_report = []
    return app
