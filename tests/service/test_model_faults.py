"""The service when its agent's model misbehaves: a model raising SystemExit or ignoring its
cancellation fails (or times out) its own run, answered as JSON, and the service goes on taking
runs. Through httpx's ASGI transport, on the virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fleetcall import Chunk, LLMRequest, Orchestrator, tool
from fleetcall.demos.common import user_text
from fleetcall.service.app import create_app
from fleetcall.vclock import run_virtual

from tests.service.helpers import client, sse_events


@tool
async def echo(x: int) -> int:
    """Returns x."""
    return x


class Moody:
    """Plans one echo() and answers, unless the query names a fault: 'exit' raises SystemExit,
    'deaf' swallows every cancellation (four times, so that unfixed code ends, late)."""

    def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        return self._stream(request)

    async def _stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        query = user_text(request)
        if request.context.kind == "planner" and "exit" in query:
            raise SystemExit(5)
        if request.context.kind == "planner" and "deaf" in query:
            for _ in range(4):
                try:
                    await asyncio.sleep(1e6)
                except asyncio.CancelledError:
                    pass
        yield Chunk(text="1. echo(1)\n2. join()\n" if request.context.kind == "planner" else "Finish(one)")


def app(**kwargs):
    return create_app(Orchestrator([echo], Moody(), grace_s=1.0), **kwargs)


def test_a_model_raising_system_exit_fails_its_run_and_the_service_goes_on() -> None:
    """It used to answer a plain-text 500, and every later run a 503 'shutting down'."""
    async def main() -> None:
        async with client(app()) as c:
            r = await c.post("/v1/runs", json={"query": "please exit", "deadline_s": 30})
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "failed"
            assert r.json()["error"] == "planner LLM call failed: SystemExit: 5"
            streamed = await c.post("/v1/runs", json={"query": "exit again", "stream": True})
            assert sse_events(streamed.text)[-1][1]["result"]["status"] == "failed"
            chat = await c.post("/v1/chat/completions", json={"model": "fleetcall", "messages": [
                {"role": "user", "content": "exit"}]})
            assert chat.status_code == 500 and "SystemExit: 5" in chat.json()["error"]["message"]
            after = await c.post("/v1/runs", json={"query": "fine", "deadline_s": 30})
            assert after.status_code == 200 and after.json()["answer"] == "one"

    run_virtual(main())


def test_a_deaf_model_times_its_run_out_on_time_and_frees_its_slot() -> None:
    """It used to hold the request (and the one in-flight slot) forever."""
    async def main() -> None:
        async with client(app(max_in_flight=1)) as c:
            loop = asyncio.get_running_loop()
            start = loop.time()
            r = await c.post("/v1/runs", json={"query": "deaf", "deadline_s": 5})
            assert r.status_code == 200 and r.json()["status"] == "timed_out"
            assert loop.time() - start <= 6.0 + 1e-6   # deadline 5 + grace 1
            assert r.json()["llm_calls"][0]["abandoned"] is True
            after = await c.post("/v1/runs", json={"query": "fine", "deadline_s": 30})
            assert after.status_code == 200 and after.json()["answer"] == "one"

    run_virtual(main())
