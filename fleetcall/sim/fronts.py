"""The two fronts of an :class:`~fleetcall.sim.emulator.EmulatedEndpoint`.

* :class:`EmulatorTransport`, an ``httpx`` transport: no sockets, no threads, so a whole fleet
  runs in-process under :func:`fleetcall.vclock.run_virtual`; SSE bytes come out as the engine
  produces tokens, so a streaming client observes the emulated TTFT.
* :func:`create_app`, a Starlette app for uvicorn (``fleetcall emulate``), in real time.

Both call the endpoint's one core handler, :meth:`EmulatedEndpoint.handle`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Send

from fleetcall.sim.emulator import _JSON, EmulatedEndpoint, HTTPReply, _Crashed, _Dropped

__all__ = ["EmulatorTransport", "create_app"]


# ---- front 1: an httpx transport (in-process, virtual-clock safe) -----------------------------


class EmulatorTransport(httpx.AsyncBaseTransport):
    """Serves an :class:`EmulatedEndpoint` to an ``httpx.AsyncClient`` without sockets.

    Broken connections look like real ones: a crashed endpoint raises ``httpx.ConnectError``,
    a cut response ``httpx.RemoteProtocolError``; the client's read timeout is enforced on the
    wait for the response and for every chunk (``httpx.ReadTimeout``), in loop time.
    Closing a client leaves the endpoint running (several clients may share it); the
    endpoint's owner closes it.
    """

    def __init__(self, endpoint: EmulatedEndpoint) -> None:
        self.endpoint = endpoint

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("read")
        body = await request.aread()
        try:
            async with asyncio.timeout(timeout):
                reply = await self.endpoint.handle(request.method, request.url.path, body)
        except TimeoutError:
            raise httpx.ReadTimeout(f"{self.endpoint.name} did not answer within {timeout} s",
                                    request=request) from None
        except _Crashed as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except _Dropped as exc:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                            request=request) from exc
        if reply.stream is None:
            return httpx.Response(reply.status, headers=reply.headers, content=reply.body,
                                  request=request)
        return httpx.Response(reply.status, headers=reply.headers, request=request,
                              stream=_ReplyStream(reply.stream, timeout, request))


class _ReplyStream(httpx.AsyncByteStream):
    """The reply's SSE bytes for httpx, each read bounded by the read timeout. Its own async
    iterator (not an async generator): a client that stops reading at ``[DONE]`` leaves nothing
    for the loop to finalize."""

    def __init__(self, chunks: AsyncIterator[bytes], timeout: float | None,
                 request: httpx.Request) -> None:
        self._chunks = chunks
        self._timeout = timeout  # read timeout per chunk, seconds; None: unbounded
        self._request = request

    def __aiter__(self) -> _ReplyStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            if self._timeout is None:
                return await anext(self._chunks)
            async with asyncio.timeout(self._timeout):
                return await anext(self._chunks)
        except TimeoutError:
            raise httpx.ReadTimeout(f"no data for {self._timeout} s",
                                    request=self._request) from None
        except _Dropped as exc:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body "
                "(incomplete chunked read)", request=self._request) from exc

    async def aclose(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]  # an async generator


# ---- front 2: a Starlette app (real HTTP) -----------------------------------------------------


class _CuttableStream(StreamingResponse):
    """A streamed response that a ``_Dropped`` leaves incomplete: the server then closes the
    connection, which the client sees as a cut body."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except _Dropped:
            return
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]  # an async generator
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _cut_at_once() -> AsyncIterator[bytes]:
    raise _Dropped("connection cut")
    yield b""  # pragma: no cover  # makes this an async generator


class _ClientGone(Exception):
    """The HTTP client disconnected before its response started."""


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    raise _ClientGone


async def _unless_disconnected(request: Request,
                               work: Awaitable[HTTPReply]) -> HTTPReply | None:
    """``work``, cancelled (engine request and all) if the client disconnects first, as vLLM
    aborts requests whose client went away; None then. (Streams watch on their own.)"""
    try:
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(_until_disconnect(request))
            try:
                return await work
            finally:
                watcher.cancel()
    except BaseExceptionGroup as group:
        inner = group.exceptions[0]
        if isinstance(inner, _ClientGone):
            return None
        raise inner from None


def create_app(endpoint: EmulatedEndpoint, *,
               on_crash: Callable[[], None] | None = None) -> Starlette:
    """The endpoint as an ASGI app (every route goes to :meth:`EmulatedEndpoint.handle`).

    ``on_crash`` runs when the endpoint crashes (``fleetcall emulate`` exits the process, so
    connections really break); without it a crashed endpoint answers 503 and closes.
    """

    async def serve(request: Request) -> Response:
        body = await request.body()
        try:
            reply = await _unless_disconnected(
                request, endpoint.handle(request.method, request.url.path, body))
        except _Crashed as exc:
            if on_crash is not None:
                on_crash()
            return Response(str(exc), 503, headers={"connection": "close"})
        except _Dropped:
            return _CuttableStream(_cut_at_once(), 200, headers=_JSON)
        if reply is None:  # the client has gone; nobody reads this
            return Response(b"", 499)
        if reply.stream is None:
            return Response(reply.body, reply.status, headers=reply.headers)
        return _CuttableStream(reply.stream, reply.status, headers=reply.headers)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", serve, methods=methods)])

