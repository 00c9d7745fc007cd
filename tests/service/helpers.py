"""Shared fixtures of the service tests: an app over the parallelqa demo, an httpx client on it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette

from fleetcall.service.app import create_app
from fleetcall.demos import parallelqa
from fleetcall.demos.common import scripted_model

TTFT_S = 0.05   # the scripted model's time to first token (tpot 0): fast, but not instant


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
