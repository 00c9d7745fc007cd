"""Shared helpers of the pool tests: requests, a fleet of test-owned emulated endpoints, snapshots.

:func:`fleet` builds a pool over :class:`EmulatedEndpoint` objects the test owns, reached through
the pool's public transport seam (``http=`` a client over a :class:`RoutingTransport`), so a test
can give ONE endpoint faults and change them mid-run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from fleetcall.llm.base import CallContext, LLMRequest, Message
from fleetcall.router.client import RoutingTransport, make_http_client
from fleetcall.router.config import EndpointConfig, RetryConfig
from fleetcall.router.pool import EndpointPool
from fleetcall.sim.emulator import EmulatedEndpoint, Faults
from fleetcall.sim.fronts import EmulatorTransport
from fleetcall.sim.responders import Reply, Responder
from fleetcall.vclock import run_virtual

T = TypeVar("T")
MODEL = "llama-3.2-1b"   # small: short emulated calls
POLICIES = ["rr-fcfs", "least-busy", "hexgen", "slack"]
NO_BACKOFF = RetryConfig(backoff_s=0.0)


def vrun(coro: Coroutine[Any, Any, T]) -> T:
    return run_virtual(coro)


def now() -> float:
    return asyncio.get_running_loop().time()


def ask(text: str = "hello", *, query: str = "q", kind: str = "planner",
        max_tokens: int | None = 16, **context: Any) -> LLMRequest:
    return LLMRequest((Message("user", text),), CallContext(query_id=query, kind=kind, **context),
                      max_tokens=max_tokens)


async def others() -> list[asyncio.Task[Any]]:
    """Tasks still pending a few loop turns from now, besides the caller and emulated engine
    drivers (which exit when idle); the turns let async-generator finalizers finish."""
    for _ in range(20):
        await asyncio.sleep(0)
    return [t for t in asyncio.all_tasks()
            if t is not asyncio.current_task() and not t.done()
            and t.get_name() != "fleetcall-engine"]


def states(pool: EndpointPool) -> dict[str, str]:
    return {s.name: s.breaker for s in pool.snapshot()}


def snap(pool: EndpointPool, name: str) -> Any:
    return next(s for s in pool.snapshot() if s.name == name)


@dataclass
class Server:
    """An emulated endpoint the test owns (faults may differ per server and change mid-run)."""

    name: str
    faults: Faults | None = None
    slots: int = 4
    gpu: str = "A100-80G"          # the emulated hardware
    responder: Responder | None = None
    config_gpu: str | None = None  # what the pool is told (default: gpu); "unknown" is allowed


@contextlib.asynccontextmanager
async def fleet(*servers: Server, **pool_kwargs: Any
                ) -> AsyncIterator[tuple[EndpointPool, dict[str, EmulatedEndpoint]]]:
    """A pool over ``servers``: ``http://<name>.test/v1`` endpoints whose host is routed to the
    test's own EmulatedEndpoint (no sockets: virtual-clock safe)."""
    pool_kwargs.setdefault("policy", "rr-fcfs")
    retry = pool_kwargs.setdefault("retry", NO_BACKOFF)
    routing = RoutingTransport()
    emulated: dict[str, EmulatedEndpoint] = {}
    configs = []
    for s in servers:
        emulated[s.name] = EmulatedEndpoint(s.gpu, MODEL, name=s.name, faults=s.faults,
                                            responder=s.responder)
        routing.add(f"{s.name}.test", EmulatorTransport(emulated[s.name]))
        configs.append(EndpointConfig(name=s.name, base_url=f"http://{s.name}.test/v1",
                                      model=MODEL, gpu=s.config_gpu or s.gpu, slots=s.slots))
    http = make_http_client(routing, retry=retry)
    pool = EndpointPool(configs, http=http, **pool_kwargs)
    try:
        yield pool, emulated
    finally:
        await pool.aclose()
        await http.aclose()
        for ep in emulated.values():
            await ep.aclose()


class Clocked:
    """A responder that notes the loop time at which each request reaches it."""

    def __init__(self, text: str = "ok") -> None:
        self.text = text
        self.times: list[float] = []

    def __call__(self, body: dict[str, Any]) -> Reply:
        self.times.append(now())
        return Reply(text=self.text)


def emulator_counter(server: EmulatedEndpoint, name: str, **labels: str) -> int:
    """The sum of a counter of the server's metrics over the series whose labels match."""
    total = 0.0
    for family in text_string_to_metric_families(server.metrics_text()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return int(total)


def chat_requests(server: EmulatedEndpoint) -> int:
    """Chat requests the server has received, whatever it answered (from its metrics)."""
    return emulator_counter(server, "fleetcall_emulator_http_requests_total")
