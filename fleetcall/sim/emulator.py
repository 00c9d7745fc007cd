"""Emulated GPUs behind an OpenAI-compatible endpoint, in-process or over real HTTP.

:class:`EmulatedEndpoint` wraps an :class:`~fleetcall.sim.engine.Engine` in what a vLLM
server answers: ``POST /v1/chat/completions`` (plain or SSE streamed, usage with cached prompt
tokens), ``GET /v1/models``, ``GET /health`` and ``GET /metrics`` (Prometheus text with vLLM's
metric names), vLLM's ``POST /reset_prefix_cache`` and SGLang's ``GET /get_load``. One core
handler, :meth:`EmulatedEndpoint.handle`, serves two fronts:

* :class:`~fleetcall.sim.fronts.EmulatorTransport`, an ``httpx`` transport: no sockets, no threads, so a whole fleet
  runs in-process under :func:`fleetcall.vclock.run_virtual`; SSE bytes come out as the engine
  produces tokens, so a streaming client observes the emulated TTFT::

      client = httpx.AsyncClient(transport=EmulatorTransport(ep), base_url="http://a100.emulated")

* :func:`~fleetcall.sim.fronts.create_app`, a Starlette app for uvicorn (``fleetcall emulate``), in real time.

What the answer says comes from a *responder* (``request body -> Reply``,
:mod:`fleetcall.sim.responders`); how long it takes comes
from the engine. :class:`Faults` injects errors, 429s, latency spikes, hangs, cut streams and
crashes, drawn from ``random.Random(seed)`` in request order, so runs are reproducible.

``speed=K`` runs the emulated GPU K times faster than the loop's clock (its engine's clock and
every duration it owns, latency spikes included, divided by K), while every figure it reports
stays the real GPU's: ``/metrics`` (TTFT, time per output token, request latency, busy
seconds) is measured on the engine's clock, and ``Retry-After`` is in emulated seconds. A client
that wants real-GPU figures from its own measurements runs its clock K times faster
(:mod:`fleetcall.bench.dilation`) or multiplies them by K.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fleetcall.errors import ConfigError, LLMError
from fleetcall.llm.base import Message, count_tokens
from fleetcall.gpumodel import perf
from fleetcall.router import prefix
from fleetcall.sim import filler
from fleetcall.sim.engine import DEFAULT_STREAM_INTERVAL_S, Engine, EngineRequest
from fleetcall.sim.timings import RequestTimings
from fleetcall.gpumodel.models import get_model
from fleetcall.sim.responders import (EchoResponder, LengthsResponder, Reply, Responder,
                                          ScriptedResponder, content_text as _content_text)

__all__ = ["EchoResponder", "EmulatedEndpoint", "Faults", "HTTPReply", "LengthsResponder", "Reply",
           "Responder", "ScriptedResponder"]

DEFAULT_MAX_TOKENS = 1024  # output limit when a request sets none (vLLM: the rest of the context)
_JSON = {"content-type": "application/json"}
_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache"}
_METRICS = "text/plain; version=0.0.4; charset=utf-8"   # what generate_latest writes


# ---- faults ------------------------------------------------------------------------------------


class Faults(BaseModel):
    """Failures to inject, each drawn independently per chat request (rates in [0, 1])."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(0.0, ge=0, le=1)     # answer ``error_status`` at once
    error_status: int = Field(500, ge=400, le=599)
    rate_limit_rate: float = Field(0.0, ge=0, le=1)  # answer 429 with Retry-After
    retry_after_s: float = Field(1.0, ge=0)
    spike_rate: float = Field(0.0, ge=0, le=1)     # wait ``spike_s`` before serving
    spike_s: float = Field(1.0, ge=0)
    hang_rate: float = Field(0.0, ge=0, le=1)      # never answer (until the client gives up)
    drop_rate: float = Field(0.0, ge=0, le=1)      # cut the connection after the first token
    crash_after: int | None = Field(None, ge=0)    # after this many chat requests, die


@dataclass(frozen=True, slots=True)
class _Draw:
    rate_limit: bool
    error: bool
    hang: bool
    spike: bool
    drop: bool

    @classmethod
    def of(cls, faults: Faults, rng: random.Random) -> "_Draw":
        """Five draws per request whatever is enabled, so one fault's rate does not shift
        the others' sequence."""
        u = [rng.random() for _ in range(5)]
        return cls(u[0] < faults.rate_limit_rate, u[1] < faults.error_rate,
                   u[2] < faults.hang_rate, u[3] < faults.spike_rate, u[4] < faults.drop_rate)


class _Crashed(Exception):
    """The emulated server is dead: the connection fails before any response."""


class _Dropped(Exception):
    """The connection is cut in the middle of a response."""


# ---- request bodies ------------------------------------------------------------------------------


class _ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class _ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[_ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    min_tokens: int = Field(0, ge=0)   # vLLM: no EOS before this many tokens
    ignore_eos: bool = False           # vLLM: generate until the token limit
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @property
    def limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS

    @model_validator(mode="after")
    def _min_below_max(self) -> "_ChatRequest":
        if self.min_tokens > self.limit:
            raise ValueError(f"min_tokens ({self.min_tokens}) must not exceed max_tokens "
                             f"({self.limit})")
        return self


# an opened chat: (streamed?, the engine's request, what it answers, its chunk fields, drop?)
_Opened = tuple[bool, EngineRequest, "_Answer", "_Meta", bool]


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the engine will generate for one request."""

    text: str                         # the whole content ("" with only tool calls)
    tokens: int                       # output tokens the engine generates (>= 1)
    tool_calls: tuple[dict[str, Any], ...]  # OpenAI tool-call dicts, with ids
    finish_reason: str                # "stop" | "length" | "tool_calls"


def _answer(reply: Reply, req: _ChatRequest, call_ids: Callable[[], str]) -> _Answer:
    """Fit a reply to the token limits: ``max_tokens`` cuts, ``min_tokens`` and ``ignore_eos``
    extend (with filler text), a reply without text or length fills ``max_tokens``."""
    limit = req.limit
    calls = tuple(_tool_call(c, call_ids) for c in reply.tool_calls or ())
    text = reply.text or ""
    if reply.output_tokens is not None:
        natural = reply.output_tokens
    elif reply.text is None and not calls:
        natural = limit
    else:
        natural = count_tokens(text) + sum(count_tokens(json.dumps(c["function"])) for c in calls)
    tokens = max(1, natural, req.min_tokens, limit if req.ignore_eos else 0)
    length = tokens >= limit and (natural > limit or req.ignore_eos or reply.text is None)
    tokens = min(tokens, limit)
    if not calls:
        text = _fit_text(text, tokens)
    reason = "length" if length else ("tool_calls" if calls else "stop")
    return _Answer(text, tokens, calls, reason)


def _fit_text(text: str, tokens: int) -> str:
    """``text`` cut or padded with filler to about ``tokens`` tokens."""
    have = count_tokens(text)
    if have < tokens:
        return text + (" " if text else "") + filler.filler_text(tokens - have - bool(text))
    if have > tokens:
        text = text[:tokens * prefix.CHARS_PER_TOKEN]
        words = list(itertools.islice(_WORDS.finditer(text), tokens + 1))
        if len(words) > tokens:  # many short words: cut after the tokens-th
            text = text[:words[tokens - 1].end()]
    return text


_WORDS = re.compile(r"\S+")
def _tool_call(call: Any, call_ids: Callable[[], str]) -> dict[str, Any]:
    if isinstance(call, dict):
        fn = call.get("function", call)
        return {"id": call.get("id") or call_ids(), "type": "function",
                "function": {"name": fn["name"], "arguments": fn.get("arguments", "{}")}}
    return {"id": call.id, "type": "function",  # a fleetcall ToolCall
            "function": {"name": call.name, "arguments": call.arguments}}


def _error(status: int, message: str, kind: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> HTTPReply:
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return HTTPReply(status, {**_JSON, **(headers or {})}, json.dumps(body).encode())


# ---- the endpoint --------------------------------------------------------------------------------


@dataclass(slots=True)
class HTTPReply:
    """A response of the core handler: a whole body, or a stream of SSE bytes."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None  # set for streamed responses (body unused)


@dataclass(slots=True)
class _Counters:
    requests: dict[int, int] = field(default_factory=dict)   # HTTP status -> chat requests
    faults: dict[str, int] = field(default_factory=dict)     # fault kind -> times injected
    generation_tokens: int = 0                               # output tokens of finished answers
    timings: RequestTimings = field(default_factory=RequestTimings)  # of answered requests


class _EndpointCollector(Collector):
    """Reads an endpoint's counters at scrape time (``families``: its ``_metric_families``)."""

    def __init__(self, families: Callable[[], list[Metric]]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families()

    def describe(self) -> list[Metric]:
        return []   # nothing to check at registration; each endpoint has its own registry


class EmulatedEndpoint:
    """One emulated model server: ``gpu`` x ``tp`` serving ``model``, vLLM-like over HTTP.

        >>> ep = EmulatedEndpoint("A100", "llama-3.1-8b")
        >>> ep.deployment.tp, ep.model_name
        (1, 'llama-3.1-8b')
    """

    def __init__(self, gpu: str, model: str, *, tp: int | None = None, name: str | None = None,
                 responder: Responder | None = None, faults: Faults | None = None,
                 seed: int = 0, block_tokens: int = 16, max_batch: int = 256,
                 stream_interval_s: float = DEFAULT_STREAM_INTERVAL_S,
                 speed: float = 1.0) -> None:
        tp = perf.default_tp(gpu, model) if tp is None else tp
        self.deployment = perf.Deployment.of(gpu, model, tp=tp)
        self.engine = Engine(self.deployment, block_tokens=block_tokens, max_batch=max_batch,
                             stream_interval_s=stream_interval_s, speed=speed)
        self.speed = self.engine.speed  # emulated-GPU seconds per loop second
        self.model_name = self.deployment.model.name
        self.name = name or f"emulated-{tp}x{self.deployment.gpu.name}-{self.model_name}"
        self.block_tokens = block_tokens
        self.responder: Responder = responder or EchoResponder()
        self.faults = faults or Faults()
        self._rng = random.Random(seed)
        self._counters = _Counters()
        self._chats = 0                 # chat requests received (crash_after counts these)
        self._ids = 0                   # ids of completions and tool calls, in order
        self.crashed = False            # True iff crash_after fired: every request now fails
        self._hung: set[asyncio.Future[None]] = set()  # hanging requests, failed by a crash
        self._metrics_registry = CollectorRegistry()   # this endpoint's own, not the process's
        self._metrics_registry.register(_EndpointCollector(self._metric_families))
        self._routes: dict[tuple[str, str], Callable[[bytes], Awaitable[HTTPReply]]] = {
            ("POST", "/v1/chat/completions"): self._chat, ("GET", "/v1/models"): self._models,
            ("GET", "/health"): self._health, ("GET", "/metrics"): self._metrics,
            ("POST", "/reset_prefix_cache"): self._reset_prefix_cache,
            ("GET", "/get_load"): self._get_load,
        }

    async def __aenter__(self) -> EmulatedEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Shut the engine down; later requests fail as if the server were gone."""
        await self.engine.aclose()

    async def handle(self, method: str, path: str, body: bytes = b"") -> HTTPReply:
        """Answer one HTTP request. Raises ``_Crashed`` / ``_Dropped`` for failures at the
        connection level, which each front turns into its own kind of broken connection."""
        if self.crashed:
            raise _Crashed(f"{self.name} has crashed")
        route = self._routes.get((method.upper(), path.rstrip("/") or "/"))
        if route is None:
            known = any(p == path.rstrip("/") for _, p in self._routes)
            return (_error(405, f"method {method} not allowed on {path}", "MethodNotAllowed")
                    if known else _error(404, f"no route {path}", "NotFoundError"))
        return await route(body)

    # ---- routes ----

    async def _health(self, body: bytes) -> HTTPReply:
        return HTTPReply(200, {}, b"")

    async def _models(self, body: bytes) -> HTTPReply:
        card = {"id": self.model_name, "object": "model", "created": 0,
                "owned_by": "fleetcall-emulator", "root": self.model_name,
                "max_model_len": self.engine.stats().kv_capacity_tokens}
        return HTTPReply(200, dict(_JSON), json.dumps({"object": "list", "data": [card]}).encode())

    async def _get_load(self, body: bytes) -> HTTPReply:
        """SGLang's ``GET /get_load`` (one entry per data-parallel rank; here one): what
        sglang-router's ``power_of_two`` polls. ``num_tokens``: KV tokens of the running
        requests plus the prompt and output tokens of the waiting ones."""
        s = self.engine.stats()
        load = {"dp_rank": 0, "num_reqs": s.running, "num_waiting_reqs": s.waiting + s.arriving,
                "num_tokens": s.kv_used_tokens + s.waiting_tokens}
        return HTTPReply(200, dict(_JSON), json.dumps([load]).encode())

    async def _reset_prefix_cache(self, body: bytes) -> HTTPReply:
        """vLLM's ``POST /reset_prefix_cache``: later requests find nothing cached (blocks of
        running requests stay theirs)."""
        dropped = self.engine.reset_prefix_cache()
        return HTTPReply(200, dict(_JSON), json.dumps({"dropped_tokens": dropped}).encode())

    async def _metrics(self, body: bytes) -> HTTPReply:
        return HTTPReply(200, {"content-type": _METRICS}, self.metrics_text().encode())

    def metrics_text(self) -> str:
        """Prometheus exposition text (prometheus-client, labels escaped), with vLLM's metric
        names where vLLM has one; every sample carries ``model_name``."""
        return generate_latest(self._metrics_registry).decode()

    def _metric_families(self) -> list[Metric]:
        """The endpoint's metrics now (a prometheus-client custom collector's ``collect``)."""
        s, c = self.engine.stats(), self._counters
        model = [self.model_name]
        gauges = [("vllm:num_requests_running", "Requests in the batch.", s.running),
                  ("vllm:num_requests_waiting", "Requests waiting.", s.waiting),
                  ("vllm:kv_cache_usage_perc", "KV-cache usage (1 = full).",
                   s.kv_used_tokens / s.kv_capacity_tokens)]
        counters = [("vllm:request_success", "Finished requests.", c.requests.get(200, 0)),
                    ("vllm:prompt_tokens", "Prompt tokens.", s.prompt_tokens),
                    ("vllm:generation_tokens", "Output tokens.", c.generation_tokens),
                    ("vllm:prefix_cache_queries", "Prompt tokens looked up.", s.prompt_tokens),
                    ("vllm:prefix_cache_hits", "Prompt tokens found cached.", s.cached_prompt_tokens)]
        out: list[Metric] = []
        for name, help_, value in gauges:
            gauge = GaugeMetricFamily(name, help_, labels=["model_name"])
            gauge.add_metric(model, value)
            out.append(gauge)
        for name, help_, value in counters:
            counter = CounterMetricFamily(name, help_, labels=["model_name"])
            counter.add_metric(model, value)
            out.append(counter)
        by_code = CounterMetricFamily("fleetcall_emulator_http_requests", "Chat requests by status.",
                                      labels=["model_name", "code"])
        for code, n in sorted(c.requests.items()):
            by_code.add_metric([self.model_name, str(code)], n)
        by_fault = CounterMetricFamily("fleetcall_emulator_faults_injected", "Faults injected by kind.",
                                       labels=["model_name", "kind"])
        for kind, n in sorted(c.faults.items()):
            by_fault.add_metric([self.model_name, kind], n)
        busy = CounterMetricFamily("fleetcall_emulator_busy_seconds",
                                   "Seconds the engine had work (emulated-GPU seconds).",
                                   labels=["model_name"])
        busy.add_metric(model, s.busy_s)
        speed = GaugeMetricFamily("fleetcall_emulator_speed",
                                  "Emulated-GPU seconds per real second (--speed).",
                                  labels=["model_name"])
        speed.add_metric(model, self.speed)
        return [*out, *c.timings.families(self.model_name), by_code, by_fault, busy, speed]

    def _count(self, status: int, fault: str | None = None) -> None:
        self._counters.requests[status] = self._counters.requests.get(status, 0) + 1
        if fault is not None:
            self._fault(fault)

    def _fault(self, kind: str) -> None:
        self._counters.faults[kind] = self._counters.faults.get(kind, 0) + 1

    def _next_id(self) -> str:
        self._ids += 1
        return f"{self._ids}"

    async def _chat(self, body: bytes) -> HTTPReply:
        opened = await self._open_chat(body)
        if isinstance(opened, HTTPReply):
            return opened
        stream, sub, answer, meta, drop = opened
        if stream:
            return HTTPReply(200, dict(_SSE), stream=self._sse(sub, answer, meta, drop))
        return await self._whole(sub, answer, meta, drop)

    async def _open_chat(self, body: bytes | dict[str, Any]) -> HTTPReply | _Opened:
        """Count the request, parse it (``body``: JSON bytes, or the object already parsed, as
        :mod:`fleetcall.sim.direct` hands it), draw its faults, submit it to the engine: an
        error reply, or what the answer's front (SSE, whole JSON, direct deltas) needs."""
        self._chats += 1
        if self.faults.crash_after is not None and self._chats > self.faults.crash_after:
            await self._crash()
        parsed = self._parse(body)
        if isinstance(parsed, HTTPReply):
            self._count(parsed.status)
            return parsed
        raw, req = parsed
        draw = _Draw.of(self.faults, self._rng)
        if draw.rate_limit:
            self._count(429, "rate_limit")
            return _error(429, "rate limit reached (emulated)", "RateLimitError",
                          headers={"retry-after": f"{self.faults.retry_after_s:g}"})
        if draw.error:
            self._count(self.faults.error_status, "error")
            return _error(self.faults.error_status, "injected server error (emulated)",
                          "InternalServerError")
        if draw.hang:
            self._fault("hang")
            await self._hang()
        if draw.spike:
            self._fault("spike")
            await asyncio.sleep(self.faults.spike_s / self.speed)
        started = self._serve(raw, req)
        if isinstance(started, HTTPReply):
            return started
        return (req.stream, *started, draw.drop)

    def _parse(self, body: bytes | dict[str, Any]) -> tuple[dict[str, Any], _ChatRequest] | HTTPReply:
        if isinstance(body, dict):
            raw = body
        else:
            try:
                raw = json.loads(body)
            except ValueError as exc:
                return _error(400, f"request body is not valid JSON: {exc}", "BadRequestError")
        if not isinstance(raw, dict):
            return _error(400, "request body must be a JSON object", "BadRequestError")
        try:
            req = _ChatRequest.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                 for e in exc.errors())
            first = ".".join(map(str, exc.errors()[0]["loc"])) or None
            return _error(400, f"invalid request: {problems}", "BadRequestError", first)
        if req.model is not None and not self._serves(req.model):
            return _error(404, f"The model `{req.model}` does not exist (this endpoint serves "
                          f"`{self.model_name}`).", "NotFoundError", "model")
        return raw, req

    def _serves(self, model: str) -> bool:
        if model == self.name:
            return True
        try:
            return get_model(model).name == self.model_name
        except ConfigError:
            return False

    async def _crash(self) -> None:
        """Die: the engine and every hanging or running request go with the process."""
        self.crashed = True
        for fut in self._hung:
            if not fut.done():
                fut.set_exception(_Crashed(f"{self.name} has crashed"))
        await self.engine.aclose()
        raise _Crashed(f"{self.name} crashed after {self.faults.crash_after} requests")

    async def _hang(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hung.add(fut)
        try:
            await fut  # only a crash or the client's cancellation ends it
        finally:
            self._hung.discard(fut)

    def _serve(self, raw: dict[str, Any],
               req: _ChatRequest) -> HTTPReply | tuple[EngineRequest, _Answer, _Meta]:
        """Ask the responder, submit to the engine: an error reply, or the submitted request."""
        try:
            reply = self.responder(raw)
            if isinstance(reply, str):  # a responder may answer with the text alone
                reply = Reply(text=reply)
            answer = _answer(reply, req, lambda: f"call_{self._next_id()}")
        except Exception as exc:  # a responder's bug is the server's error, not the client's
            self._count(500)
            return _error(500, f"responder failed: {exc!r}", "InternalServerError")
        text = prefix.prompt_text(Message(m.role, _content_text(m.content))  # type: ignore[arg-type]  # roles are validated above
                                  for m in req.messages)
        try:
            hashes, tokens = prefix.prompt_facts_for_endpoint(text, self.block_tokens)
            sub = self.engine.submit(max(1, tokens), answer.tokens, hashes, req.stream)
        except ValueError as exc:
            self._count(400)
            return _error(400, str(exc), "BadRequestError", "messages")
        except LLMError as exc:  # the engine was shut down: nobody is listening any more
            raise _Crashed(f"{self.name} is closed") from exc
        meta = _Meta(f"chatcmpl-emu-{self._next_id()}", int(asyncio.get_running_loop().time()),
                     self.model_name, sub.prompt, self.engine.now())
        return sub, answer, meta

    async def _whole(self, sub: EngineRequest, answer: _Answer, meta: _Meta,
                     drop: bool) -> HTTPReply:
        cached = 0
        try:
            async for event in sub:
                cached = event.cached_tokens
                if event.first:
                    meta.first_token_at = self.engine.now()
                if drop:
                    self._fault("drop")
                    raise _Dropped("connection cut after the first token")
        except LLMError as exc:  # the engine died under us: a crash
            raise _Dropped(str(exc)) from exc
        finally:
            sub.cancel()
        self._finished(answer, meta)
        message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
        if answer.tool_calls:
            message["tool_calls"] = list(answer.tool_calls)
        body = {"id": meta.id, "object": "chat.completion", "created": meta.created,
                "model": meta.model, "choices": [{"index": 0, "message": message,
                                                  "logprobs": None,
                                                  "finish_reason": answer.finish_reason}],
                "usage": _usage(meta.prompt, answer.tokens, cached)}
        return HTTPReply(200, dict(_JSON), json.dumps(body).encode())

    async def _sse(self, sub: EngineRequest, answer: _Answer, meta: _Meta,
                   drop: bool) -> AsyncIterator[bytes]:
        """SSE chunks in OpenAI's format, text split to follow the engine's token progress."""
        text, sent = answer.text, 0
        try:
            async for event in sub:
                parts: list[bytes] = []
                if event.first:
                    meta.first_token_at = self.engine.now()
                    parts.append(meta.chunk({"role": "assistant", "content": ""}))
                end = len(text) if event.done else len(text) * event.tokens // answer.tokens
                if end > sent:
                    parts.append(meta.chunk({"content": text[sent:end]}))
                    sent = end
                if drop:
                    self._fault("drop")
                    yield b"".join(parts)
                    raise _Dropped("stream cut after the first token")
                if event.done:
                    parts += self._closing(answer, meta, event.cached_tokens)
                yield b"".join(parts)
        except LLMError as exc:
            raise _Dropped(str(exc)) from exc
        finally:
            sub.cancel()

    def _closing(self, answer: _Answer, meta: _Meta, cached: int) -> list[bytes]:
        self._finished(answer, meta)
        parts = []
        if answer.tool_calls:
            calls = [{"index": i, **c} for i, c in enumerate(answer.tool_calls)]
            parts.append(meta.chunk({"tool_calls": calls}))
        parts.append(meta.chunk({}, answer.finish_reason))
        usage = {"id": meta.id, "object": "chat.completion.chunk", "created": meta.created,
                 "model": meta.model, "choices": [],
                 "usage": _usage(meta.prompt, answer.tokens, cached)}
        parts.append(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        return parts

    def _finished(self, answer: _Answer, meta: _Meta) -> None:
        self._count(200)
        self._counters.generation_tokens += answer.tokens
        done = self.engine.now()
        first = done if meta.first_token_at is None else meta.first_token_at
        self._counters.timings.record(first - meta.arrived, done - meta.arrived, answer.tokens)


class _Meta:
    """The fields every chunk of one completion repeats (the chunk's JSON around its delta is
    built once: streaming is the hot path)."""

    __slots__ = ("id", "created", "model", "prompt", "arrived", "first_token_at", "_head")

    def __init__(self, id: str, created: int, model: str, prompt: int, arrived: float) -> None:
        self.id = id
        self.created = created  # loop seconds (virtual under the virtual clock), not wall time
        self.model = model
        self.prompt = prompt    # prompt tokens
        self.arrived = arrived  # engine seconds when the request was submitted
        self.first_token_at: float | None = None  # engine seconds of its first token
        self._head = ('data: {"id": %s, "object": "chat.completion.chunk", "created": %d, '
                      '"model": %s, "choices": [{"index": 0, "delta": '
                      % (json.dumps(id), created, json.dumps(model))).encode()

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return b"".join((self._head, json.dumps(delta).encode(), b', "logprobs": null, '
                         b'"finish_reason": ', json.dumps(finish_reason).encode(), b"}]}\n\n"))


def _usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}
