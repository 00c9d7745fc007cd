"""Shared fixtures of the service tests: an app over the parallelqa demo, an httpx client on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from fleetcall.service.app import create_app
from fleetcall.demos import parallelqa
from fleetcall.demos.common import scripted_model

TTFT_S = 0.05   # the scripted model's time to first token (tpot 0): fast, but not instant
N_RUNS = 500    # concurrent streamed runs of the load test (and connections a served app takes)


def demo_app(*, pace: float = 0.01, **kwargs: Any) -> Starlette:
    """The parallelqa orchestrator (searches take 0.6 s * pace) served by a fresh app."""
    orchestrator = parallelqa.build(scripted_model(TTFT_S, 0.0), pace=pace)
    return create_app(orchestrator, **kwargs)


@contextlib.asynccontextmanager
async def client(app: Starlette, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``app`` in process, inside the app's lifespan."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fleet", headers=headers) as c:
            yield c


def sse_events(text: str) -> list[tuple[str, Any]]:
    """Parse a text/event-stream body into (event name, decoded data) pairs."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse Prometheus text with prometheus_client's own parser:
    (sample name, its labels as a frozenset) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    """One sample's value from :func:`metric_samples`, None if absent."""
    return samples.get((name, frozenset(labels.items())))


@contextlib.asynccontextmanager
async def serving(app: Starlette, token: str | None = None,
                  timeout: httpx.Timeout | float = 30) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` under uvicorn on a free port (lifespan on), and a client authorised for it
    (``timeout``: the client's, httpx's meaning)."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # keep-alive past the test: a pooled connection the server closed while idle would make the
    # next request on it fail with ReadError under a slow machine
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", backlog=N_RUNS * 2,
                                           timeout_keep_alive=120))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:   # uvicorn has no readiness event; callers bound this with a timeout
            await asyncio.sleep(0.01)
        limits = httpx.Limits(max_connections=N_RUNS + 10, max_keepalive_connections=N_RUNS + 10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=timeout,
                                     headers={"authorization": f"Bearer {token}"} if token else {}) as c:
            yield c
    finally:
        server.should_exit = True
        await task
        sock.close()


