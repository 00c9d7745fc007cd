"""The OpenAI-compatible facade: a fleetcall agent served as if it were a chat model.

``POST /v1/chat/completions`` runs the agent; ``GET /v1/models`` lists it (``GET
/v1/models/{model}`` retrieves it). Any OpenAI client
(the official ``openai`` package, a chat UI, another agent framework) can use it::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="s3cret")   # the service's token
    reply = client.chat.completions.create(model="fleetcall", messages=[{"role": "user", "content": q}])
    reply.choices[0].message.content                                          # the agent's answer

What the request means:

* ``model``: the agent's name (``create_app(..., name=...)``, ``"fleetcall"`` by default); any
  other name is a 404 ``model_not_found`` in OpenAI's error shape.
* ``messages``: the last ``user`` message is the query (its text, or its text parts joined);
  earlier messages are not shown to the agent. No user message, or a last user message with a
  non-text part (an image) or no text, is a 422.
* ``stream``: the answer as chat-completion chunks (``data: {...}`` lines, then
  ``data: [DONE]``): a first chunk with the assistant role, one chunk with the whole answer (the
  joiner's answer arrives whole), one with ``finish_reason: "stop"``. ``stream_options.
  include_usage`` adds the final ``choices: []`` chunk with the usage, as OpenAI does.
* ``usage``: the run's token usage, every LLM call of the run (planner, joiner, LLM tools).
* ``n`` must be 1 (or absent): one run gives one answer. Every other OpenAI field
  (``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``tools``, ``user``, ...) is accepted and
  ignored: the agent's models are configured on its orchestrator, and its answer is not cut short.
* fleetcall's own fields (``extra_body`` in the openai client): ``deadline_s`` (seconds, as in
  ``POST /v1/runs``), ``mode`` (``compiled``, ``react``, ``parallel_calls``), ``progress``
  (``true``: while a streamed run works, chunks with an empty delta carry each run event under
  the extra field ``fleetcall``: ``{"event": "TaskStarted", "data": {...}}``; standard clients
  ignore it).
* Auth: the service's bearer token is the client's ``api_key``.

A run that does not answer is an error, never an answer-shaped message a client would take for
the agent's reply: ``failed`` is a 500 (``type: "server_error"``, ``code: "run_failed"``),
``timed_out`` a 504 (``code: "run_timed_out"``), ``cancelled`` a 503 (``code: "run_cancelled"``),
each with the run's error as the message and its id as ``run_id``, and ``x-should-retry: false``
(the openai client would otherwise retry a 5xx twice, running the agent three times). When
streaming, the same error object comes as the stream's last event (``data: {"error": {...}}``),
which the openai client raises as ``APIError``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from fleetcall.executor import events as ev
from fleetcall.executor.orchestrator import RunHandle
from fleetcall.executor.result import RunResult, RunStatus
from fleetcall.service.requests import ApiError, Deadline, Mode, read_request
from fleetcall.service.runs import RunRegistry

__all__ = ["ChatCompletionRequest", "ChatFacade"]

OWNER = "fleetcall"
# run status -> (HTTP status, OpenAI error type, code) of a run that did not answer
_RUN_ERRORS: dict[RunStatus, tuple[int, str, str]] = {
    RunStatus.FAILED: (500, "server_error", "run_failed"),
    RunStatus.TIMED_OUT: (504, "timeout", "run_timed_out"),
    RunStatus.CANCELLED: (503, "server_error", "run_cancelled"),
}
# HTTP status -> OpenAI's error type, for the service's own refusals on the facade's routes
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
                 413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
                 429: "rate_limit_error", 503: "server_error"}
_OPENAI_KINDS = {*_OPENAI_TYPES.values(), "server_error", "timeout"}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``: OpenAI's fields fleetcall reads, its own
    extensions; unknown fields are ignored (see the module docstring)."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False, frozen=True)

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Literal[1] | None = None                 # one run, one answer
    deadline_s: Deadline | None = None          # fleetcall: the run's budget, seconds from now
    mode: Mode = "compiled"                     # fleetcall: compiled plan or a baseline
    progress: bool = False                      # fleetcall: run events in streamed chunks

    def query(self) -> str:
        """The last user message's text; 422 if there is none, or it holds more than text."""
        last = next((m for m in reversed(self.messages) if m.role == "user"), None)
        if last is None:
            raise _bad_messages("no user message: the last user message is the agent's query")
        if isinstance(last.content, list):
            if any(p.type != "text" for p in last.content):
                kinds = sorted({p.type for p in last.content if p.type != "text"})
                raise _bad_messages(f"the last user message holds {', '.join(kinds)} parts; "
                                    "the agent reads text only")
            text = "\n".join(p.text or "" for p in last.content)
        else:
            text = last.content or ""
        if not text.strip():
            raise _bad_messages("the last user message has no text")
        return text


def _bad_messages(message: str) -> ApiError:
    return ApiError(422, "invalid_request_error", message, param="messages", code="invalid_messages")


def as_openai(error: ApiError) -> ApiError:
    """``error`` with OpenAI's error type for its status; the service's own type becomes its code."""
    if error.type in _OPENAI_KINDS:
        return error
    return ApiError(error.status, _OPENAI_TYPES.get(error.status, "server_error"), error.message,
                    param=error.param, code=error.code or error.type, fields=error.fields,
                    headers=error.headers, extra=error.extra)


def run_error(result: RunResult) -> ApiError:
    """The error of a run that did not answer (see the module docstring)."""
    status, type_, code = _RUN_ERRORS.get(result.status, (500, "server_error", "run_failed"))
    message = f"the agent's run {result.status.value}: {result.error or 'no answer'}"
    return ApiError(status, type_, message, code=code, extra={"run_id": result.query_id},
                    headers={"x-should-retry": "false", "x-run-id": result.query_id})


def _usage(result: RunResult) -> dict[str, int]:
    u = result.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens}


def _data(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


class ChatFacade:
    """The facade's two routes over one registry; the agent is called ``name``.

    ``to_json`` turns a run event into plain JSON types (the service's ``jsonable``)."""

    def __init__(self, registry: RunRegistry, name: str, max_body_bytes: int,
                 to_json: Callable[[Any], Any]) -> None:
        self.registry = registry
        self.name = name
        self.max_body_bytes = max_body_bytes
        self.to_json = to_json

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._card()]})

    async def model(self, request: Request) -> Response:
        """``GET /v1/models/{model}`` (the openai client's ``models.retrieve``): the agent's card,
        or a 404 ``model_not_found`` for any other name."""
        name = request.path_params["model"]
        if name != self.name:
            raise self._not_found(name)
        return JSONResponse(self._card())

    def _card(self) -> dict[str, object]:
        return {"id": self.name, "object": "model", "created": 0, "owned_by": OWNER}

    def _not_found(self, name: str) -> ApiError:
        return ApiError(404, "invalid_request_error", f"The model `{name[:100]}` does not exist; "
                        f"this service serves the agent `{self.name}` (GET /v1/models)",
                        param="model", code="model_not_found")

    async def completions(self, request: Request) -> Response:
        req = await read_request(request, ChatCompletionRequest, self.max_body_bytes)
        if req.model != self.name:
            raise self._not_found(req.model)
        query = req.query()
        if req.stream:
            queue: asyncio.Queue[ev.Event] = asyncio.Queue()
            handle = self._start(req, query, queue.put_nowait)
            include_usage = req.stream_options is not None and req.stream_options.include_usage
            chunks = self._chunks(handle, queue, include_usage, req.progress)
            return StreamingResponse(chunks, media_type="text/event-stream",
                                     headers={"x-run-id": handle.query_id, "cache-control": "no-cache"})
        result = await self.registry.outcome(self._start(req, query, None))
        if result.status is not RunStatus.ANSWERED or result.answer is None:
            raise run_error(result)
        body = {**self._head(result.query_id, "chat.completion"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer,
                                                     "refusal": None},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": _usage(result),
                OWNER: {"run_id": result.query_id, "status": result.status.value, "latency_s": result.latency}}
        return JSONResponse(body, headers={"x-run-id": result.query_id})

    def _start(self, req: ChatCompletionRequest, query: str, emit: ev.Emit | None) -> RunHandle:
        try:
            return self.registry.start(query, req.deadline_s, req.mode, emit)
        except ValueError as exc:
            raise ApiError(422, "invalid_request_error", str(exc)) from exc

    def _head(self, run_id: str, obj: str) -> dict[str, Any]:
        return {"id": f"chatcmpl-{run_id}", "object": obj, "created": int(time.time()), "model": self.name,
                "system_fingerprint": None}

    async def _chunks(self, handle: RunHandle, queue: "asyncio.Queue[ev.Event]", include_usage: bool,
                      progress: bool) -> AsyncIterator[str]:
        """The run as chat-completion chunks; if the client leaves first, the run is cancelled."""
        head = self._head(handle.query_id, "chat.completion.chunk")
        extra: dict[str, Any] = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None = None, more: dict[str, Any] | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return _data({**head, "choices": [choice], **extra, **(more or {})})

        try:
            yield chunk({"role": "assistant", "content": ""})
            while not isinstance(event := await queue.get(), ev.RunFinished):
                if progress:
                    yield chunk({}, more={OWNER: {"event": type(event).__name__, "data": self.to_json(event)}})
            result = event.result
            if result.status is not RunStatus.ANSWERED or result.answer is None:
                yield _data(run_error(result).body())
                return
            yield chunk({"content": result.answer})
            yield chunk({}, "stop")
            if include_usage:
                yield _data({**head, "choices": [], "usage": _usage(result)})
            yield "data: [DONE]\n\n"
        finally:
            handle.cancel()   # no-op once finished
