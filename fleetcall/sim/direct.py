"""The in-process path to an emulated endpoint: the pool's calls without HTTP, SSE or JSON.

Under the virtual clock a pool of emulated endpoints spends most of its time being an HTTP
client and server of itself: building an httpx request, encoding the body, the emulator
decoding it, encoding every engine event as SSE text, the client splitting and decoding it
again, one read timeout per chunk. :class:`DirectClient` is the pool's
:class:`~fleetcall.router.client.EndpointClient` for one :class:`EmulatedEndpoint` that skips
all of it: it hands the request body (the same object ``chat_body`` builds for HTTP) to the
endpoint's core handler, and reads back the deltas the SSE chunks would have carried
(:class:`DirectStream`). Everything else is the same code as over HTTP: the endpoint's parsing,
faults, responder, engine and counters; the client's ``_Answer`` (first and last delta times,
usage, tool calls, the final ``info``) and its error verdicts. The events reach the caller at
the same loop times, in the same task steps, so a run gives the same records either way
(``tests/sim/test_direct.py`` compares them, faults included).

The attempt's deadline is one timer per attempt (not one per read): it interrupts the wait in
progress, which fails as a read timeout does over HTTP (``attempt timed out after ... s``).
Requests that are not streamed go over the endpoint's HTTP transport as before, and so does
everything but chat completions (health probes, ``/metrics``). The body is handed over as it
is, not copied: a responder reads it and must not change it (``request.tools`` and the
messages' content are the caller's objects).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import httpx

from fleetcall.errors import EndpointError, LLMError
from fleetcall.llm.base import Chunk, LLMRequest, closing
from fleetcall.router.client import (_RETRYABLE_4XX, EndpointClient, _Answer, _Attempt,
                                     _server_message, chat_body, parse_retry_after)
from fleetcall.router.config import EndpointConfig
from fleetcall.sim.emulator import (EmulatedEndpoint, HTTPReply, _Answer as _Reply, _Crashed,
                                    _Dropped, _Meta, _usage)
from fleetcall.sim.engine import EngineRequest

__all__ = ["DirectClient", "DirectStream"]

# What each front's failure looks like to a client (the messages EmulatorTransport's gives)
_CUT_BODY = "peer closed connection without sending complete message body (incomplete chunked read)"
_DONE = None  # the item that stands for ``data: [DONE]``

# One engine event's deltas: content text, a ``chat.completion.chunk``-shaped payload (tool
# calls, finish reason, usage: what ``_Answer.apply_delta`` reads), or _DONE
Item = str | dict[str, Any] | None


class DirectStream:
    """The deltas of one streamed answer, an event of the engine at a time (a list of
    :data:`Item` per event: what one SSE read carries). Raises ``_Dropped`` when the stream
    is cut (a drop fault, the engine closed) and whatever :meth:`interrupt` was given."""

    __slots__ = ("_endpoint", "_sub", "_answer", "_meta", "_drop", "_sent", "_cut")

    def __init__(self, endpoint: EmulatedEndpoint, sub: EngineRequest, answer: _Reply,
                 meta: _Meta, drop: bool) -> None:
        self._endpoint = endpoint
        self._sub = sub
        self._answer = answer
        self._meta = meta
        self._drop = drop
        self._sent = 0        # characters of the answer's text sent so far
        self._cut = False     # True once a drop fault sent its one event

    def __aiter__(self) -> DirectStream:
        return self

    async def __anext__(self) -> list[Item]:
        if self._cut:
            self.close()
            raise _Dropped("stream cut after the first token")
        try:
            event = await self._sub.__anext__()
        except LLMError as exc:
            self.close()
            raise _Dropped(str(exc)) from exc
        except BaseException:  # the end, an interruption, a cancellation: the request goes
            self.close()
            raise
        endpoint, answer, meta = self._endpoint, self._answer, self._meta
        items: list[Item] = []
        if event.first:  # (the SSE front also sends the role here: no delta for a client)
            meta.first_token_at = endpoint.engine.now()
        text = answer.text
        end = len(text) if event.done else len(text) * event.tokens // answer.tokens
        if end > self._sent:
            items.append(text[self._sent:end])
            self._sent = end
        if self._drop:
            endpoint._fault("drop")
            self._cut = True
            return items
        if event.done:
            endpoint._finished(answer, meta)
            if answer.tool_calls:
                calls = [{"index": i, **c} for i, c in enumerate(answer.tool_calls)]
                items.append(_delta({"tool_calls": calls}, None))
            items.append(_delta({}, answer.finish_reason))
            items.append({"choices": [],
                          "usage": _usage(meta.prompt, answer.tokens, event.cached_tokens)})
            items.append(_DONE)
        return items

    def interrupt(self, error: BaseException) -> None:
        """Fail the wait in progress (or the next one) with ``error``."""
        self._sub._error = error
        self._sub._wake()

    def close(self) -> None:
        """Leave: the engine drops the request (idempotent)."""
        self._sub.cancel()


def _delta(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


async def open_chat(endpoint: EmulatedEndpoint, body: dict[str, Any]) -> HTTPReply | DirectStream:
    """``POST /v1/chat/completions`` of ``body`` (a JSON object) at ``endpoint`` without HTTP:
    a :class:`DirectStream` for a streamed answer, else the :class:`HTTPReply` (an error, or
    a whole answer). Raises ``_Crashed`` / ``_Dropped`` as the endpoint's handler does."""
    if endpoint.crashed:
        raise _Crashed(f"{endpoint.name} has crashed")
    opened = await endpoint._open_chat(body)
    if isinstance(opened, HTTPReply):
        return opened
    stream, sub, answer, meta, drop = opened
    if stream:
        return DirectStream(endpoint, sub, answer, meta, drop)
    return await endpoint._whole(sub, answer, meta, drop)


class DirectClient(EndpointClient):
    """An :class:`EndpointClient` whose streamed calls reach ``endpoint`` in-process (see the
    module docstring); its chunks, ``info`` and errors are the HTTP client's. ``http`` (routed
    to the endpoint's transport) still serves :meth:`complete` and health probes."""

    def __init__(self, config: EndpointConfig, http: httpx.AsyncClient,
                 endpoint: EmulatedEndpoint, *, timeout_s: float = 60.0) -> None:
        super().__init__(config, http, timeout_s=timeout_s)
        self.endpoint = endpoint

    async def stream(self, request: LLMRequest, *,
                     timeout_s: float | None = None) -> AsyncIterator[Chunk]:
        """As :meth:`EndpointClient.stream`, in-process."""
        body = chat_body(request, self.config.model, stream=True)
        if body.get("stream") is not True:  # extra_body turned streaming off: over HTTP
            async with closing(super().stream(request, timeout_s=timeout_s)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        attempt = self._begin(timeout_s)
        answer = _Answer(started=attempt.started)
        loop = asyncio.get_running_loop()
        stream = await self._open(body, attempt)
        # closed as soon as the caller stops reading: the engine drops the request at once
        async with closing(self._read(stream, attempt, answer, loop)) as reads:
            async for text, pieces in reads:
                yield Chunk(text=text, tool_deltas=pieces)
        usage, info = answer.result(self.name, request, loop.time(), streamed=True)
        info["model"] = self.config.model
        yield Chunk(usage=usage, tool_calls=answer.tool_calls(), info=info,
                    finish_reason=answer.finish_reason)

    async def _open(self, body: dict[str, Any], attempt: _Attempt) -> DirectStream:
        """Send the request; an error reply is raised as EndpointError, as over HTTP (a
        streamed request is answered by a stream or an error, never a whole answer)."""
        try:
            async with asyncio.timeout_at(attempt.deadline):
                opened = await open_chat(self.endpoint, body)
        except TimeoutError as exc:
            self._fail_transport(exc, attempt, yielded=False)
        except _Crashed as exc:
            self._fail_transport(httpx.ConnectError(str(exc)), attempt, yielded=False)
        if isinstance(opened, HTTPReply):
            self._fail_status(opened, attempt)
        return opened

    def _fail_status(self, reply: HTTPReply, attempt: _Attempt) -> NoReturn:
        response = httpx.Response(reply.status, headers=reply.headers, content=reply.body)
        status, headers = reply.status, response.headers
        raise EndpointError(
            self.name, attempt.scrub(_server_message(response) or response.reason_phrase),
            status=status, retryable=status >= 500 or status in _RETRYABLE_4XX,
            retry_after_s=parse_retry_after(headers.get("retry-after"), date=headers.get("date")),
            retry_after_header=headers.get("retry-after"))

    async def _read(self, stream: DirectStream, attempt: _Attempt, answer: _Answer,
                    loop: asyncio.AbstractEventLoop) -> AsyncIterator[tuple[str, tuple[Any, ...]]]:
        """The text and tool-call pieces of each delta until done, as ``_read_events`` yields
        them; the attempt's deadline interrupts the wait in progress."""
        yielded = False
        timer = loop.call_at(attempt.deadline, stream.interrupt, TimeoutError())
        try:
            while not answer.done:
                try:
                    items = await stream.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    self._fail_transport(exc, attempt, yielded=yielded)
                except _Dropped as exc:
                    cut = httpx.RemoteProtocolError(_CUT_BODY)
                    cut.__cause__ = exc
                    self._fail_transport(cut, attempt, yielded=yielded)
                now = loop.time()
                for item in items:
                    if item is _DONE:
                        answer.done = True
                        break
                    if isinstance(item, str):  # content: apply_delta's fold, without a payload
                        answer.deltas += 1
                        if answer.first_at is None:
                            answer.first_at = now
                        answer.last_at = now
                        answer.text.append(item)
                        yielded = True
                        yield item, ()
                        continue
                    got, pieces = answer.apply_delta(item, now)
                    if got or pieces:
                        yielded = True
                        yield got, pieces
        finally:
            timer.cancel()
            stream.close()
        if not answer.done and answer.finish_reason is None:
            raise EndpointError(self.name, "stream ended before the answer was complete",
                                retryable=not yielded, first_token_seen=yielded)
