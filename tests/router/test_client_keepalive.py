"""Kept-alive HTTP connections (issue 12, CPU per call): calls reuse them, and a request that a
reused connection broke under before any answer is sent again, never one whose answer began.

A tiny HTTP/1.1 server on 127.0.0.1 (asyncio streams) answers each chat completion with a short
SSE stream and keeps the connection open; a ``rule`` decides, per connection and per request on
it, to answer, to close the connection without a word (a server's idle timeout racing the
reuse), to reset it (RST), or to reset it after the answer began. Real sockets, real time:
every test is bounded by ``asyncio.timeout`` and asserts no duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpcore
import pytest
import uvicorn

from fleetcall.errors import EndpointError, LLMError
from fleetcall.llm.base import CallContext, LLMRequest, Message, complete
from fleetcall.router import client as client_module
from fleetcall.router.client import EndpointClient, RoutingTransport, http_transport, make_http_client
from fleetcall.router.config import EndpointConfig, RetryConfig
from fleetcall.router.pool import EndpointPool
from fleetcall.sim.emulator import EmulatedEndpoint
from fleetcall.sim.fronts import create_app

T = TypeVar("T")
TEST_TIMEOUT_S = 20.0
ANSWER = "kept alive"
# what the server does with a request: answer it, close or reset the connection before any
# answer, or reset it after the status line, headers and first text chunk went out
Action = str  # "answer" | "close" | "reset" | "reset-after-first-chunk"


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            return await coro
    return asyncio.run(bounded())


def ask(i: int) -> LLMRequest:
    return LLMRequest((Message("user", f"call {i}"),), CallContext(query_id=f"q{i}", kind="planner"),
                      max_tokens=4)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(payload: Any) -> bytes:
    return b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode()) + b"\n\n"


FIRST = _chunk(_event({"choices": [{"index": 0, "delta": {"content": ANSWER}}]}))
REST = _chunk(_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
              + _event(b"[DONE]")) + b"0\r\n\r\n"
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n")


@dataclass
class Server:
    """What the server saw: ``requests[c]`` is the number of requests connection ``c`` brought."""

    rule: Callable[[int, int], Action]  # (connection index, request number on it, from 1)
    requests: list[int] = field(default_factory=list)
    url: str = ""

    @property
    def total(self) -> int:
        return sum(self.requests)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(self.requests)
        self.requests.append(0)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
                await reader.readexactly(int(length.group(1)) if length else 0)
                self.requests[index] += 1
                action = self.rule(index, self.requests[index])
                if action == "close":
                    break
                if action == "reset":
                    _reset(writer)
                    return
                writer.write(HEAD + FIRST)
                await writer.drain()
                if action == "reset-after-first-chunk":
                    await asyncio.sleep(0.05)  # the client has the status line and first chunk
                    _reset(writer)
                    return
                writer.write(REST)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a RST (SO_LINGER 0), as a crashed or restarted server does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.asynccontextmanager
async def serving(rule: Callable[[int, int], Action]) -> AsyncIterator[Server]:
    server = Server(rule)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/v1"
    async with listener:
        yield server
        listener.close()


def pool_at(url: str, *, max_attempts: int = 1) -> EndpointPool:
    """One endpoint, one attempt per call (so a failed attempt fails the call), one slot."""
    retry = RetryConfig(max_attempts=max_attempts, backoff_s=0.0, attempt_timeout_s=5.0,
                        connect_timeout_s=1.0)
    config = EndpointConfig(name="gpu", base_url=url, model="llama-3.2-1b", gpu="A100-80G", slots=1)
    return EndpointPool([config], policy="rr-fcfs", retry=retry)


def test_calls_one_after_another_share_one_connection() -> None:
    """The client reads a streamed answer to its end after ``[DONE]``, so the connection goes
    back to httpx's pool: before, each call opened and closed a TCP connection of its own."""
    async def main() -> tuple[list[str], list[int]]:
        async with serving(lambda c, n: "answer") as server, pool_at(server.url) as pool:
            texts = [(await complete(pool, ask(i))).text for i in range(5)]
            return texts, server.requests

    texts, requests = run(main())
    assert texts == [ANSWER] * 5
    assert requests == [5]


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_reused_connection_broken_before_any_answer_is_resent(how: Action) -> None:
    """The server closes (RemoteProtocolError) or resets (ReadError) every kept-alive
    connection at its second request, as an idle timeout racing the reuse does: no call fails
    (one attempt each), each such request goes out once more on a fresh connection, and the
    connections are still reused (every one serves its first request)."""
    async def main() -> tuple[list[str], list[int]]:
        rule: Callable[[int, int], Action] = lambda c, n: "answer" if n == 1 else how  # noqa: E731
        async with serving(rule) as server, pool_at(server.url) as pool:
            texts = [(await complete(pool, ask(i))).text for i in range(6)]
            return texts, server.requests

    texts, requests = run(main())
    assert texts == [ANSWER] * 6
    # call 0 opens connection 0; every later call meets the previous call's connection, which
    # breaks at its second request, and is resent on a fresh one
    assert requests == [2] * 5 + [1]


def test_several_stale_connections_are_all_passed_over() -> None:
    """Three calls at once leave three kept-alive connections; the server resets each at its
    next request. The next call meets all three in turn and still succeeds, on a fresh one."""
    async def main() -> tuple[list[str], list[int]]:
        rule: Callable[[int, int], Action] = lambda c, n: "answer" if n == 1 else "reset"  # noqa: E731
        async with serving(rule) as server:
            config = EndpointConfig(name="gpu", base_url=server.url, model="llama-3.2-1b", gpu="A100-80G")
            async with make_http_client(RoutingTransport()) as http:
                client = EndpointClient(config, http, timeout_s=5.0)
                first = await asyncio.gather(*(complete(client, ask(i)) for i in range(3)))
                late = await complete(client, ask(9))
            return [c.text for c in [*first, late]], server.requests

    texts, requests = run(main())
    assert texts == [ANSWER] * 4
    assert requests == [2, 2, 2, 1]


def test_a_fresh_connection_reset_before_any_answer_is_not_resent() -> None:
    """A reset on a connection opened for the request is the endpoint's trouble, not a stale
    connection: the attempt fails (retryable, elsewhere) and the server saw the request once."""
    async def main() -> Server:
        async with serving(lambda c, n: "reset") as server, pool_at(server.url) as pool:
            with pytest.raises(LLMError, match="ReadError"):
                await complete(pool, ask(0))
            return server

    assert run(main()).requests == [1]


@pytest.mark.parametrize("reused", [False, True])
def test_a_request_whose_answer_began_is_never_resent(reused: bool) -> None:
    """The connection resets after the status line, headers and first text chunk: the attempt
    fails (first token seen, not retryable) and the server saw that request once -- on a
    fresh connection and on a kept-alive one alike (no duplicate output)."""
    async def main() -> tuple[Server, EndpointError]:
        def rule(c: int, n: int) -> Action:
            return "answer" if reused and n == 1 else "reset-after-first-chunk"

        async with serving(rule) as server:
            config = EndpointConfig(name="gpu", base_url=server.url, model="llama-3.2-1b", gpu="A100-80G")
            async with make_http_client(RoutingTransport()) as http:
                client = EndpointClient(config, http, timeout_s=5.0)
                if reused:
                    assert (await complete(client, ask(0))).text == ANSWER
                texts = []
                with pytest.raises(EndpointError) as caught:
                    async for chunk in client.stream(ask(1)):
                        texts.append(chunk.text)
                assert texts == [ANSWER]
            return server, caught.value

    server, error = run(main())
    assert server.requests == ([2] if reused else [1])
    assert error.first_token_seen and not error.retryable


def test_uvicorn_closing_idle_connections_fails_no_call() -> None:
    """A real server with a very short keep-alive timeout (uvicorn, 20 ms) and calls spaced
    around it, so kept-alive connections are closed before, after, and as they are reused:
    no call fails, with one attempt per call."""
    async def main() -> list[str]:
        endpoint = EmulatedEndpoint("A100-80G", "llama-3.2-1b", name="gpu")
        sock = socket.create_server(("127.0.0.1", 0))
        config = uvicorn.Config(create_app(endpoint), log_level="warning", lifespan="off",
                                timeout_keep_alive=0.02, timeout_graceful_shutdown=1)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        texts = []
        try:
            async with pool_at(url) as pool:
                for i in range(40):
                    texts.append((await complete(pool, ask(i))).text)
                    await asyncio.sleep((i % 8) * 0.006)  # 0 to 42 ms: around the timeout
        finally:
            server.should_exit = True
            await task
            sock.close()
            await endpoint.aclose()
        return texts

    texts = run(main())
    assert len(texts) == 40 and all(text.startswith("Emulated answer") for text in texts)


class _Inner(httpcore.AsyncNetworkStream):
    """A network stream over one end of a socket pair, as httpcore's anyio stream would be."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.asked: list[str] = []

    def get_extra_info(self, info: str) -> Any:
        self.asked.append(info)
        return self.sock if info == "socket" else f"inner {info}"


def test_http_transport_streams_tell_a_closed_idle_connection_from_the_socket() -> None:
    """httpcore asks every idle kept-alive connection whether it is readable (the server closed
    it) at every request; http_transport's streams answer from the socket found at connect
    (anyio built its attribute table, a getpeername() included, each time): readable once the
    peer closed it, and once it is closed; other questions go to httpcore's stream."""
    ours, theirs = socket.socketpair()
    inner = _Inner(ours)
    stream = client_module._Stream(inner)
    assert stream.get_extra_info("is_readable") is False
    theirs.close()
    assert stream.get_extra_info("is_readable") is True
    assert stream.get_extra_info("server_addr") == "inner server_addr"
    assert inner.asked == ["socket", "server_addr"]  # the socket asked for once
    ours.close()
    assert stream.get_extra_info("is_readable") is True
    transport = http_transport()
    assert isinstance(transport._pool._network_backend, client_module._Network)
