"""``fleetcall bench llamacpp``: the llama.cpp CPU endpoint, measured for real and emulated.

Two modes, both on real ``xllamacpp`` servers serving SmolLM2-135M on 127.0.0.1
(:mod:`fleetcall.local.servers`; each started as a child process and stopped by it):

- ``profile OUT.csv`` measures one server per thread count (``--threads 1,2``) with
  ``max(--concurrency)`` slots: for every prompt length x output length x concurrency ``c`` of
  the grid, ``c`` requests of that shape are sent at once, ``--reps`` times, each a raw prompt of
  exactly that many random token ids (``/v1/completions``, ``cache_prompt`` off, ``ignore_eos``
  so exactly the asked output comes out), timed where the client sits (TTFT = first streamed
  token). A warm-up request runs first on every server. The CSV is the shipped breakdown format
  (``input_tokens, output_tokens, gpu, total_s, ttft_s, tpot_s``) plus ``concurrency`` and
  ``threads``; ``gpu`` is the catalog's CPU device (``CPU-1T``, ``CPU-2T``), so
  ``fleetcall calibrate OUT.csv --model smollm2-135m --tp 1 --no-prefix-cache`` fits the
  device's factors on its concurrency-1 rows (the roofline's single-request form) and prints
  their MAPE.
- ``check CSV`` replays every row of such a CSV on the emulated device (the same shape, as
  many requests at once as measured, under the virtual clock) and prints the TTFT and latency
  MAPE per device and concurrency: how well the emulator, not only the single-request fit,
  follows the server.
- ``rank`` replays one small workload (``--calls`` independent calls of random lengths, Poisson
  at ``--rate``) through each fleetcall policy twice: on a pool of two real llama.cpp servers
  (real clock), and on a pool of two emulated CPU devices (virtual clock, the same arrivals and
  deadlines), then prints each policy's latency in both and the two rankings (by mean latency).

It is a benchmark rather than a ``calibrate`` option because it starts servers and takes minutes
of wall time, like the other real-clock benchmarks; ``calibrate`` only reads CSVs.
Wall-clock figures depend on the machine and its load: note ``uptime`` next to them.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fleetcall.bench import deadlines as deadline_rules
from fleetcall.bench.arrivals import make_arrivals
from fleetcall.bench.replay import QueryRecord, replay
from fleetcall.bench.workloads import CallSpec, QuerySpec, to_messages
from fleetcall.errors import ConfigError
from fleetcall.gpumodel.perf import Deployment
from fleetcall.local.servers import LocalServer, start_local_pool, start_local_server
from fleetcall.router.config import RetryConfig
from fleetcall.router.dispatcher import dispatcher_names
from fleetcall.router.pool import EndpointPool
from fleetcall.sim.emulator import LengthsResponder
from fleetcall.sim.engine import Engine
from fleetcall.vclock import run_virtual

__all__ = ["PROFILE_COLUMNS", "ProfileGrid", "add_arguments", "device_name", "main",
           "profile", "rank_workload", "write_profile"]

MODEL = "smollm2-135m"  # the catalog's shape of what the local servers serve
PROFILE_COLUMNS = ("input_tokens", "output_tokens", "gpu", "total_s", "ttft_s", "tpot_s",
                   "concurrency", "threads")
REQUEST_TIMEOUT_S = 300.0   # bounds one request (and one replayed call); a loaded 2-core VM is slow
_TOKEN_IDS = (1000, 40000)  # random prompt token ids are drawn from this range (ordinary words)
DEFAULT_POLICIES = ("rr-fcfs", "least-busy", "hexgen", "slack")


def device_name(threads: int) -> str:
    """The catalog's CPU device of a llama.cpp server on ``threads`` threads (1 or 2)."""
    if threads not in (1, 2):
        raise ConfigError(f"the catalog has CPU devices for 1 and 2 threads, not {threads}")
    return f"CPU-{threads}T"


@dataclass(frozen=True, slots=True)
class ProfileGrid:
    """What ``profile`` measures: every combination, ``reps`` times."""

    prompts: tuple[int, ...] = (16, 128, 384)
    outputs: tuple[int, ...] = (4, 32, 64)
    concurrency: tuple[int, ...] = (1, 2, 4)
    threads: tuple[int, ...] = (1, 2)
    reps: int = 1

    def __post_init__(self) -> None:
        values = (*self.prompts, *self.outputs, *self.concurrency, self.reps)
        if not self.prompts or not self.outputs or not self.concurrency or min(values) < 1:
            raise ConfigError("profile grid: prompts, outputs, concurrency and reps must be >= 1")
        for t in self.threads:
            device_name(t)

    @property
    def slot_context(self) -> int:
        """Tokens each server slot must hold: the longest prompt and output, with margin."""
        return max(256, max(self.prompts) + max(self.outputs) + 16)


async def _timed_request(client: httpx.AsyncClient, server: LocalServer, prompt: list[int],
                         output: int) -> tuple[float, float]:
    """(ttft_s, total_s) of one streamed completion, seen from the client."""
    body = {"model": server.model, "prompt": prompt, "max_tokens": output, "stream": True,
            "ignore_eos": True, "cache_prompt": False, "temperature": 0}
    start = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", server.base_url + "/completions", json=body) as response:
        if response.status_code != 200:
            text = (await response.aread()).decode("utf-8", "replace")[:200]
            raise ConfigError(f"llama.cpp server answered {response.status_code}: {text}")
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: {") and '"text":""' not in line:
                first = time.perf_counter()
    end = time.perf_counter()
    return (first if first is not None else end) - start, end - start


RowSink = Callable[[dict[str, Any]], None]


async def _profile_server(grid: ProfileGrid, threads: int, rng: random.Random, sink: RowSink,
                          deadline: float) -> int:
    """Measure one server; each row goes to ``sink`` as it is measured. Shapes not started by
    ``deadline`` (``time.perf_counter()``) are skipped; returns how many were."""
    slots = max(grid.concurrency)
    server = await start_local_server(f"profile-{threads}t", threads=threads, slots=slots,
                                      ctx=grid.slot_context)

    def ids(n: int) -> list[int]:
        return [rng.randrange(*_TOKEN_IDS) for _ in range(n)]

    try:
        # No keep-alive: llama.cpp's few HTTP threads would sit on idle connections.
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, trust_env=False,
                                     limits=httpx.Limits(max_keepalive_connections=0)) as client:
            await _timed_request(client, server, ids(64), 4)  # warm-up: first use of every buffer
            # Concurrency 1 first (the rows the fit uses), so a run cut short by its wall
            # budget keeps them; shuffled within a level, so drift in the machine's load
            # spreads over the lengths.
            shapes = []
            for c in sorted(grid.concurrency):
                level = [(p, o, c) for p in grid.prompts for o in grid.outputs] * grid.reps
                rng.shuffle(level)
                shapes.extend(level)
            for done, (p, o, c) in enumerate(shapes):
                if time.perf_counter() >= deadline:
                    return len(shapes) - done
                timed = await asyncio.gather(*(_timed_request(client, server, ids(p), o)
                                               for _ in range(c)))
                for ttft, total in timed:
                    sink({"input_tokens": p, "output_tokens": o, "gpu": device_name(threads),
                          "total_s": round(total, 6), "ttft_s": round(ttft, 6),
                          "tpot_s": round((total - ttft) / o, 8), "concurrency": c,
                          "threads": threads})
    finally:
        await server.stop()
    return 0


async def profile(grid: ProfileGrid, *, seed: int = 0, sink: RowSink | None = None,
                  max_wall_s: float | None = None) -> list[dict[str, Any]]:
    """Measure a llama.cpp server per thread count of ``grid``; rows of :data:`PROFILE_COLUMNS`.

    One server at a time (two would share the cores); each is stopped before the next starts.
    ``sink`` also gets every row as soon as it is measured (so an interrupted run keeps what it
    measured); ``max_wall_s`` bounds the run: each server gets an equal share of it, and shapes
    not started within their server's share are skipped (a line on stderr says how many).
    Raises ConfigError if the model or server package is missing."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []

    def keep(row: dict[str, Any]) -> None:
        rows.append(row)
        if sink is not None:
            sink(row)

    start = time.perf_counter()
    for i, threads in enumerate(grid.threads):
        share = math.inf if max_wall_s is None else max_wall_s * (i + 1) / len(grid.threads)
        skipped = await _profile_server(grid, threads, rng, keep, start + share)
        if skipped:
            print(f"{device_name(threads)}: out of time, {skipped} shapes not measured",
                  file=sys.stderr)
    return rows


def write_profile(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write measured rows as a CSV in the breakdown format (plus concurrency and threads)."""
    out = Path(path)
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PROFILE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return out


async def profile_to_csv(grid: ProfileGrid, path: str | Path, *, seed: int = 0,
                         max_wall_s: float | None = None) -> int:
    """:func:`profile` written to ``path`` row by row (flushed); returns the rows written."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PROFILE_COLUMNS)
        writer.writeheader()

        def sink(row: dict[str, Any]) -> None:
            writer.writerow(row)
            fh.flush()

        return len(await profile(grid, seed=seed, sink=sink, max_wall_s=max_wall_s))


# ---- check: the emulated device against every row, concurrent ones included ------------------


async def _emulate_shape(device: str, prompt: int, output: int, concurrency: int) -> list[tuple[float, float]]:
    """(ttft_s, total_s) of ``concurrency`` requests of one shape sent at once to an emulated
    engine of ``device`` (run under the virtual clock)."""
    loop = asyncio.get_running_loop()

    async def one(engine: Engine) -> tuple[float, float]:
        start, first = loop.time(), None
        async for event in engine.generate(prompt, output):
            if event.first:
                first = loop.time()
        end = loop.time()
        return (end if first is None else first) - start, end - start

    async with Engine(Deployment.of(device, MODEL, tp=1), max_batch=concurrency) as engine:
        return list(await asyncio.gather(*(one(engine) for _ in range(concurrency))))


def check_profile(path: str | Path) -> dict[str, dict[int, dict[str, float]]]:
    """MAPE (percent) of the catalog's CPU devices, emulated, against a profile CSV's rows,
    per device and concurrency: ``{device: {concurrency: {"n", "ttft", "total"}}}``.

    Concurrency-1 rows test the fit itself; the others test the emulator's batching (several
    requests sent at once to one server, each with its own slot)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ConfigError(f"{path}: no rows")
    errors: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for row in rows:
        device, c = row["gpu"], int(row["concurrency"])
        p, o = int(row["input_tokens"]), int(row["output_tokens"])
        (ttft, total), *_ = run_virtual(_emulate_shape(device, p, o, c))
        measured_ttft, measured_total = float(row["ttft_s"]), float(row["total_s"])
        errors.setdefault((device, c), []).append(
            (abs(ttft - measured_ttft) / measured_ttft, abs(total - measured_total) / measured_total))
    out: dict[str, dict[int, dict[str, float]]] = {}
    for (device, c), errs in sorted(errors.items()):
        out.setdefault(device, {})[c] = {"n": len(errs),
                                         "ttft": 100 * statistics.fmean(e[0] for e in errs),
                                         "total": 100 * statistics.fmean(e[1] for e in errs)}
    return out


def format_check(report: dict[str, dict[int, dict[str, float]]]) -> str:
    lines = [f"{'device':<8} {'concurrency':>11} {'n':>4} {'TTFT MAPE':>10} {'latency MAPE':>13}"]
    for device, by_c in report.items():
        for c, fig in by_c.items():
            lines.append(f"{device:<8} {c:>11} {fig['n']:>4.0f} {fig['ttft']:>9.1f}% "
                         f"{fig['total']:>12.1f}%")
    return "\n".join(lines)


# ---- rank: the same workload for real and in simulation --------------------------------------


def rank_workload(calls: int, seed: int, *, prompts: tuple[int, int] = (8, 160),
                  outputs: tuple[int, int] = (4, 48)) -> list[QuerySpec]:
    """``calls`` independent calls, lengths uniform in ``prompts`` and ``outputs`` (tokens, as
    the emulator counts them: SmolLM2's tokenizer makes about 2.5x as many prompt tokens of the
    same text, see :func:`real_prompt_tokens`)."""
    if calls < 1:
        raise ConfigError("--calls must be >= 1")
    rng = random.Random(seed)
    return [QuerySpec(f"q{i}", ((CallSpec("call", rng.randint(*prompts), rng.randint(*outputs)),),))
            for i in range(calls)]


@dataclass(frozen=True, slots=True)
class _RankSetup:
    """The workload twice: ``queries`` as sent to the real servers (their text), and
    ``sim_queries`` with the prompt lengths the servers' tokenizer gives that text."""

    queries: tuple[QuerySpec, ...]
    sim_queries: tuple[QuerySpec, ...]
    times: tuple[float, ...]
    budgets: tuple[float, ...]
    threads: int
    slots: int
    seed: int

    @property
    def device(self) -> str:
        return device_name(self.threads)

    @property
    def slot_context(self) -> int:
        return max(c.prompt_tokens + c.output_tokens for q in self.sim_queries for c in q.calls) + 64


async def real_prompt_tokens(queries: Sequence[QuerySpec]) -> list[int]:
    """Per query (one call each), the prompt tokens a llama.cpp server sees for its text: the
    chat template applied (``/apply-template``) and tokenized (``/tokenize``), on a server
    started for this and stopped after. The workload's token counts are the emulator's (about
    one token per word); SmolLM2's tokenizer splits the same text into more."""
    server = await start_local_server("tokenize", threads=1, slots=1, ctx=256)
    root = server.base_url.removesuffix("/v1")
    counts = []
    try:
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, trust_env=False) as client:
            for query in queries:
                (call,) = query.calls
                messages = [{"role": m.role, "content": m.content}
                            for m in to_messages(call, query.query_id, 0)]
                templated = await client.post(root + "/apply-template", json={"messages": messages})
                templated.raise_for_status()
                tokens = await client.post(root + "/tokenize", json={
                    "content": templated.json()["prompt"], "add_special": True})
                tokens.raise_for_status()
                counts.append(len(tokens.json()["tokens"]))
    finally:
        await server.stop()
    return counts


def _with_prompts(queries: Sequence[QuerySpec], counts: Sequence[int]) -> list[QuerySpec]:
    return [dataclasses.replace(q, stages=((dataclasses.replace(q.calls[0], prompt_tokens=n),),))
            for q, n in zip(queries, counts)]


def _latencies(records: Sequence[QueryRecord]) -> dict[str, Any]:
    done = [r.latency for r in records if r.latency is not None and not r.failed]
    if not done:
        return {"completed": 0, "mean_s": None, "p95_s": None, "slo": 0.0}
    ordered = sorted(done)
    return {"completed": len(done), "mean_s": statistics.fmean(done),
            "p95_s": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "slo": sum(r.met for r in records) / len(records)}


async def _sim_run(setup: _RankSetup, policy: str) -> list[QueryRecord]:
    pool = EndpointPool.emulated([setup.device] * 2, MODEL, tp=1, slots=setup.slots,
                                 policy=policy, responder=LengthsResponder(), seed=setup.seed,
                                 retry=RetryConfig(attempt_timeout_s=REQUEST_TIMEOUT_S))
    async with pool:
        return await replay(pool, setup.sim_queries, setup.times, setup.budgets,
                            timeout_s=REQUEST_TIMEOUT_S)


async def _real_run(setup: _RankSetup, policy: str) -> list[QueryRecord]:
    async with await start_local_pool(2, threads=setup.threads, slots=setup.slots,
                                      ctx=setup.slot_context) as local:
        endpoints = [s.endpoint().model_copy(update={"gpu": setup.device}) for s in local.servers]
        config = local.config(policy=policy, retry=RetryConfig(
            attempt_timeout_s=REQUEST_TIMEOUT_S)).model_copy(update={"endpoints": endpoints})
        async with EndpointPool.from_config(config) as pool:
            return await replay(pool, setup.queries, setup.times, setup.budgets,
                                timeout_s=REQUEST_TIMEOUT_S)


def _ranking(results: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(results, key=lambda p: (results[p]["mean_s"] is None, results[p]["mean_s"] or 0))


def run_rank(policies: Sequence[str], setup: _RankSetup) -> dict[str, Any]:
    """Each policy on the simulated and on the real pool; both rankings, by mean latency."""
    sim = {p: _latencies(run_virtual(_sim_run(setup, p), seed=setup.seed)) for p in policies}
    real = {p: _latencies(asyncio.run(_real_run(setup, p))) for p in policies}
    sim_rank, real_rank = _ranking(sim), _ranking(real)
    return {"sim": sim, "real": real, "sim_ranking": sim_rank, "real_ranking": real_rank,
            "same_ranking": sim_rank == real_rank, "pairs": pair_agreement(sim, real)}


TIE_FRACTION = 0.01  # mean latencies within 1% of each other are a tie


def pair_agreement(sim: dict[str, dict[str, Any]], real: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Pairs of policies both runs order (mean latencies more than :data:`TIE_FRACTION` apart
    in each): ``agree`` of them the same way, ``disagree`` the other; ``tied`` pairs are a tie
    (or lack a mean) in at least one run."""
    def order(run: dict[str, dict[str, Any]], a: str, b: str) -> int:
        x, y = run[a]["mean_s"], run[b]["mean_s"]
        if x is None or y is None or abs(x - y) <= TIE_FRACTION * max(x, y):
            return 0
        return 1 if x > y else -1

    out = {"agree": 0, "disagree": 0, "tied": 0}
    names = list(sim)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            s, r = order(sim, a, b), order(real, a, b)
            out["tied" if s == 0 or r == 0 else "agree" if s == r else "disagree"] += 1
    return out


def format_rank(report: dict[str, Any]) -> str:
    lines = [f"{'policy':<11} {'sim mean':>9} {'sim p95':>8} {'real mean':>10} {'real p95':>9} "
             f"{'real done':>9}"]
    for p in report["sim"]:
        s, r = report["sim"][p], report["real"][p]
        lines.append(f"{p:<11} {_s(s['mean_s']):>9} {_s(s['p95_s']):>8} {_s(r['mean_s']):>10} "
                     f"{_s(r['p95_s']):>9} {r['completed']:>9}")
    lines.append("ranking by mean latency, simulated: " + " < ".join(report["sim_ranking"]))
    lines.append("ranking by mean latency, real:      " + " < ".join(report["real_ranking"]))
    pairs = report["pairs"]
    lines.append(f"same ranking: {'yes' if report['same_ranking'] else 'no'}; pairs of policies "
                 f"ordered alike: {pairs['agree']}, reversed: {pairs['disagree']}, tied "
                 f"(within {TIE_FRACTION:.0%}) in either run: {pairs['tied']}")
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


# ---- command line ----------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    grid = ProfileGrid()
    parser.add_argument("mode", choices=("profile", "check", "rank"))
    parser.add_argument("out", nargs="?", type=Path,
                        help="profile: the CSV to write; check: the CSV to check the emulated "
                             "CPU devices against (every concurrency)")
    parser.add_argument("--prompts", type=_ints, default=grid.prompts, help="profile: prompt lengths")
    parser.add_argument("--outputs", type=_ints, default=grid.outputs, help="profile: output lengths")
    parser.add_argument("--concurrency", type=_ints, default=grid.concurrency,
                        help="profile: requests sent at once")
    parser.add_argument("--threads", type=_ints, default=grid.threads,
                        help="profile: thread counts, one server each; rank: the first is used")
    parser.add_argument("--reps", type=int, default=grid.reps, help="profile: repeats of each shape")
    parser.add_argument("--max-wall", type=float, default=280.0,
                        help="profile: stop starting new shapes after this many seconds (280)")
    parser.add_argument("--policy", action="append", help="rank: policy, repeatable")
    parser.add_argument("--calls", type=int, default=30, help="rank: calls in the workload")
    parser.add_argument("--rate", type=float, default=1.0, help="rank: Poisson arrivals, calls/s")
    parser.add_argument("--slots", type=int, default=2, help="rank: slots per server")
    parser.add_argument("--slo-scale", type=float, default=3.0, help="rank: deadline scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    load = os.getloadavg()[0]
    if args.mode == "check":
        if args.out is None:
            raise ConfigError("check needs a profile CSV: fleetcall bench llamacpp check CSV")
        checked = check_profile(args.out)
        print(format_check(checked))
        report: dict[str, Any] = {"mape_pct": checked}
    elif args.mode == "profile":
        if args.out is None:
            raise ConfigError("profile needs the CSV to write: fleetcall bench llamacpp profile OUT.csv")
        grid = ProfileGrid(args.prompts, args.outputs, args.concurrency, args.threads, args.reps)
        n = asyncio.run(profile_to_csv(grid, args.out, seed=args.seed, max_wall_s=args.max_wall))
        print(f"wrote {args.out}: {n} requests in {time.perf_counter() - started:.0f}s "
              f"(load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)")
        report = {"rows": n}
    else:
        policies = args.policy or list(DEFAULT_POLICIES)
        unknown = sorted(set(policies) - set(dispatcher_names()))
        if unknown:
            raise ConfigError(f"unknown policy {', '.join(unknown)}")
        queries = rank_workload(args.calls, args.seed)
        threads = args.threads[0]
        device = Deployment.of(device_name(threads), MODEL, tp=1)
        sim_queries = _with_prompts(queries, asyncio.run(real_prompt_tokens(queries)))
        setup = _RankSetup(tuple(queries), tuple(sim_queries),
                           tuple(make_arrivals("poisson", args.rate, len(queries), args.seed)),
                           tuple(deadline_rules.unloaded_deadlines(sim_queries, [device],
                                                                   args.slo_scale)),
                           threads, args.slots, args.seed)
        report = run_rank(policies, setup)
        print(format_rank(report))
        print(f"({time.perf_counter() - started:.0f}s wall, load average {load:.2f} at the start)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0
