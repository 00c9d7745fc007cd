"""The HTTP side of one endpoint: an OpenAI-compatible chat client, and the transport seam.

One shared ``httpx.AsyncClient`` serves every endpoint of a pool. Its transport is a
:class:`RoutingTransport`, which hands a request to the transport registered for its URL's host
(an in-process emulated endpoint, a test's ``httpx.MockTransport``) and everything else to a real
``httpx.AsyncHTTPTransport``. So the same :class:`EndpointClient` talks to vLLM over TCP and to an
emulated GPU under the virtual clock, with no second code path::

    routing = RoutingTransport()
    routing.add(emulated_host("sim-a100"), emulator_transport)
    async with make_http_client(routing) as http:
        client = EndpointClient(config, http)
        async for chunk in client.stream(request, timeout_s=30):
            ...

Every call is measured on the loop's clock; the last chunk's ``info`` holds ``endpoint``, ``model``,
``ttft_s``, ``tpot_s``, ``total_s``, ``prompt_tokens``, ``completion_tokens``, ``cached_tokens``,
``finish_reason`` and ``usage_reported`` (False when the server sent no usage, nor llama.cpp's
``timings``, and the token counts are estimates). Streamed tool calls come out piece by piece as
``Chunk.tool_deltas`` (merged by index, a new id at an index starting a new call), and whole in the
last chunk's ``tool_calls``. Failures are :class:`~fleetcall.errors.EndpointError` with a ``retryable``
verdict; the API key is sent per request and scrubbed from every error text.

The per-attempt deadline is enforced with ``asyncio.timeout_at`` around each read, never around a
``yield``: a timeout scope spanning a yield would cancel the consumer's code instead of ours.

HTTP connections are kept alive (a streamed answer is read to its end after ``[DONE]``); a request
that a reused connection breaks under before any response is sent again on a fresh one, never a
request whose response began (see ``EndpointClient._send_until_answered``).
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import hashlib
import json
import math
import re
import select
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import httpcore
import httpx
from pydantic import SecretStr

from fleetcall.errors import EndpointError, VirtualClockError
from fleetcall.llm.base import (
    Chunk, Completion, LLMRequest, ModelInfo, ToolCall, ToolCallDelta, Usage, closing, count_tokens, prompt_tokens,
)
from fleetcall.router.config import EndpointConfig, RetryConfig
from fleetcall.router.sse import LineSplitter, SSEDecoder
from fleetcall.vclock import is_virtual

__all__ = [
    "EndpointClient", "RoutingTransport", "SSEDecoder", "emulated_host", "http_transport",
    "make_http_client", "parse_retry_after",
]

_RETRYABLE_4XX = (408, 429)
_MAX_ERROR_TEXT = 500  # characters of a server's error body quoted in an EndpointError
DRAIN_S = 1.0  # loop seconds a streamed answer's end is awaited after [DONE] (then: close it)
# A connection broke under a request before any answer came (the server closed or reset it)
_BROKEN = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_MAX_SENDS = 4  # sends of one request within an attempt: stale kept-alive connections, then fresh


# ----------------------------------------------------------------------------- transport seam


def http_transport(**options: Any) -> httpx.AsyncHTTPTransport:
    """``httpx.AsyncHTTPTransport(**options)`` whose connections answer httpcore's "is this idle
    kept-alive connection readable (closed by the server)?" cheaply: httpcore asks it of every
    idle connection in its pool at every request and every response's end, and anyio answers
    it by building the stream's whole attribute table, a ``getpeername`` system call included,
    each time (0.5 ms of CPU per call through the pool at 200 calls at once). Same connections,
    same answers; an httpx without the pool's network backend where this expects it gets the
    transport as it is."""
    transport = httpx.AsyncHTTPTransport(**options)
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, httpcore.AsyncNetworkBackend):
        pool._network_backend = _Network(backend)  # type: ignore[union-attr]
    return transport


class _Network(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, its streams wrapped in :class:`_Stream`."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_tcp(host, port, timeout, local_address,
                                                     socket_options))

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Stream(httpcore.AsyncNetworkStream):
    """A network stream whose ``is_readable`` polls the socket found once at connect time."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._socket is not None:
            return _readable(self._socket)
        return self._inner.get_extra_info(info)


def _readable(sock: socket.socket) -> bool:
    """True if a read would not block (data, or the peer closed it), or the socket is closed."""
    if sock.fileno() < 0:
        return True
    if not hasattr(select, "poll"):  # Windows
        return bool(select.select([sock], [], [], 0)[0])
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class RoutingTransport(httpx.AsyncBaseTransport):
    """Route each request by URL host to a registered transport, else to real HTTP.

    Real HTTP goes through one transport per origin (scheme, host and port), each built on
    first use by ``default_factory`` (an :func:`http_transport` unless given), so
    constructing this opens nothing, and each endpoint's kept-alive connections sit in a
    connection pool of their own: httpcore's pool does work per queued request and idle
    connection that grows with the square of the connections it holds (200 kept-alive
    connections to four endpoints in one pool made a call cost ~10 ms of CPU). Under the
    virtual clock an unrouted request raises VirtualClockError naming the host instead of
    trying a socket. Closing closes every registered transport and the default ones.
    """

    def __init__(self,
                 default_factory: Callable[[], httpx.AsyncBaseTransport] | None = None) -> None:
        self._factory = default_factory or http_transport
        # lower-case host -> transport that serves it
        self._routes: dict[str, httpx.AsyncBaseTransport] = {}
        # (scheme, host:port) -> the real-HTTP transport of that origin, built by its first request
        self._origins: dict[tuple[str, bytes], httpx.AsyncBaseTransport] = {}

    def add(self, host: str, transport: httpx.AsyncBaseTransport) -> None:
        """Serve requests to ``host`` with ``transport`` (replacing any earlier one)."""
        self._routes[host.lower()] = transport

    def remove(self, host: str) -> httpx.AsyncBaseTransport | None:
        """Stop routing ``host``; returns its transport, unclosed (its owner closes it)."""
        return self._routes.pop(host.lower(), None)

    def hosts(self) -> list[str]:
        return sorted(self._routes)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._routes.get(request.url.host)
        if transport is None:
            if is_virtual():
                raise VirtualClockError(f"no in-process transport is registered for host "
                                        f"{request.url.host!r}, and real HTTP cannot run under the "
                                        "virtual clock")
            origin = (request.url.scheme, request.url.netloc)
            transport = self._origins.get(origin)
            if transport is None:
                transport = self._origins[origin] = self._factory()
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        transports = [*self._routes.values(), *self._origins.values()]
        self._routes.clear()
        self._origins.clear()
        for transport in transports:
            await transport.aclose()


class _Cookies(httpx.Cookies):
    """httpx's cookies, minus their cost on answers that set none: ``extract_cookies`` first
    dresses the request and response up for ``http.cookiejar`` (a urllib request, an email
    message of every header), then finds no ``Set-Cookie`` to read. Same cookies either way."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class _PoolClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose cookie jar is :class:`_Cookies`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cookies = self.cookies  # through the setter below: the same cookies, in a _Cookies

    @property  # httpx's property, with a setter that keeps the jar a _Cookies
    def cookies(self) -> httpx.Cookies:
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._cookies = _Cookies(cookies)


def make_http_client(routing: RoutingTransport, *,
                     retry: RetryConfig | None = None) -> httpx.AsyncClient:
    """The pool's shared client over ``routing``, with explicit timeouts from ``retry``.

    httpx's timeouts bind real sockets only (connect, and read as a stall guard); the
    per-attempt limit is enforced by :class:`EndpointClient` on the loop clock. Closing the
    client closes ``routing`` and all it routes to."""
    retry = retry or RetryConfig()
    timeout = httpx.Timeout(retry.attempt_timeout_s, connect=retry.connect_timeout_s)
    return _PoolClient(transport=routing, timeout=timeout)


def emulated_host(name: str) -> str:
    """The host an emulated endpoint called ``name`` is reached at: never resolvable in DNS.

    A readable slug plus a hash of the exact name, so distinct names never share a host.

        >>> emulated_host("sim A100")
        'sim-a100-bcc77ac6.emulated.invalid'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "endpoint"
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}.emulated.invalid"


class _Connection:
    """httpcore's ``trace`` hook for one send: whether the request went out on a kept-alive
    connection an earlier request used (``reused``) or on one opened for it. Both stay False
    for an in-process transport, which sends no trace events."""

    __slots__ = ("opened", "reused")

    def __init__(self) -> None:
        self.opened = False  # a TCP connection was opened for this request
        self.reused = False  # the request was written to a connection opened before it

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.started":
            self.opened = True
        elif event.endswith(".send_request_headers.started"):
            self.reused = not self.opened


async def _drain(reads: AsyncIterator[str | bytes], until: float) -> None:
    """Read the rest of a streamed answer after its ``[DONE]`` (the end of the chunked body,
    normally in the same or the next read), so its HTTP connection goes back to the client's
    pool instead of being closed: a connection, TCP handshake and teardown per call otherwise.
    Gives up at loop time ``until`` or on any transport error (the connection is then closed,
    as without draining); nothing read is used."""
    try:
        async with asyncio.timeout_at(until):
            while await anext(reads, None) is not None:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


# ----------------------------------------------------------------------------- pure parsing


def parse_retry_after(value: str | None, *, date: str | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay seconds, or an HTTP date.

    An HTTP date is measured against the response's own ``Date`` header (the server's clock),
    so no wall clock is read; without one, a date cannot be turned into a delay and None is
    returned, as for anything else that is no finite number of seconds (``nan``, ``inf``,
    ``soon``). Negative waits become 0.

        >>> parse_retry_after("2.5")
        2.5
        >>> parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", date="Wed, 21 Oct 2015 07:28:00 GMT")
        30.0
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    if date is None:
        return None
    try:
        then = email.utils.parsedate_to_datetime(value)
        now = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    if (then.tzinfo is None) != (now.tzinfo is None):
        return None
    return max(0.0, (then - now).total_seconds())


def _server_message(response: httpx.Response) -> str:
    """The error message a server put in its body (OpenAI, vLLM, FastAPI shapes), else its text."""
    text = response.text
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:_MAX_ERROR_TEXT]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail")
            if message:
                return str(message)[:_MAX_ERROR_TEXT]
        elif isinstance(error, str):
            return error[:_MAX_ERROR_TEXT]
        if body.get("detail"):
            return str(body["detail"])[:_MAX_ERROR_TEXT]
    return text.strip()[:_MAX_ERROR_TEXT]


@dataclass(slots=True)
class _ToolCallParts:
    """One tool call being streamed: OpenAI sends its id and name once, arguments in pieces."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Answer:
    """Everything read from one response so far, and when (loop-clock seconds)."""

    started: float
    text: list[str] = field(default_factory=list)
    calls: list[_ToolCallParts] = field(default_factory=list)   # tool calls, in order of first delta
    slots: dict[int, int] = field(default_factory=dict)  # stream index -> position in ``calls`` it feeds
    call_ids: set[str] = field(default_factory=set)      # ids of ``calls``
    deltas: int = 0                  # content or tool-call deltas received (~tokens)
    first_at: float | None = None    # time of the first delta
    last_at: float | None = None     # time of the latest delta
    finish_reason: str | None = None
    done: bool = False               # "[DONE]" seen
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None  # llama.cpp's own counts, when it sends no usage

    def apply_delta(self, payload: Mapping[str, Any], now: float) -> tuple[str, tuple[ToolCallDelta, ...]]:
        """Fold one streamed ``chat.completion.chunk`` in; returns its text (maybe empty) and
        its tool-call pieces, each numbered by the call it belongs to."""
        self._note_counts(payload)
        choices = payload.get("choices") or []
        choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)
        if choice is None:
            return "", ()
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        delta = choice.get("delta") or {}
        text = _text_of(delta.get("content"))
        raw = delta.get("tool_calls") or []
        pieces = tuple(self._apply_tool_delta(d) for d in raw if isinstance(d, dict))
        if text or pieces:
            self.deltas += 1
            self.first_at = now if self.first_at is None else self.first_at
            self.last_at = now
            self.text.append(text)
        return text, pieces

    def _note_counts(self, payload: Mapping[str, Any]) -> None:
        if isinstance(payload.get("usage"), dict):
            self.usage = payload["usage"]
        if isinstance(payload.get("timings"), dict):
            self.timings = payload["timings"]

    def _apply_tool_delta(self, tool_delta: Mapping[str, Any]) -> ToolCallDelta:
        """One ``tool_calls`` entry: its stream ``index`` says which call it continues, but a new
        id at an index starts a new call (servers that reuse index 0 for every call); a server
        that sends no index continues the latest call unless the id is new."""
        index = tool_delta.get("index")
        raw_id = tool_delta.get("id")
        new_id = raw_id if isinstance(raw_id, str) else ""
        if isinstance(index, int) and not isinstance(index, bool):
            slot = self.slots.get(index)
            if slot is None or (new_id and self.calls[slot].id and self.calls[slot].id != new_id):
                slot = self.slots[index] = len(self.calls)
        elif not self.calls or (new_id and new_id not in self.call_ids):
            slot = len(self.calls)
        else:
            slot = len(self.calls) - 1
        if slot == len(self.calls):
            self.calls.append(_ToolCallParts())
        parts = self.calls[slot]
        if new_id:
            parts.id = new_id
            self.call_ids.add(new_id)
        function = tool_delta.get("function") or {}
        name = function.get("name") if isinstance(function, dict) else None
        parts.name = name if isinstance(name, str) and name else parts.name
        arguments = _arguments_of(function.get("arguments") if isinstance(function, dict) else None)
        if arguments:
            parts.arguments.append(arguments)
        return ToolCallDelta(slot, new_id, parts.name, arguments)

    def apply_message(self, payload: Mapping[str, Any], now: float) -> None:
        """Fold a whole (non-streamed) ``chat.completion`` in."""
        self._note_counts(payload)
        choices = payload.get("choices") or [{}]
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message") or {}
        self.finish_reason = choice.get("finish_reason")
        self.text.append(_text_of(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = (call.get("function") or {}) if isinstance(call, dict) else {}
            self.calls.append(_ToolCallParts(str(call.get("id") or ""), str(function.get("name") or ""),
                                             [_arguments_of(function.get("arguments"))]))
        self.first_at = self.last_at = now
        self.done = True

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(p.id or f"call_{i}", p.name, "".join(p.arguments))
                     for i, p in enumerate(self.calls))

    def _server_counts(self) -> tuple[int | None, int | None]:
        """(prompt, completion) tokens as the server counted them: its usage, else llama.cpp's
        ``timings`` (cached + computed prompt tokens, predicted tokens)."""
        usage = self.usage or {}
        prompt = _count(usage.get("prompt_tokens"))
        completion = _count(usage.get("completion_tokens"))
        timings = self.timings or {}
        if prompt is None and _count(timings.get("prompt_n")) is not None:
            prompt = timings["prompt_n"] + (_count(timings.get("cache_n")) or 0)
        if completion is None:
            completion = _count(timings.get("predicted_n"))
        return prompt, completion

    def result(self, endpoint: str, request: LLMRequest, now: float,
               *, streamed: bool) -> tuple[Usage, dict[str, Any]]:
        """Usage and the measurement ``info`` of the finished call."""
        usage = self.usage or {}
        prompt, completion = self._server_counts()
        reported = prompt is not None and completion is not None
        if prompt is None:
            prompt = prompt_tokens(request)
        if completion is None:
            completion = self.deltas if streamed else count_tokens("".join(self.text))
        details = usage.get("prompt_tokens_details") or {}
        cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
        ttft = tpot = None
        if streamed and self.first_at is not None and self.last_at is not None:
            ttft = self.first_at - self.started
            tpot = (self.last_at - self.first_at) / (completion - 1) if completion > 1 else None
        info = {"endpoint": endpoint, "ttft_s": ttft, "tpot_s": tpot, "total_s": now - self.started,
                "prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached,
                "finish_reason": self.finish_reason, "usage_reported": reported}
        return Usage(prompt, completion, 1, 0 if reported else 1), info


def _count(value: Any) -> int | None:
    """A token count a server reported: a non-negative int, else None (not reported). JSON
    readers take NaN, Infinity, floats, booleans and negative numbers too."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else None


def _text_of(content: Any) -> str:
    """A delta's or message's ``content`` as text (None, or a list of text parts, as some send)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _arguments_of(arguments: Any) -> str:
    """A tool call's ``arguments`` as JSON text (some servers send an object, not a string)."""
    if isinstance(arguments, str):
        return arguments
    if arguments is None:
        return ""
    try:
        return json.dumps(arguments)
    except (TypeError, ValueError, RecursionError):
        return ""


def chat_body(request: LLMRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The JSON body of a chat completion request; ``request.extra_body`` is merged in last."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "temperature": request.temperature,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.stop:
        body["stop"] = list(request.stop)
    if request.response_format is not None:
        body["response_format"] = request.response_format
    if request.tools:
        body["tools"] = list(request.tools)
    if request.tool_choice is not None:
        body["tool_choice"] = request.tool_choice
    if request.extra_body:
        body.update(request.extra_body)
    return body


def encode_body(body: dict[str, Any]) -> bytes:
    """The request body as UTF-8 JSON (as httpx's ``json=`` writes it), except that a lone UTF-16
    surrogate (model output can hold one: ``"\\ud800"`` decodes to it) becomes ``?`` instead of
    making the request unsendable."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8", "replace")


# ----------------------------------------------------------------------------- the endpoint client


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One attempt's secrets and limits, handed to every read it makes."""

    key: SecretStr | None  # API key for this attempt, read from the environment at its start
    started: float         # loop time the attempt began
    deadline: float        # loop time by which it must be over

    def scrub(self, text: str) -> str:
        """Remove the API key from text that may quote it (servers echo bad keys)."""
        secret = self.key.get_secret_value() if self.key is not None else ""
        return text.replace(secret, "[redacted]") if secret else text


class EndpointClient:
    """Chat completions at one endpoint, streamed or not, measured and with classified errors.

    ``base_url`` overrides the config's; an emulated endpoint defaults to
    ``http://{emulated_host(name)}/v1`` (register its transport under that host). ``environ``
    is where the API key variable is looked up, at each call (default ``os.environ``).
    Satisfies the :class:`~fleetcall.llm.base.LLM` protocol, with ``timeout_s`` as the default
    per-call limit.
    """

    def __init__(self, config: EndpointConfig, http: httpx.AsyncClient, *,
                 base_url: str | None = None, timeout_s: float = 60.0,
                 environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self._http = http
        self._timeout_s = timeout_s
        self._environ = environ
        if base_url is None:
            emulated = config.emulated is not None
            base_url = f"http://{emulated_host(config.name)}/v1" if emulated else config.base_url
        self.base_url = base_url.rstrip("/")

    @property
    def base_url(self) -> str:
        """The endpoint's OpenAI-compatible base URL (``.../v1``, no trailing slash)."""
        return self._base_url

    @base_url.setter
    def base_url(self, url: str) -> None:
        self._base_url = url
        self._chat_url = httpx.URL(f"{url}/chat/completions")  # parsed once, not per call

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model_info(self) -> ModelInfo:
        """What its config says about the model (JSON schemas enforced, context size)."""
        return self.config.model_info

    def _begin(self, timeout_s: float | None) -> _Attempt:
        """Read the key now (ConfigError if its variable is unset) and fix the deadline."""
        key = self.config.api_key(self._environ)
        started = asyncio.get_running_loop().time()
        limit = self._timeout_s if timeout_s is None else timeout_s
        return _Attempt(key, started, started + limit)

    async def stream(self, request: LLMRequest, *,
                     timeout_s: float | None = None) -> AsyncIterator[Chunk]:
        """Stream one chat completion: text chunks, then a final chunk with usage, tool calls, info.

        Raises EndpointError; ``first_token_seen`` tells whether text was already yielded."""
        attempt = self._begin(timeout_s)
        answer = _Answer(started=attempt.started)
        body = chat_body(request, self.config.model, stream=True)
        response = await self._send(body, attempt, accept="text/event-stream")
        try:
            if response.headers.get("content-type", "").startswith("application/json"):
                await self._read_json(response, attempt, answer)  # server ignored stream=true
                if "".join(answer.text):
                    yield Chunk(text="".join(answer.text))
            else:
                events = self._read_events(response, attempt, answer)
                async with closing(events):
                    async for text, pieces in events:
                        yield Chunk(text=text, tool_deltas=pieces)
        finally:
            await response.aclose()
        now = asyncio.get_running_loop().time()
        usage, info = answer.result(self.name, request, now, streamed=True)
        info["model"] = self.config.model   # the name the request sent
        yield Chunk(usage=usage, tool_calls=answer.tool_calls(), info=info,
                    finish_reason=answer.finish_reason)

    async def complete(self, request: LLMRequest, *, timeout_s: float | None = None) -> Completion:
        """One non-streamed chat completion; ``info`` has no ttft/tpot (None): nothing to time."""
        attempt = self._begin(timeout_s)
        answer = _Answer(started=attempt.started)
        body = chat_body(request, self.config.model, stream=False)
        response = await self._send(body, attempt, accept="application/json")
        try:
            await self._read_json(response, attempt, answer)
        finally:
            await response.aclose()
        now = asyncio.get_running_loop().time()
        usage, info = answer.result(self.name, request, now, streamed=False)
        info["model"] = self.config.model
        return Completion("".join(answer.text), usage, answer.tool_calls(), info, answer.finish_reason)

    # -- I/O, each read bounded by the attempt's deadline

    async def _send(self, body: dict[str, Any], attempt: _Attempt, *,
                    accept: str) -> httpx.Response:
        """POST the request; a non-2xx answer is read, closed and raised as EndpointError."""
        headers = {"accept": accept, "content-type": "application/json"}
        if attempt.key is not None:
            headers["authorization"] = f"Bearer {attempt.key.get_secret_value()}"
        request = self._http.build_request("POST", self._chat_url,
                                           content=encode_body(body), headers=headers)
        try:
            async with asyncio.timeout_at(attempt.deadline):
                response = await self._send_until_answered(request)
        except (TimeoutError, httpx.HTTPError) as exc:
            self._fail_transport(exc, attempt, yielded=False)
        if response.is_success:
            return response
        try:
            async with asyncio.timeout_at(attempt.deadline):
                await response.aread()
        except (TimeoutError, httpx.HTTPError) as exc:
            self._fail_transport(exc, attempt, yielded=False)
        finally:
            await response.aclose()
        status = response.status_code
        raise EndpointError(
            self.name, attempt.scrub(_server_message(response) or response.reason_phrase),
            status=status, retryable=status >= 500 or status in _RETRYABLE_4XX,
            retry_after_s=parse_retry_after(response.headers.get("retry-after"),
                                            date=response.headers.get("date")),
            retry_after_header=response.headers.get("retry-after"))

    async def _send_until_answered(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` until a response (its status and headers) arrives. A connection
        that breaks before any of it (:data:`_BROKEN`) is one the server closed or reset
        without answering: a kept-alive connection it timed out (llama.cpp's and uvicorn's
        idle timeouts race the reuse) or restarted under. Sent again: after a reused
        connection broke (each such break takes one stale connection out of httpx's pool, so
        it goes out on a fresh one once those are gone), and once after a fresh connection was
        closed without a word (RemoteProtocolError). Never after the response began: the
        caller reads that, and any break then fails the attempt. At most :data:`_MAX_SENDS`
        sends; the caller bounds them by the attempt's deadline."""
        resent_fresh = False
        for sends in range(1, _MAX_SENDS + 1):
            connection = _Connection()
            request.extensions["trace"] = connection
            try:
                return await self._http.send(request, stream=True)
            except _BROKEN as exc:
                silent_close = isinstance(exc, httpx.RemoteProtocolError) and not resent_fresh
                if sends == _MAX_SENDS or not (connection.reused or silent_close):
                    raise
                resent_fresh = resent_fresh or not connection.reused
        raise AssertionError("unreachable: the last send returns or raises")

    async def _read_json(self, response: httpx.Response, attempt: _Attempt,
                         answer: _Answer) -> None:
        try:
            async with asyncio.timeout_at(attempt.deadline):
                raw = await response.aread()
        except (TimeoutError, httpx.HTTPError) as exc:
            self._fail_transport(exc, attempt, yielded=False)
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise EndpointError(self.name, "response is not a JSON chat completion", retryable=True)
        if payload.get("error"):
            self._fail_in_band(payload["error"], attempt, yielded=False)
        answer.apply_message(payload, asyncio.get_running_loop().time())

    async def _read_events(self, response: httpx.Response, attempt: _Attempt,
                           answer: _Answer) -> AsyncIterator[tuple[str, tuple[ToolCallDelta, ...]]]:
        """Yield the text and tool-call pieces of each streamed delta until ``[DONE]``; fold the
        rest into ``answer``. One bounded read per chunk the server sends; its lines are split
        here as ``aiter_lines`` splits them, from UTF-8 (what SSE is; a declared charset is
        decoded by httpx, as before)."""
        loop = asyncio.get_running_loop()
        splitter, decoder = LineSplitter(), SSEDecoder()
        declared = "charset" in response.headers.get("content-type", "").lower()
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")  # unless declared
        yielded = False  # True iff text went out to the caller: a retry would repeat it
        source: AsyncIterator[str | bytes] = response.aiter_text() if declared else response.aiter_bytes()
        async with closing(source) as reads:
            while not answer.done:
                try:
                    async with asyncio.timeout_at(attempt.deadline):
                        read = await anext(reads, None)
                except (TimeoutError, httpx.HTTPError) as exc:
                    self._fail_transport(exc, attempt, yielded=yielded)
                if read is None:
                    tail = "" if declared else utf8.decode(b"", True)
                    lines: list[str | None] = [*splitter.decode(tail), *splitter.flush(), None]
                else:
                    lines = [*splitter.decode(read if isinstance(read, str) else utf8.decode(read))]
                for line in lines:
                    for data in decoder.feed(line) if line is not None else decoder.flush():
                        got, pieces = self._fold_event(data, answer, attempt, loop.time(),
                                                       yielded=yielded)
                        if got or pieces:
                            yielded = True
                            yield got, pieces
                    if answer.done:
                        break
                if read is None:
                    break
            if answer.done and "network_stream" in response.extensions:
                await _drain(reads, min(attempt.deadline, loop.time() + DRAIN_S))
        if not answer.done and answer.finish_reason is None:
            raise EndpointError(self.name, "stream ended before the answer was complete",
                                retryable=not yielded, first_token_seen=yielded)

    def _fold_event(self, data: str, answer: _Answer, attempt: _Attempt, now: float,
                    *, yielded: bool) -> tuple[str, tuple[ToolCallDelta, ...]]:
        if data.strip() == "[DONE]":
            answer.done = True
            return "", ()
        try:
            payload = json.loads(data)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            cause = f"malformed stream event: {attempt.scrub(data[:200])!r}"
            raise EndpointError(self.name, cause, retryable=not yielded, first_token_seen=yielded)
        if payload.get("error"):
            self._fail_in_band(payload["error"], attempt, yielded=yielded)
        return answer.apply_delta(payload, now)

    # -- errors

    def _fail_transport(self, exc: BaseException, attempt: _Attempt, *, yielded: bool) -> NoReturn:
        """Connection trouble or the attempt's deadline: retryable unless output went out."""
        if isinstance(exc, TimeoutError):
            cause = f"attempt timed out after {attempt.deadline - attempt.started:g} s"
        else:
            cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if yielded:
            cause = f"stream broke after output was yielded: {cause}"
        raise EndpointError(self.name, attempt.scrub(cause), retryable=not yielded,
                            first_token_seen=yielded) from exc

    def _fail_in_band(self, error: Any, attempt: _Attempt, *, yielded: bool) -> NoReturn:
        """An error object inside a 200 response (vLLM reports mid-stream failures this way)."""
        message = error.get("message", error) if isinstance(error, dict) else error
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) and 400 <= code < 600 else None
        retryable = not yielded and (status is None or status >= 500 or status in _RETRYABLE_4XX)
        raise EndpointError(self.name, attempt.scrub(f"server error: {message}"), status=status,
                            retryable=retryable, first_token_seen=yielded)
