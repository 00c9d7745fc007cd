"""``fleetcall bench burst``: many small calls at once against one real endpoint, calls/s.

Issue 12's test of the prefill gate: ``--concurrency`` callers each send calls of a few tokens
with ``max_tokens`` 1, back to back, to one ``fleetcall emulate`` server over real HTTP on
127.0.0.1 (started here as a subprocess on a free port, stopped at the end, unless ``--url``
names one already running). The same calls go straight to the endpoint (one
:class:`~fleetcall.router.client.EndpointClient`, no pool) and through an
:class:`~fleetcall.router.pool.EndpointPool` of that one endpoint under each policy. Reported:
calls per second of wall time, best of ``--repeat`` (direct and pooled measured alternately, so
a busy machine slows both alike), and each policy's throughput over direct's. ``slack`` holds a
prompt while the engine is busy prefilling others; such tiny prompts share one prefill chunk,
so they must not wait for each other: the floor is slack within 10% of direct.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from fleetcall.llm.base import CallContext, LLMRequest, Message, complete
from fleetcall.router.client import EndpointClient, RoutingTransport, make_http_client
from fleetcall.router.config import EndpointConfig
from fleetcall.router.dispatcher import dispatcher_names
from fleetcall.router.pool import EndpointPool
from fleetcall.bench.output import write_json

GPU, MODEL = "A100-80G", "llama-3.1-8b"
FLOOR_FRACTION_OF_DIRECT = 0.90  # slack's calls/s at least this fraction of direct's
START_TIMEOUT_S = 30.0           # for the emulate subprocess to print its URL


@contextlib.asynccontextmanager
async def emulate_server(gpu: str = GPU, model: str = MODEL) -> AsyncIterator[str]:
    """A ``fleetcall emulate`` subprocess on a free port of 127.0.0.1; yields its ``/v1`` URL
    and stops it (by its PID) on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetcall.cli", "emulate", "--gpu", gpu, "--model", model,
        "--host", "127.0.0.1", "--port", "0", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            line = (await proc.stdout.readline()).decode()
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if found is None:
            raise RuntimeError(f"fleetcall emulate did not start: {line!r}")
        yield found.group(0) + "/v1"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _request(i: int) -> LLMRequest:
    return LLMRequest((Message("user", f"ping {i}"),), CallContext(query_id=f"q{i}", kind="tiny"),
                      max_tokens=1)


async def _drive(llm: Any, calls: int, concurrency: int) -> float:
    """Wall seconds for ``calls`` calls, ``concurrency`` callers sending back to back."""
    counter = iter(range(calls))

    async def caller() -> None:
        for i in counter:
            await complete(llm, _request(i))

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(caller())
    return time.perf_counter() - start


def _config(url: str, slots: int) -> EndpointConfig:
    return EndpointConfig(name="gpu", base_url=url, model=MODEL, gpu=GPU, slots=slots)


async def _measure(url: str, policy: str | None, calls: int, concurrency: int) -> float:
    """Calls per second direct (``policy`` None) or through a pool under ``policy``."""
    async with make_http_client(RoutingTransport()) as http:
        if policy is None:
            client = EndpointClient(_config(url, concurrency), http)
            return calls / await _drive(client, calls, concurrency)
        async with EndpointPool([_config(url, concurrency)], policy=policy, http=http) as pool:
            return calls / await _drive(pool, calls, concurrency)


async def measure(url: str | None = None, *, calls: int = 640, concurrency: int = 32,
                  repeat: int = 3, policies: list[str] | None = None) -> dict[str, Any]:
    """The benchmark's report (a JSON-ready dict); starts a server unless ``url`` is given."""
    if url is None:
        async with emulate_server() as started:
            return await measure(started, calls=calls, concurrency=concurrency, repeat=repeat,
                                 policies=policies)
    names = policies or dispatcher_names()
    best: dict[str, float] = {}
    await _measure(url, None, concurrency, concurrency)  # warm up the server and the sockets
    for _ in range(repeat):
        for which in (None, *names):
            rate = await _measure(url, which, calls, concurrency)
            key = which or "direct"
            best[key] = max(best.get(key, 0.0), rate)
    direct = best["direct"]
    rows = [{"via": key, "calls_per_s": rate, "of_direct": rate / direct}
            for key, rate in best.items()]
    slack = best.get("slack")
    return {"benchmark": "burst", "clock": "real", "gpu": GPU, "model": MODEL, "calls": calls,
            "concurrency": concurrency, "repeat": repeat, "rows": rows,
            "floors": {"slack_of_direct_min": FLOOR_FRACTION_OF_DIRECT,
                       "holds": slack is None or slack >= FLOOR_FRACTION_OF_DIRECT * direct}}


def format_report(rep: dict[str, Any]) -> str:
    lines = [f"{rep['concurrency']} callers, {rep['calls']} calls of a few tokens, max_tokens 1, "
             f"one fleetcall emulate endpoint ({rep['model']} on {rep['gpu']}) over HTTP; "
             f"best of {rep['repeat']}",
             f"{'via':<12}{'calls/s':>10}{'of direct':>11}"]
    for r in rep["rows"]:
        lines.append(f"{r['via']:<12}{r['calls_per_s']:>10.0f}{r['of_direct']:>10.0%}")
    floor = rep["floors"]
    lines.append(f"floor: slack at least {floor['slack_of_direct_min']:.0%} of direct: "
                 f"{'yes' if floor['holds'] else 'NO'}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="an OpenAI-compatible endpoint's /v1 URL (default: start "
                                      "a fleetcall emulate server on 127.0.0.1)")
    parser.add_argument("--calls", type=int, default=640, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="callers at once")
    parser.add_argument("--policy", action="append",
                        help=f"policy to measure, repeatable ({', '.join(dispatcher_names())})")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per row (best kept)")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")


def main(args: argparse.Namespace) -> int:
    if min(args.calls, args.concurrency, args.repeat) < 1:
        raise SystemExit("fleetcall bench burst: every count must be >= 1")
    rep = asyncio.run(measure(args.url, calls=args.calls, concurrency=args.concurrency,
                              repeat=args.repeat, policies=args.policy))
    print(format_report(rep))
    if args.json:
        write_json(args.json, rep)
    return 0 if rep["floors"]["holds"] else 1
