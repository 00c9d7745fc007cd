"""fleetcall on a real local Ray cluster: the shared scheduler actor, tools as Ray tasks.

One cluster for the module (``ray.init(num_cpus=2)``, shut down after); every test is marked
``ray`` and bounded in time. The replicas here are pools in this process, each its own session
at the actor (the Serve test runs replicas in separate processes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from fleetcall import Orchestrator, ScriptedLLM, tool  # noqa: E402
from fleetcall.distributed.actor import start_scheduler  # noqa: E402
from fleetcall.distributed.pool import RayPool  # noqa: E402
from fleetcall.distributed.tools import RayTool, ray_tool  # noqa: E402
from fleetcall.distributed.wire import WireClient  # noqa: E402
from fleetcall.errors import ConfigError  # noqa: E402
from fleetcall.llm.base import complete  # noqa: E402
from fleetcall.router.client import RoutingTransport, make_http_client  # noqa: E402
from fleetcall.router.config import EndpointConfig, RetryConfig  # noqa: E402
from fleetcall.sim.emulator import EmulatedEndpoint  # noqa: E402
from fleetcall.sim.fronts import EmulatorTransport  # noqa: E402
from fleetcall.sim.responders import LengthsResponder  # noqa: E402
from tests.router.helpers import MODEL, ask  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def cluster(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[None]:
    # Ray Serve kills a proxy not ready within 5 s (RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S); on
    # a machine whose cores are busy a proxy takes longer to start. The cluster's processes
    # inherit this environment.
    monkeypatch_module.setenv("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


class Replicas:
    """K RayPools (replicas r0..) on one scheduler actor, over in-process emulated endpoints
    they share (one HTTP client: the same engines for every replica)."""

    def __init__(self, k: int, scheduler: Any, names: tuple[str, ...] = ("a", "b"),
                 slots: int = 1, prefix: str = "r", **pool_kwargs: Any) -> None:
        routing = RoutingTransport()
        self.endpoints = [EmulatedEndpoint("A100-80G", MODEL, name=n, responder=LengthsResponder())
                          for n in names]
        for ep in self.endpoints:
            routing.add(f"{ep.name}.test", EmulatorTransport(ep))
        configs = [EndpointConfig(name=n, base_url=f"http://{n}.test/v1", model=MODEL,
                                  gpu="A100-80G", slots=slots) for n in names]
        self.http = make_http_client(routing)
        self.pools = [RayPool(configs, scheduler=scheduler, replica=f"{prefix}{i}", http=self.http,
                              policy="least-busy", retry=RetryConfig(backoff_s=0.0),
                              **pool_kwargs) for i in range(k)]

    async def __aenter__(self) -> Replicas:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for pool in self.pools:
            await pool.aclose()
        await self.http.aclose()
        for ep in self.endpoints:
            await ep.aclose()


def _scheduler(name: str) -> Any:
    handle = start_scheduler("least-busy", name=name, retry=RetryConfig(backoff_s=0.0))
    ray.get(handle.__ray_ready__.remote(), timeout=120)   # started (slow on a busy machine)
    return handle


def test_the_actor_balances_two_replicas_by_global_state() -> None:
    scheduler = _scheduler("balance")

    async def main() -> list[str]:
        async with Replicas(2, scheduler, rpc_timeout_s=30.0) as herd:   # never local placement
            calls = [complete(pool, ask(f"r{i}", query=f"q{i}", max_tokens=200))
                     for i, pool in enumerate(herd.pools)]
            done = await asyncio.wait_for(asyncio.gather(*calls), 30)
            stats = await herd.pools[0].scheduler_stats()
            assert sorted(stats["replicas"]) == ["r0", "r1"]
            return [str(c.info["endpoint"]) for c in done]

    try:
        # each replica alone would take "a" (both idle); sharing the actor, the second sees
        # the first's call and takes "b"
        assert sorted(asyncio.run(main())) == ["a", "b"]
    finally:
        ray.kill(scheduler)


def test_replicas_reach_the_actor_over_a_direct_connection_or_by_actor_calls(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 13's per-call overhead: a replica's requests skip Ray's actor-call path (about a
    millisecond each) over a direct connection; with ``direct=False``, or when it cannot
    connect, they are actor calls."""
    scheduler = _scheduler("direct")

    async def replica(direct: bool) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """The actor's counters before and after 5 calls of one replica, alone on it."""
        async with Replicas(1, scheduler, rpc_timeout_s=30.0, prefix=f"direct-{direct}-",
                            direct=direct) as herd:
            pool = herd.pools[0]
            await asyncio.wait_for(complete(pool, ask("warm", query="w")), 30)
            before = await pool.scheduler_stats()
            for i in range(5):
                await asyncio.wait_for(complete(pool, ask(f"c{i}", query=f"q{i}")), 30)
            after = await pool.scheduler_stats()
            assert pool.remote.connected
            return before, after, pool.remote.channel.wired

    async def main() -> None:
        before, after, wired = await replica(direct=True)
        assert wired   # every request came over its connection:
        assert after["direct_requests"] - before["direct_requests"] \
            == after["requests"] - before["requests"] >= 5
        for how in ("by choice", "cannot connect"):
            if how == "cannot connect":
                monkeypatch.setattr(WireClient, "connect", refuse)
            before, after, wired = await replica(direct=how == "cannot connect")
            assert not wired   # every request an actor call:
            assert after["direct_requests"] == before["direct_requests"]
            assert after["requests"] - before["requests"] >= 5
        assert "cannot connect to the shared scheduler" in caplog.text

    async def refuse(*args: Any, **kwargs: Any) -> WireClient:
        raise ConnectionRefusedError("refused (by the test)")

    try:
        with caplog.at_level(logging.WARNING, logger="fleetcall.distributed"):
            asyncio.run(main())
    finally:
        ray.kill(scheduler)


def test_killing_the_scheduler_actor_mid_run_loses_no_call(caplog: pytest.LogCaptureFixture) -> None:
    scheduler = _scheduler("killed")

    async def main() -> tuple[int, int, int]:
        async with Replicas(2, scheduler, rpc_timeout_s=2.0) as herd:
            for pool in herd.pools:                       # both replicas joined the actor
                await asyncio.wait_for(complete(pool, ask("hi", query="warm-up")), 30)
            for _ in range(300):   # a loaded machine may have had them place locally for a while
                if all(pool.remote.connected for pool in herd.pools):
                    break
                await asyncio.sleep(0.1)
            before = [(pool.remote.switches, pool.remote.rejoins) for pool in herd.pools]
            calls = [asyncio.create_task(complete(herd.pools[i % 2], ask(
                f"c{i}", query=f"q{i}", max_tokens=60))) for i in range(10)]
            await asyncio.sleep(0.3)                      # 2 running, 8 waiting at the actor
            ray.kill(scheduler, no_restart=False)         # the actor dies; Ray restarts it
            done = await asyncio.wait_for(asyncio.gather(*calls), 60)
            for _ in range(300):                          # the replicas rejoin the restarted actor
                if all(pool.remote.connected for pool in herd.pools):
                    break
                await asyncio.sleep(0.1)
            after = await asyncio.wait_for(complete(herd.pools[0], ask("after", query="z")), 30)
            assert after.text
            assert all(pool.remote.channel.wired for pool in herd.pools)  # a new connection
            stats = await herd.pools[0].scheduler_stats()  # the new incarnation knows both
            assert sorted(stats["replicas"]) == ["r0", "r1"]
            cores = [pool.remote for pool in herd.pools]
            return (len(done), sum(c.switches - b[0] for c, b in zip(cores, before, strict=True)),
                    sum(c.rejoins - b[1] for c, b in zip(cores, before, strict=True)))

    try:
        with caplog.at_level(logging.INFO, logger="fleetcall.distributed"):
            finished, switches, rejoins = asyncio.run(main())
    finally:
        ray.kill(scheduler)
    assert finished == 10
    assert switches >= 1 and rejoins >= 1   # replicas lost it, placed locally, came back
    assert "placing calls locally" in caplog.text and "rejoined" in caplog.text


def test_the_herd_benchmark_runs_replicas_as_actors_over_http() -> None:
    """``bench scheduler --replicas K --clock real``'s run: emulated GPUs over HTTP on 127.0.0.1,
    two replica actors (processes of their own), independent then sharing one scheduler actor."""
    from fleetcall.bench.herd_ray import run_herd
    from fleetcall.bench.live import LiveEndpoint
    from fleetcall.bench.procs import Children, EmulatorSpec, start_emulators
    from fleetcall.bench.scheduler import Setup
    from fleetcall.bench.workloads import independent_calls, load_workload, repeat_queries

    queries = tuple(repeat_queries(independent_calls(load_workload("trace1")), 6))
    setup = Setup(queries, ("A100-80G", "A100-80G"), "llama-3.1-8b", slots=4)
    specs = [EmulatorSpec(f"A100-80G-{i}", "A100-80G", "llama-3.1-8b", 1, ("--responder", "lengths"))
             for i in range(2)]
    with Children() as children:
        started = start_emulators(children, specs, speed=20.0)
        endpoints = [LiveEndpoint(s.name, c.url, s.gpu, 1) for s, c in zip(specs, started, strict=True)]
        runs = {mode: run_herd(ray, endpoints, setup, 2, mode, "slack", 2.0, {}, 20.0)
                for mode in ("independent", "shared")}
    for run in runs.values():
        assert run["completed"] == run["queries"] == 6, run.get("first_error")
        assert run["clock"] == "real" and run["latency_s"]["p95"] > 0
    assert runs["shared"]["scheduler"]["replicas"] == ["r0", "r1"]  # both placed through it
    assert runs["shared"]["scheduler"]["requests"] >= 6
    assert "scheduler" not in runs["independent"]


def test_the_overhead_benchmark_measures_the_actor() -> None:
    from fleetcall.bench.ray_overhead import _specs, capacity, per_call, round_trip

    scheduler = _scheduler("overhead")
    try:
        trip = asyncio.run(round_trip(scheduler, 20))
        call = asyncio.run(per_call(scheduler, 10, 2, 4))
    finally:
        ray.kill(scheduler)
    assert 0 < trip["p50_ms"] <= trip["p95_ms"]
    assert call["ray_ms_per_call"] > 0 and call["local_ms_per_call"] > 0
    scheduler = start_scheduler("slack", name="capacity", endpoints=_specs(2, 16))
    try:
        cap = asyncio.run(capacity(scheduler, 2, 4, 1.0))
    finally:
        ray.kill(scheduler)
    assert cap["calls"] > 0 and cap["actor_cpu_us_per_call"] > 0


def crunch(n: int) -> dict[str, int]:
    """Sum the squares below n, in a Ray worker.

    Args:
        n: how many squares.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return {"sum": sum(i * i for i in range(n)), "pid": os.getpid()}


def test_a_tool_runs_as_a_ray_task_and_its_error_is_an_observation() -> None:
    tool = ray_tool(num_cpus=1)(crunch)
    plan = "1. crunch(10)\n2. crunch(-1)\n3. join()"
    llm = ScriptedLLM([plan, "Finish(done)"])
    result = asyncio.run(Orchestrator(tools=[tool], llm=llm).run("crunch", deadline=60))
    ok, bad = result.tasks[0], result.tasks[1]
    assert ok.status == "ok" and ok.observation["sum"] == 285
    assert ok.observation["pid"] != os.getpid()          # it ran in a Ray worker
    assert bad.status == "error" and bad.error == "ValueError: n must be >= 0, got -1"


def test_tool_with_a_ray_option_is_the_same_ray_task() -> None:
    """``@tool(ray=dict(...))`` on fleetcall's own decorator makes the RayTool ``ray_tool``
    makes: run in a Ray worker with those resources, its error an observation, its tool
    options kept; a bad option name is refused, naming it."""
    made = tool(ray=dict(num_cpus=1), timeout_s=60, max_concurrency=2)(crunch)
    assert isinstance(made, RayTool) and made.options.max_concurrency == 2
    assert made.resources == ray_tool(num_cpus=1)(crunch).resources
    assert made.signature() == ray_tool(crunch).signature()
    plan = "1. crunch(10)\n2. crunch(-1)\n3. join()"
    result = asyncio.run(Orchestrator(tools=[made], llm=ScriptedLLM([plan, "Finish(done)"]))
                         .run("crunch", deadline=60))
    ok, bad = result.tasks[0], result.tasks[1]
    assert ok.status == "ok" and ok.observation["sum"] == 285
    assert ok.observation["pid"] != os.getpid()          # it ran in a Ray worker
    assert bad.status == "error" and bad.error == "ValueError: n must be >= 0, got -1"
    with pytest.raises(ConfigError, match="crunch.*num_cpu\\b"):
        tool(ray=dict(num_cpu=2))(crunch)
    with pytest.raises(ConfigError, match="num_cpus"):
        tool(ray={"num_cpus": "two"})(crunch)


def _wait_for(check: Any, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return False


def spin(marker: str) -> int:
    """Count for a minute in pure Python, noting an interruption.

    Args:
        marker: a file to write when interrupted.
    """
    Path(marker + ".started").write_text(str(os.getpid()))
    end, n = time.monotonic() + 60, 0
    try:
        while time.monotonic() < end:
            n += 1
    except KeyboardInterrupt:
        Path(marker).write_text("interrupted")
        raise
    return n


def stubborn(marker: str) -> str:
    """Sleep a minute, ignoring interruptions.

    Args:
        marker: a file to write the worker's pid to.
    """
    Path(marker).write_text(str(os.getpid()))
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            time.sleep(end - time.monotonic())
        except KeyboardInterrupt:
            pass
    return "slept"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _run_until_cancelled(tool: Any, marker: Path, started: Path) -> Any:
    plan = f'1. {tool.name}("{marker}")\n2. join()'
    orch = Orchestrator(tools=[tool], llm=ScriptedLLM([plan, "Finish(x)"]), grace_s=0.5)

    async def main() -> Any:
        handle = orch.start("sleep")
        assert await asyncio.to_thread(_wait_for, started.exists, 30), "the task never started"
        handle.cancel()
        return await asyncio.wait_for(handle.result(), 10)

    return asyncio.run(main())


def test_cancelling_the_run_kills_the_ray_task_even_if_it_ignores_interrupts(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    result = _run_until_cancelled(ray_tool(stubborn), marker, marker)
    assert result.status.value == "cancelled"
    pid = int(marker.read_text())
    assert _wait_for(lambda: not _alive(pid), 15), "the worker running the task is still alive"


def test_a_gentle_cancel_interrupts_the_task_s_python_code(tmp_path: Path) -> None:
    marker = tmp_path / "spin"
    result = _run_until_cancelled(ray_tool(force_cancel=False)(spin), marker,
                                  Path(str(marker) + ".started"))
    assert result.status.value == "cancelled"
    assert _wait_for(marker.exists, 15), "the Ray task was not interrupted"


def test_fleetcall_serve_on_ray_answers_a_run_over_http() -> None:
    """``fleetcall serve --ray --replicas 2`` joined to this cluster: the demo's emulated GPUs
    served over HTTP by the command, two Serve replicas sharing one scheduler, a run answered
    through Serve's proxy on 127.0.0.1; SIGINT stops it cleanly. ``--log-level debug`` reaches
    the replicas: each logs at debug (configured as ``fleetcall serve`` configures its own),
    in its worker's log file in this cluster's session."""
    import signal
    import subprocess
    import sys

    import httpx

    from fleetcall.distributed.serve import free_port

    port = free_port("127.0.0.1")
    address = ray.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "fleetcall.cli", "serve", "--ray", "--replicas", "2",
               "--replica-cpus", "0", "--port", str(port), "--ray-address", address,
               "--log-level", "debug"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:                       # until it says where it serves
            lines.append(line)
            if "fleetcall serve: on Ray Serve" in line or proc.poll() is not None:
                break
        assert f"at http://127.0.0.1:{port}" in lines[-1], "".join(lines)
        answers = set()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(4):
                reply = client.post("/v1/runs", json={"query": "Which is densest?"})
                assert reply.status_code == 200, reply.text
                body = reply.json()
                assert body["status"] == "answered", body
                answers.add(body["answer"])
            assert client.get("/healthz").json() == {"status": "ok"}
        assert answers == {"Germany, with about 236 people per km2"}
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "fleetcall serve: stopped" in out, out
        logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # this cluster's
        debug = [line for f in logs.glob("worker-*.err") for line in f.read_text().splitlines()
                 if "DEBUG" in line and "Serve replica (pid" in line]
        assert len(debug) == 2 and all("log level debug" in line for line in debug), debug
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
