"""``fleetcall bench pool`` on a small run: every shape and policy measured, the floor checked."""

from __future__ import annotations

import asyncio
import json

from fleetcall.bench import pool as bench_pool
from fleetcall.cli import main as cli


def test_the_instant_endpoints_answer_through_the_pool_and_queues_form() -> None:
    """Concurrent calls outnumber the slots, so the pool really queues them (the shape
    measures placement under load, not a pass-through)."""
    peak = 0

    async def main() -> tuple[float, float]:
        nonlocal peak
        async with bench_pool._http(2) as http, bench_pool.EndpointPool(
                bench_pool._configs(2, 2), policy="slack", http=http) as pool:
            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, sum(s.queued for s in pool.snapshot()))
                    await asyncio.sleep(0)

            watcher = asyncio.create_task(watch())
            try:
                return await bench_pool._drive(pool, 60, 20)
            finally:
                watcher.cancel()

    cpu, wall = asyncio.run(main())
    assert cpu > 0 and wall > 0
    assert peak > 0


POLICIES = ("rr-fcfs", "least-busy", "hexgen", "slack")


def test_cli_reports_every_backend_shape_and_policy(tmp_path, capsys) -> None:
    out = tmp_path / "pool.json"
    code = cli(["bench", "pool", "--calls", "50", "--concurrency", "20", "--repeat", "1",
                "--backend", "instant", "--backend", "emulated", "--json", str(out)])
    rep = json.loads(out.read_text())
    assert code == (0 if rep["floors"]["holds"] else 1)
    assert rep["floors"]["pool_us_per_call_max"] == 500.0
    assert [(r["backend"], r["shape"], r["policy"]) for r in rep["rows"]] == [
        (backend, shape, policy) for backend in ("instant", "emulated")
        for shape in ("sequential", "concurrent") for policy in POLICIES]
    assert all(r["us_per_call"] > 0 and r["direct_us_per_call"] > 0 for r in rep["rows"])
    assert rep["floors"]["holds"] == all(r["pool_us_per_call"] < 500.0 for r in rep["rows"])
    # ms of CPU per call per policy: the worst shape's, through the pool and the pool's own
    for backend in ("instant", "emulated"):
        assert set(rep["ms_per_call"][backend]) == set(POLICIES)
        for policy in POLICIES:
            rows = [r for r in rep["rows"] if (r["backend"], r["policy"]) == (backend, policy)]
            assert rep["ms_per_call"][backend][policy] == {
                "process": max(r["us_per_call"] for r in rows) / 1e3,
                "pool": max(r["pool_us_per_call"] for r in rows) / 1e3}
    printed = capsys.readouterr().out
    assert "pool cost" in printed and "ms CPU per call" in printed


def test_emulated_backend_calls_run_on_the_engines(tmp_path) -> None:
    """The emulated backend's calls really go through emulated GPUs (virtual clock): the
    pool's engines count every call, and the bare clients' calls take GPU time too."""
    from fleetcall.vclock import run_virtual

    async def main() -> tuple[int, float, float]:
        loop = asyncio.get_running_loop()
        async with bench_pool._llm("emulated", "slack", 2, 4, []) as pool:
            await bench_pool._drive(pool, 30, 10)
            pooled = sum(s.requests_done for s in pool.engine_stats().values())
        before = loop.time()
        async with bench_pool._llm("emulated", None, 2, 4, []) as bare:
            await bench_pool._drive(bare, 20, 10)
        return pooled, before, loop.time() - before

    pooled, pool_s, bare_s = run_virtual(main())
    assert pooled == 30 and pool_s > 0 and bare_s > 0


def test_http_backend_measures_the_pool_over_real_http(tmp_path, capsys) -> None:
    """``--backend http`` starts ``fleetcall emulate`` on 127.0.0.1, sends the calls over real
    HTTP (through the pool and straight), and stops the server it started."""
    out = tmp_path / "pool.json"
    cli(["bench", "pool", "--backend", "http", "--endpoints", "1", "--calls", "12",
         "--concurrency", "4", "--repeat", "1", "--policy", "slack", "--speed", "50",
         "--json", str(out)])
    rep = json.loads(out.read_text())
    assert [(r["backend"], r["shape"], r["policy"]) for r in rep["rows"]] == [
        ("http", "sequential", "slack"), ("http", "concurrent", "slack")]
    assert rep["ms_per_call"]["http"]["slack"]["process"] > 0
    assert "fleetcall emulate servers over HTTP" in capsys.readouterr().out


def test_the_pools_own_cost_is_the_median_of_paired_differences(monkeypatch) -> None:
    """Pool and bare clients are measured in pairs, back to back, alternating which goes first;
    the pool's cost is the median of the pairs' differences, not the difference of two bests
    (taken from different moments of a busy machine: here that would be 10 - 1 = 9 us)."""
    order: list[str | None] = []
    # CPU seconds per measurement: round 0 and 2 slow (busy machine), round 1 quiet
    script = {("slack", 0): 12.0, (None, 0): 10.0, ("slack", 1): 10.0, (None, 1): 1.0,
              ("slack", 2): 13.0, (None, 2): 11.0}

    async def fake(backend, which, *args, salt):
        order.append(which)
        return script[(which, int(salt.split("-")[1]))], 1.0

    monkeypatch.setattr(bench_pool, "_measure", fake)
    got = bench_pool._paired(3, "instant", "slack", 10, 1, 2, 2, [])
    assert order == ["slack", None, None, "slack", "slack", None]
    assert got["pool_cpu"] == 2.0 and (got["pool_cpu_min"], got["pool_cpu_max"]) == (2.0, 9.0)
    assert got["cpu"] == 12.0 and got["direct_cpu"] == 10.0


def test_ms_per_call_keeps_a_negative_pool_cost_as_measured() -> None:
    # a pool cost below zero is noise (pairs' differences), but the report says what was
    # measured: the worst shape's figure, not 0.0 (a cell used to start at 0.0)
    from fleetcall.bench.pool import _ms_by_policy
    rows = [{"backend": "http", "policy": "slack", "us_per_call": 2500.0, "pool_us_per_call": -120.0},
            {"backend": "http", "policy": "slack", "us_per_call": 1900.0, "pool_us_per_call": -40.0}]
    assert _ms_by_policy(rows) == {"http": {"slack": {"process": 2.5, "pool": -0.04}}}
