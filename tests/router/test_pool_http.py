"""EndpointPool over real HTTP on 127.0.0.1: emulated GPUs served by uvicorn, in real time.

Each emulator is ``create_app(EmulatedEndpoint(...))`` under an in-process ``uvicorn.Server``
on a free port (the test owns the EmulatedEndpoint, so it can change its faults mid-run), except
the server that gets killed: that one is a ``fleetcall emulate`` subprocess, SIGKILLed. Every
test is bounded by ``asyncio.timeout``; time assertions are lower bounds on the loop clock only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn

from fleetcall.errors import LLMError
from fleetcall.llm.base import CallContext, Completion, LLMRequest, Message, complete
from fleetcall.router.client import RoutingTransport, make_http_client
from fleetcall.router.config import BreakerConfig, EndpointConfig, RetryConfig
from fleetcall.sim.emulator import EmulatedEndpoint, Faults
from fleetcall.sim.fronts import create_app
from fleetcall.sim.responders import Reply
from fleetcall.router.pool import EndpointPool
from tests.router.helpers import emulator_counter

T = TypeVar("T")
MODEL = "llama-3.2-1b"
GPU = "A100-80G"
TEST_TIMEOUT_S = 15.0


def run(coro: Coroutine[Any, Any, T], timeout_s: float = TEST_TIMEOUT_S) -> T:
    """Run on a real-time loop, failing (not hanging) past ``timeout_s``."""
    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await coro
    return asyncio.run(bounded())


def now() -> float:
    return asyncio.get_running_loop().time()


def ask(text: str = "hello", *, query: str = "q", max_tokens: int = 16, **fields: Any
        ) -> LLMRequest:
    return LLMRequest((Message("user", text),), CallContext(query_id=query, kind="planner"),
                      max_tokens=max_tokens, **fields)


class Recorder:
    """A responder that keeps each request body and the loop time it arrived; answers with
    ``reply(body)`` (default: a short fixed text)."""

    def __init__(self, reply: Any = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.times: list[float] = []
        self._reply = reply

    def __call__(self, body: dict[str, Any]) -> Reply:
        self.bodies.append(body)
        self.times.append(now())
        return self._reply(body) if self._reply else Reply(text="served over http")


@contextlib.asynccontextmanager
async def serving(endpoint: EmulatedEndpoint) -> AsyncIterator[str]:
    """Serve ``endpoint`` with uvicorn on a free 127.0.0.1 port; yields its ``/v1`` URL.

    The socket listens before uvicorn starts, so clients may connect at once."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(endpoint), log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn-{endpoint.name}")
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        async with asyncio.timeout(5):
            await task
        sock.close()
        await endpoint.aclose()


def endpoint_config(name: str, url: str, slots: int = 4) -> EndpointConfig:
    return EndpointConfig(name=name, base_url=url, model=MODEL, gpu=GPU, slots=slots)


def http_pool(urls: dict[str, str], *, slots: dict[str, int] | None = None,
              **kwargs: Any) -> EndpointPool:
    kwargs.setdefault("policy", "rr-fcfs")
    kwargs.setdefault("retry", RetryConfig(backoff_s=0.0, attempt_timeout_s=5.0,
                                           connect_timeout_s=1.0))
    return EndpointPool([endpoint_config(n, u, (slots or {}).get(n, 4)) for n, u in urls.items()],
                        **kwargs)


def emulated(name: str, faults: Faults | None = None, responder: Any = None) -> EmulatedEndpoint:
    return EmulatedEndpoint(GPU, MODEL, name=name, faults=faults, responder=responder)


def test_a_call_streams_over_http_with_measurements() -> None:
    async def main() -> tuple[list[tuple[float, Any]], float]:
        async with serving(emulated("gpu")) as url, http_pool({"gpu": url}) as pool:
            start = now()
            return [(now(), c) async for c in pool.stream(ask("stream me", max_tokens=32))], start

    chunks, start = run(main())
    texts = [c.text for _, c in chunks if c.text]
    assert len(texts) >= 2 and "".join(texts) == "Emulated answer to: stream me"
    final = chunks[-1][1]
    info = final.info
    assert info["endpoint"] == "gpu" and info["attempts"] == 1
    assert info["usage_reported"] is True and info["finish_reason"] == "stop"
    assert final.usage.completion_tokens == info["completion_tokens"] > 0
    assert 0 < info["ttft_s"] <= info["total_s"] <= chunks[-1][0] - start + 1e-6


def test_a_json_schema_response_format_is_passed_through() -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    recorder = Recorder(lambda body: Reply(text=json.dumps({"city": "Paris"})))

    async def main() -> Completion:
        async with serving(emulated("gpu", responder=recorder)) as url, \
                http_pool({"gpu": url}) as pool:
            return await complete(pool, ask("where?", max_tokens=64, response_format=schema))

    done = run(main())
    assert recorder.bodies[0]["response_format"] == schema
    assert json.loads(done.text) == {"city": "Paris"}


def test_tool_calls_are_passed_through_both_ways() -> None:
    tools = ({"type": "function", "function": {
        "name": "lookup", "description": "find a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},)
    choice = {"type": "function", "function": {"name": "lookup"}}
    recorder = Recorder(lambda body: Reply(tool_calls=[
        {"function": {"name": body["tools"][0]["function"]["name"],
                      "arguments": json.dumps({"city": "Paris"})}}]))

    async def main() -> Completion:
        async with serving(emulated("gpu", responder=recorder)) as url, \
                http_pool({"gpu": url}) as pool:
            return await complete(pool, ask("find Paris", max_tokens=64, tools=tools,
                                             tool_choice=choice))

    done = run(main())
    assert recorder.bodies[0]["tools"] == list(tools)
    assert recorder.bodies[0]["tool_choice"] == choice
    assert len(done.tool_calls) == 1
    call = done.tool_calls[0]
    assert call.name == "lookup" and json.loads(call.arguments) == {"city": "Paris"} and call.id
    assert done.info["finish_reason"] == "tool_calls"


def test_a_500_is_retried_on_the_other_endpoint() -> None:
    async def main() -> tuple[Completion, Any]:
        async with serving(emulated("bad", Faults(error_rate=1.0))) as bad, \
                serving(emulated("good")) as good, \
                http_pool({"bad": bad, "good": good}) as pool:
            done = await complete(pool, ask())
            return done, {s.name: s for s in pool.snapshot()}

    done, snapshot = run(main())
    assert done.info["endpoint"] == "good" and done.info["attempts"] == 2
    assert snapshot["bad"].failures == 1 and "injected server error" in snapshot["bad"].last_error


def test_a_429_retry_after_cools_the_endpoint_and_the_call_goes_elsewhere_at_once() -> None:
    recorder = Recorder()
    limited_ep = emulated("limited", Faults(rate_limit_rate=1.0, retry_after_s=30.0))

    async def main() -> tuple[Completion, list[str], float]:
        async with serving(limited_ep) as limited, \
                serving(emulated("good", responder=recorder)) as good, \
                http_pool({"limited": limited, "good": good}) as pool:
            done = await complete(pool, ask())
            placed = [(await complete(pool, ask(query=f"q{i}"))).info["endpoint"]
                      for i in range(3)]
            return done, placed, next(s for s in pool.snapshot() if s.name == "limited").cooling_s

    done, placed, cooling = run(main())
    assert done.info["endpoint"] == "good" and done.info["attempts"] == 2
    assert placed == ["good"] * 3                  # no call to the cooling endpoint
    assert emulator_counter(limited_ep, "fleetcall_emulator_http_requests_total", code="429") == 1
    assert 0 < cooling <= 30.0  # long: the three calls may take seconds on a loaded machine


def test_a_hang_past_the_attempt_timeout_is_retried_elsewhere() -> None:
    """The hung server holds the request; past the attempt timeout the call goes to ``good``.

    The attempt timeout bounds ``good``'s attempt too, so it is generous (3 s against the
    ~0.1 s ``good`` takes with both cores busy): a tight one made ``good`` time out on a
    loaded machine, and the retry went back to ``hung``. The virtual-clock twin in
    test_pool.py checks the timing exactly; this one checks the real socket path."""
    hung_ep = emulated("hung", Faults(hang_rate=1.0))

    async def main() -> tuple[Completion, float, Any]:
        retry = RetryConfig(backoff_s=0.0, attempt_timeout_s=3.0, connect_timeout_s=3.0)
        async with serving(hung_ep) as hung, serving(emulated("good")) as good, \
                http_pool({"hung": hung, "good": good}, retry=retry) as pool:
            start = now()
            done = await complete(pool, ask())
            return done, now() - start, next(s for s in pool.snapshot() if s.name == "hung")

    done, elapsed, hung_state = run(main())
    assert done.info["endpoint"] == "good" and done.info["attempts"] == 2
    assert elapsed >= 2.99
    assert "timed out" in hung_state.last_error and hung_state.failures == 1
    assert emulator_counter(hung_ep, "fleetcall_emulator_faults_injected_total", kind="hang") == 1


def test_the_breaker_opens_and_keeps_calls_away() -> None:
    async def main() -> tuple[str, list[str]]:
        async with serving(emulated("bad", Faults(error_rate=1.0))) as bad, \
                serving(emulated("good")) as good, \
                http_pool({"bad": bad, "good": good},
                          breaker=BreakerConfig(failures=2, cooldown_s=30.0)) as pool:
            for i in range(2):
                await complete(pool, ask(query=f"f{i}"))
            state = {s.name: s.breaker for s in pool.snapshot()}["bad"]
            placed = [(await complete(pool, ask(query=f"q{i}"))).info for i in range(4)]
            return state, [f"{i['endpoint']}/{i['attempts']}" for i in placed]

    state, placed = run(main())
    assert state == "open"
    assert placed == ["good/1"] * 4


def test_the_breaker_closes_after_the_cooldown_once_the_server_recovers() -> None:
    async def main() -> tuple[str, list[str]]:
        bad_ep = emulated("bad", Faults(error_rate=1.0))
        async with serving(bad_ep) as bad, serving(emulated("good")) as good, \
                http_pool({"bad": bad, "good": good},
                          breaker=BreakerConfig(failures=2, cooldown_s=0.3)) as pool:
            for i in range(2):
                await complete(pool, ask(query=f"f{i}"))
            bad_ep.faults = Faults()
            await asyncio.sleep(0.4)
            placed = [(await complete(pool, ask(query=f"q{i}"))).info["endpoint"]
                      for i in range(4)]
            return {s.name: s.breaker for s in pool.snapshot()}["bad"], placed

    state, placed = run(main())
    assert "bad" in placed
    assert state == "closed"


async def _start_emulate_process(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """``fleetcall emulate`` on a free port; returns the process and its ``/v1`` URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetcall.cli", "emulate", "--gpu", GPU, "--model", MODEL,
        "--host", "127.0.0.1", "--port", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    async with asyncio.timeout(10):
        line = (await proc.stdout.readline()).decode()
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert found, f"no URL in the start line {line!r}"
    return proc, found.group(0) + "/v1"


def test_calls_queued_at_a_killed_server_finish_on_the_other_one() -> None:
    """``doomed`` (a subprocess) holds every request 30 s before answering and runs one call at
    a time, so rr-fcfs leaves c0 running there and c2, c4 in its local queue. SIGKILL breaks
    c0's connection before any token: c0 is retried at ``good``; the breaker (1 failure) opens
    and c2, c4 are dispatched again to ``good`` without an attempt at the dead server."""

    async def main() -> tuple[list[Completion], Any, Any]:
        proc, doomed = await _start_emulate_process("--spike-rate", "1", "--spike-s", "30")
        try:
            async with serving(emulated("good")) as good, \
                    http_pool({"doomed": doomed, "good": good}, slots={"doomed": 1},
                              breaker=BreakerConfig(failures=1, cooldown_s=60.0),
                              retry=RetryConfig(backoff_s=0.0, attempt_timeout_s=10.0,
                                                connect_timeout_s=1.0)) as pool:
                calls = [asyncio.create_task(complete(pool, ask(f"c{i}", query=f"q{i}")))
                         for i in range(6)]
                await asyncio.gather(*calls[1::2])        # good's share is done
                before = next(s for s in pool.snapshot() if s.name == "doomed")
                proc.kill()
                done = await asyncio.gather(*calls)
                after = next(s for s in pool.snapshot() if s.name == "doomed")
                return list(done), before, after
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()

    done, before, after = run(main())
    assert (before.in_flight, before.queued) == (1, 2)
    assert [c.text for c in done] == ["Emulated answer to: c%d" % i for i in range(6)]
    assert all(c.info["endpoint"] == "good" for c in done)
    assert done[0].info["attempts"] == 2
    assert done[2].info["attempts"] == 1 and done[4].info["attempts"] == 1
    assert after.breaker == "open" and after.failures == 1


def test_every_endpoint_down_is_an_llm_error_naming_endpoint_and_attempts() -> None:
    """Nothing listens on the port: connection refused, retried, then a clear error."""
    sock = socket.create_server(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sock.close()

    async def main() -> None:
        async with http_pool({"dead": dead},
                             retry=RetryConfig(max_attempts=2, backoff_s=0.0,
                                               connect_timeout_s=1.0)) as pool:
            await complete(pool, ask())

    with pytest.raises(LLMError, match=r"endpoint 'dead' after 2 attempt\(s\): ConnectError"):
        run(main())


class _Connections(httpx.AsyncBaseTransport):
    """Real HTTP, noting the network stream (the TCP connection) each answer came on."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.streams: list[object] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.streams.append(response.extensions["network_stream"])
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_calls_one_after_another_reuse_one_connection() -> None:
    """The client reads a streamed answer to its end after ``[DONE]``, so the connection goes
    back to the pool (issue 12, CPU per call): before, every call opened and closed a TCP
    connection of its own."""
    wire = _Connections()

    async def main() -> list[str]:
        http = make_http_client(RoutingTransport(lambda: wire))
        async with serving(emulated("gpu")) as url, http_pool({"gpu": url}, http=http) as pool:
            return [(await complete(pool, ask(f"call {i}"))).text for i in range(5)]

    texts = run(main())
    assert texts == [f"Emulated answer to: call {i}" for i in range(5)]
    assert len(wire.streams) == 5 and len({id(s) for s in wire.streams}) == 1
