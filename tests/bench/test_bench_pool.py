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


def test_cli_reports_every_shape_and_policy(tmp_path, capsys) -> None:
    out = tmp_path / "pool.json"
    code = cli(["bench", "pool", "--calls", "50", "--concurrency", "20", "--repeat", "1",
                "--json", str(out)])
    rep = json.loads(out.read_text())
    assert code == (0 if rep["floors"]["holds"] else 1)
    assert rep["floors"]["pool_us_per_call_max"] == 1000.0
    assert [(r["shape"], r["policy"]) for r in rep["rows"]] == [
        (shape, policy) for shape in ("sequential", "concurrent")
        for policy in ("rr-fcfs", "least-busy", "hexgen", "slack")]
    assert all(r["us_per_call"] > 0 and r["direct_us_per_call"] > 0 for r in rep["rows"])
    assert rep["floors"]["holds"] == all(r["pool_us_per_call"] < 1000.0 for r in rep["rows"])
    assert "pool cost" in capsys.readouterr().out
