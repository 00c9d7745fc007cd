"""``fleetcall bench pool``: what the pool's orchestration costs per LLM call, in CPU time.

Three kinds of endpoint (``--backend``, repeatable; all three by default):

``instant``
    An in-process httpx transport returns a short streamed chat completion at once (real
    clock), so a call's cost is all fleetcall: the scheduler core's placement (dispatcher,
    local queue, slots), the I/O shell's grant, report and timer handling, and the endpoint
    client's request building and SSE parsing.
``emulated``
    In-process emulated GPUs (``emulated://A100-80G/llama-3.1-8b``) on the virtual clock, as
    ``bench scheduler`` runs them: the process's CPU also pays for the emulated engines.
``http``
    ``fleetcall emulate`` servers on 127.0.0.1 (child processes this benchmark starts and stops
    by PID; ``--speed`` times faster than the GPU), over real HTTP on the real clock: the
    process's CPU is the pool and its HTTP client only, as a router's would be.

The same calls are also sent straight through bare
:class:`~fleetcall.router.client.EndpointClient` s in turn (no pool); the difference is the
pool's own cost per call, which must stay under :data:`FLOOR_US_PER_CALL` for every backend,
shape and policy. Costs are CPU seconds of this process (``time.process_time``: on a shared
machine the wall clock also counts other processes' turns); wall times are reported beside
them. Shapes: calls one after another; ``--concurrency`` calls at once (queues form once they
outnumber the slots). ``--repeat`` pairs of measurements, pool and bare clients back to back in
alternating order; the pool's own cost is the median of the pairs' differences.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import Any

import httpx

from fleetcall.bench import live, procs
from fleetcall.llm.base import CallContext, LLMRequest, Message, complete
from fleetcall.router.backend import Backend, BackendSpec, ClientBackend, resolve_backend
from fleetcall.router.client import EndpointClient, RoutingTransport, emulated_host, make_http_client
from fleetcall.router.config import EndpointConfig
from fleetcall.router.dispatcher import dispatcher_names
from fleetcall.router.prefix import DEFAULT_BLOCK_TOKENS
from fleetcall.router.pool import EndpointPool
from fleetcall.vclock import run_virtual
from fleetcall.bench.output import write_json

FLOOR_US_PER_CALL = 500.0  # issue 12: the pool's own CPU under 0.5 ms per call, every policy
MODEL = "llama-3.1-8b"
GPU = "A100-80G"
BACKENDS = ("instant", "emulated", "http")
DEFAULT_SPEED = 20.0  # the http backend's emulated GPUs run this many times faster than real
_ANSWER = b"".join(
    b"data: " + json.dumps(event).encode() + b"\n\n" for event in (
        {"choices": [{"index": 0, "delta": {"content": "an "}}]},
        {"choices": [{"index": 0, "delta": {"content": "instant answer"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}},
    )) + b"data: [DONE]\n\n"


class InstantTransport(httpx.AsyncBaseTransport):
    """Answers every chat completion with the same short streamed answer after one loop turn
    (as a socket read would yield), so concurrent calls really overlap and queues form."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        await asyncio.sleep(0)
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=_ANSWER, request=request)


def _configs(endpoints: int, slots: int) -> list[EndpointConfig]:
    return [EndpointConfig(name=f"instant-{i}", base_url=f"http://instant-{i}.bench/v1",
                           model=MODEL, gpu=GPU, slots=slots) for i in range(endpoints)]


def _emulated_configs(endpoints: int, slots: int) -> list[EndpointConfig]:
    return [EndpointConfig(name=f"emulated-{i}", base_url=f"emulated://{GPU}/{MODEL}", slots=slots)
            for i in range(endpoints)]


def _http_configs(urls: Sequence[str], slots: int) -> list[EndpointConfig]:
    return [EndpointConfig(name=f"http-{i}", base_url=f"{url}/v1", model=MODEL, gpu=GPU, slots=slots)
            for i, url in enumerate(urls)]


def _http(endpoints: int) -> httpx.AsyncClient:
    routing = RoutingTransport()
    for i in range(endpoints):
        routing.add(f"instant-{i}.bench", InstantTransport())
    return make_http_client(routing)


def _request(i: int, salt: str = "") -> LLMRequest:
    text = f"question {salt}{i}: how many endpoints does it take to answer instantly?"
    return LLMRequest((Message("user", text),), CallContext(query_id=f"q{i}", kind="planner",
                                                            deadline=None), max_tokens=8)


async def _drive(llm: Any, calls: int, concurrency: int, salt: str = "") -> tuple[float, float]:
    """(CPU, wall) seconds to serve ``calls`` calls, ``concurrency`` at a time (``salt`` makes
    the prompts unique to one measurement, so no engine's prefix cache has seen them)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            done = await complete(llm, _request(i, salt))
            if not done.text:
                raise RuntimeError(f"call {i} came back empty")

    cpu, wall = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for i in range(calls):
            group.create_task(one(i))
    return time.process_time() - cpu, time.perf_counter() - wall


class _RoundRobinClients:
    """The bare clients, one call each in turn: the same HTTP work without the pool."""

    def __init__(self, clients: list[EndpointClient]) -> None:
        self._clients, self._next = clients, 0

    def stream(self, request: LLMRequest) -> Any:
        client = self._clients[self._next % len(self._clients)]
        self._next += 1
        return client.stream(request)


def _in_process(configs: Sequence[EndpointConfig]) -> tuple[httpx.AsyncClient, list[Backend]]:
    """A client over in-process backends for ``configs`` (as a pool routes them), and the
    backends, for the bare clients of the ``emulated`` backend."""
    routing, backends = RoutingTransport(), []
    for i, config in enumerate(configs):
        factory = resolve_backend(config.base_url)
        assert factory is not None  # emulated:// URLs have one
        backend = factory(BackendSpec(config, i, DEFAULT_BLOCK_TOKENS))
        routing.add(emulated_host(config.name), backend.transport)
        backends.append(backend)
    return make_http_client(routing), backends


def _bare_client(config: EndpointConfig, backend: Backend | None,
                 http: httpx.AsyncClient) -> EndpointClient:
    """The client the pool would use for ``config`` (an in-process backend's own, e.g. the
    emulated endpoint's direct one, else an HTTP client), without the pool."""
    if isinstance(backend, ClientBackend):
        return backend.make_client(config, http, timeout_s=60.0)
    return EndpointClient(config, http)


@contextlib.asynccontextmanager
async def _llm(backend: str, policy: str | None, endpoints: int, slots: int,
               urls: Sequence[str]) -> AsyncIterator[Any]:
    """The pool under ``policy`` (None: bare clients in turn) over ``backend``'s endpoints."""
    backends: list[Backend] = []
    http: httpx.AsyncClient | None
    if backend == "instant":
        configs, http = _configs(endpoints, slots), _http(endpoints)
    elif backend == "emulated":
        configs = _emulated_configs(endpoints, slots)
        http, backends = _in_process(configs) if policy is None else (None, [])
    else:
        configs, http = _http_configs(urls, slots), live.http_client(1.0)
    try:
        if policy is None:
            assert http is not None  # bare clients always get one above
            yield _RoundRobinClients([_bare_client(c, b, http) for c, b in
                                      itertools.zip_longest(configs, backends)])
        else:
            async with EndpointPool(configs, policy=policy, http=http) as pool:
                yield pool
    finally:
        if http is not None:
            await http.aclose()
        for b in backends:
            await b.aclose()


async def _measure(backend: str, policy: str | None, calls: int, concurrency: int,
                   endpoints: int, slots: int, urls: Sequence[str], *, salt: str) -> tuple[float, float]:
    async with _llm(backend, policy, endpoints, slots, urls) as llm:
        await _drive(llm, min(calls, 4), 1, salt + "warm-")  # connections opened, code warm
        return await _drive(llm, calls, concurrency, salt)


def _run(backend: str) -> Callable[[Coroutine[Any, Any, tuple[float, float]]], tuple[float, float]]:
    return run_virtual if backend == "emulated" else asyncio.run


def _paired(repeat: int, backend: str, policy: str, *args: Any) -> dict[str, float]:
    """(CPU, wall) seconds through the pool and through bare clients, measured in ``repeat``
    pairs, back to back, the order alternating (pool first, then bare first), so a busy
    machine slows both sides of a pair alike. The pool's own cost is the median of the pairs'
    differences (a small difference of two large numbers: one pair's can be off by more than
    the cost itself); the other figures are medians too. ``pool_cpu_min``/``_max``: the
    spread of the pairs' differences."""
    pairs: list[tuple[tuple[float, float], tuple[float, float]]] = []
    for round_ in range(repeat):
        got: dict[str | None, tuple[float, float]] = {}
        for which in (policy, None) if round_ % 2 == 0 else (None, policy):
            gc.collect()
            salt = f"{policy}-{round_}-{'pool' if which else 'direct'}-"
            got[which] = _run(backend)(_measure(backend, which, *args, salt=salt))
        pairs.append((got[policy], got[None]))
    own = [p[0] - d[0] for p, d in pairs]
    return {"cpu": statistics.median(p[0] for p, _ in pairs),
            "wall": statistics.median(p[1] for p, _ in pairs),
            "direct_cpu": statistics.median(d[0] for _, d in pairs),
            "direct_wall": statistics.median(d[1] for _, d in pairs),
            "pool_cpu": statistics.median(own), "pool_cpu_min": min(own), "pool_cpu_max": max(own)}


@contextlib.contextmanager
def _servers(backends: Sequence[str], endpoints: int, speed: float) -> Iterator[list[str]]:
    """The root URLs of ``fleetcall emulate`` servers if the http backend is measured (started
    here, stopped by PID when the block ends)."""
    if "http" not in backends:
        yield []
        return
    with procs.Children() as children:
        specs = [procs.EmulatorSpec(f"http-{i}", GPU, MODEL) for i in range(endpoints)]
        yield [child.url for child in procs.start_emulators(children, specs, speed=speed)]


def measure(calls: int = 5000, concurrency: int = 200, endpoints: int = 4, slots: int = 16,
            repeat: int = 3, policies: list[str] | None = None,
            backends: Sequence[str] = ("instant",), speed: float = DEFAULT_SPEED) -> dict[str, Any]:
    """CPU (and wall) time per call through the pool and through bare clients, for every
    backend, shape and policy; figures in microseconds per call."""
    shapes = {"sequential": 1, "concurrent": concurrency}
    rows: list[dict[str, Any]] = []
    with _servers(backends, endpoints, speed) as urls:
        for backend in backends:
            for shape, conc in shapes.items():
                for policy in policies or dispatcher_names():
                    us = {k: t / calls * 1e6 for k, t in _paired(
                        repeat, backend, policy, calls, conc, endpoints, slots, urls).items()}
                    rows.append({"backend": backend, "shape": shape, "concurrency": conc,
                                 "policy": policy, "us_per_call": us["cpu"],
                                 "direct_us_per_call": us["direct_cpu"],
                                 "pool_us_per_call": us["pool_cpu"],
                                 "pool_us_per_call_range": [us["pool_cpu_min"], us["pool_cpu_max"]],
                                 "wall_us_per_call": us["wall"],
                                 "direct_wall_us_per_call": us["direct_wall"]})
    worst = max(r["pool_us_per_call"] for r in rows)
    return {"benchmark": "pool", "calls": calls, "endpoints": endpoints, "slots": slots,
            "repeat": repeat, "backends": list(backends), "speed": speed, "model": MODEL,
            "gpu": GPU, "rows": rows, "ms_per_call": _ms_by_policy(rows),
            "floors": {"pool_us_per_call_max": FLOOR_US_PER_CALL,
                       "holds": worst < FLOOR_US_PER_CALL}}


def _ms_by_policy(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """backend -> policy -> the worst shape's CPU milliseconds per call: ``process`` (this
    process's CPU / calls through the pool) and ``pool`` (that minus the bare clients')."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        shape = {"process": r["us_per_call"] / 1e3, "pool": r["pool_us_per_call"] / 1e3}
        cell = out.setdefault(r["backend"], {}).setdefault(r["policy"], shape)
        # the worst shape's, as measured: a pool cost below zero (noise) is not rounded up to 0
        cell["process"] = max(cell["process"], shape["process"])
        cell["pool"] = max(cell["pool"], shape["pool"])
    return out


_WHAT = {"instant": "instant in-process endpoints, real clock",
         "emulated": "in-process emulated GPUs, virtual clock",
         "http": "fleetcall emulate servers over HTTP on 127.0.0.1, real clock"}


def format_report(rep: dict[str, Any]) -> str:
    lines = [f"pool orchestration cost, {rep['endpoints']} endpoints x {rep['slots']} slots "
             f"({rep.get('gpu', GPU)}, {rep.get('model', MODEL)}), {rep['calls']} calls, median "
             f"of {rep['repeat']} pairs; CPU us per call of this process (wall us per call); "
             f"pool cost: median of the pairs' differences (their range)"]
    for backend in rep.get("backends", ["instant"]):
        lines += ["", f"{backend}: {_WHAT[backend]}",
                  f"{'shape':<12}{'concurrency':>12}  {'policy':<11}{'through pool':>17}"
                  f"{'bare client':>17}{'pool cost':>11}  range"]
        for r in rep["rows"]:
            if r.get("backend", "instant") != backend:
                continue
            lines.append(f"{r['shape']:<12}{r['concurrency']:>12}  {r['policy']:<11}"
                         f"{r['us_per_call']:>7.0f} ({r['wall_us_per_call']:>5.0f}) us"
                         f"{r['direct_us_per_call']:>7.0f} ({r['direct_wall_us_per_call']:>5.0f}) us"
                         f"{r['pool_us_per_call']:>8.0f} us  "
                         + "{:.0f} to {:.0f}".format(*r.get("pool_us_per_call_range", [0, 0])))
    lines += ["", "ms CPU per call, worst shape: through the pool (the pool's own)"]
    for backend, by_policy in rep["ms_per_call"].items():
        lines.append(f"  {backend:<9}" + "  ".join(
            f"{policy} {ms['process']:.3f} ({ms['pool']:.3f})" for policy, ms in by_policy.items()))
    floor = rep["floors"]
    lines.append(f"floor: pool cost under {floor['pool_us_per_call_max']:.0f} us per call: "
                 f"{'yes' if floor['holds'] else 'NO'}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=5000, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, default=200,
                        help="calls at once in the concurrent shape")
    parser.add_argument("--endpoints", type=int, default=4)
    parser.add_argument("--slots", type=int, default=16, help="slots per endpoint")
    parser.add_argument("--policy", action="append",
                        help=f"policy to measure, repeatable ({', '.join(dispatcher_names())})")
    parser.add_argument("--repeat", type=int, default=3,
                        help="pairs of measurements per row (pool and bare clients; medians kept)")
    parser.add_argument("--backend", action="append", choices=BACKENDS,
                        help="endpoints to measure against, repeatable: instant (in-process, "
                             "instant answers), emulated (in-process emulated GPUs, virtual "
                             "clock), http (fleetcall emulate on 127.0.0.1); default: all three")
    parser.add_argument("--speed", type=float, default=DEFAULT_SPEED,
                        help=f"the http backend's GPUs run this many times faster ({DEFAULT_SPEED:g})")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")


def main(args: argparse.Namespace) -> int:
    if min(args.calls, args.concurrency, args.endpoints, args.slots, args.repeat) < 1:
        raise SystemExit("fleetcall bench pool: every count must be >= 1")
    if not args.speed > 0:
        raise SystemExit("fleetcall bench pool: --speed must be > 0")
    rep = measure(args.calls, args.concurrency, args.endpoints, args.slots, args.repeat,
                  args.policy, args.backend or BACKENDS, args.speed)
    print(format_report(rep))
    if args.json:
        write_json(args.json, rep)
    return 0 if rep["floors"]["holds"] else 1
