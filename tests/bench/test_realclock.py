"""``fleetcall bench scheduler --clock real``: the dilated clock, the live-endpoint helpers on the
virtual clock, and two small end-to-end runs over real HTTP on 127.0.0.1 (one through
sglang-router, skipped when it is not installed). Real-time tests assert no durations beyond
generous bounds; every server they start is checked gone afterwards."""

from __future__ import annotations

import asyncio
import doctest
import importlib.util
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetcall.bench import dilation
from fleetcall.bench.dilation import DilatedEventLoop, run_dilated
from fleetcall.bench.live import CallerTimed, LiveEndpoint, busy_seconds, check_speed, http_client, settle
from fleetcall.bench.procs import Children, EmulatorSpec, start_emulators
from fleetcall.bench.targets import parse_targets
from fleetcall.bench.workloads import CallSpec, QuerySpec, independent_calls, load_workload
from fleetcall.cli import main as cli
from fleetcall.errors import ConfigError
from fleetcall.gpumodel.perf import Deployment
from fleetcall.llm.base import Chunk, LLMRequest, Message, Usage, complete
from fleetcall.sim.emulator import EmulatedEndpoint
from fleetcall.sim.fronts import EmulatorTransport
from fleetcall.vclock import run_virtual

HAVE_SGLANG = importlib.util.find_spec("sglang_router") is not None


# ---- the dilated clock ----------------------------------------------------------------------------


def test_a_dilated_loop_runs_its_clock_k_times_faster_than_the_wall() -> None:
    async def nap() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(30.0)
        return start, loop.time()

    wall = time.monotonic()
    start, end = run_dilated(nap(), speed=200.0)
    took = time.monotonic() - wall
    assert end - start >= 30.0
    assert took < 15.0  # 0.15 s expected; an ordinary loop would take 30 s


def test_a_dilated_loop_refuses_a_bad_speed_and_its_doctest_holds() -> None:
    with pytest.raises(ValueError, match="speed must be a finite number > 0"):
        DilatedEventLoop(0.0)
    assert doctest.testmod(dilation).failed == 0


# ---- workload and targets ---------------------------------------------------------------------------


def test_independent_calls_makes_every_call_a_query_of_its_own() -> None:
    a, b, c = CallSpec("plan", 100, 10), CallSpec("gen", 200, 20), CallSpec("gen", 300, 30)
    queries = [QuerySpec("q1", ((a,), (b, c)), tenant="t"), QuerySpec("q2", ((c,),))]
    flat = independent_calls(queries)
    assert [(q.query_id, q.stages, q.tenant) for q in flat] == [
        ("q1/0", ((a,),), "t"), ("q1/1", ((b,),), "t"), ("q1/2", ((c,),), "t"),
        ("q2/0", ((c,),), "default")]
    trace = load_workload("trace1")
    assert len(independent_calls(trace)) == sum(q.n_calls for q in trace)


def test_targets_are_policies_both_ways_then_routers() -> None:
    targets = parse_targets(["least-busy", "slack"], ["http://127.0.0.1:9/v1"], "both")
    assert [(t.label, t.kind, t.gpus_known) for t in targets] == [
        ("least-busy", "pool", True), ("least-busy (gpus unknown)", "pool", False),
        ("slack", "pool", True), ("slack (gpus unknown)", "pool", False),
        ("http://127.0.0.1:9/v1", "url", True)]
    assert [t.label for t in parse_targets(["slack"], [], "unknown")] == ["slack (gpus unknown)"]


@pytest.mark.parametrize("router, words", [
    ("sglang", "KIND:POLICY"), ("nginx:round_robin", "unknown router 'nginx'"),
    ("sglang:fastest", "policy 'fastest' unknown"),
])
def test_bad_router_specs_are_named(router: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_targets(["slack"], [router], "known")


def test_a_running_router_needs_the_endpoints_it_routes_to(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["bench", "scheduler", "--clock", "real", "--router", "http://127.0.0.1:9",
             "--queries", "2", "--model", "llama-3.1-8b"])
    assert info.value.code == 2 and "--endpoints" in capsys.readouterr().err


def test_bad_real_clock_options_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    for extra, words in ((["--speed", "0"], "--speed must be"), (["--duration", "-1"], "--duration must be"),
                         (["--endpoints", "http://127.0.0.1:9"], "--endpoints names 1 URLs but --gpus 4")):
        with pytest.raises(SystemExit) as info:
            cli(["bench", "scheduler", "--clock", "real", "--queries", "2", "--model",
                 "llama-3.1-8b", *extra])
        assert info.value.code == 2 and words in capsys.readouterr().err


def test_the_virtual_clock_replays_independent_calls_for_a_duration(tmp_path: Path) -> None:
    out = tmp_path / "virtual.json"
    assert cli(["bench", "scheduler", "--trace", "trace1", "--independent-calls", "--duration", "5",
                "--rates", "1,2", "--policy", "least-busy", "--model", "llama-3.1-8b",
                "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [(r["rate"], r["queries"], r["completed"]) for r in runs] == [(1.0, 5, 5), (2.0, 10, 10)]


# Each of these fails with its message before any server starts (a start would cost seconds and,
# half-way through a sweep, lose the runs done so far).
_BAD_REAL_CLOCK = [
    (["--rates", "1,0"], "--rates wants arrival rates in queries/s, each a finite number > 0; got '0'"),
    (["--rates", "0.5,fast"], "got 'fast'"),
    (["--rates", "1,,2"], "got ''"),
    (["--rate", "nan"], "--rate wants arrival rates"),
    (["--speed", "inf"], "--speed must be a finite number > 0"),
    (["--duration", "-1"], "--duration must be"),
    (["--slots", "0"], "--slots must be >= 1"),
    (["--timeout", "-5"], "--timeout must be a number of seconds > 0"),
    (["--arrivals", "gamma", "--cv", "-1"], "cv must be a finite number > 0"),
    (["--arrivals", "no-such-arrivals"], "no such file"),
    (["--overhead-concurrency", "0"], "--overhead-concurrency"),
    (["--gpus", "A100-80G,unknown"], "use --clock real --pool-gpus unknown"),
    (["--gpus", "A100-80G,H900"], "unknown GPU 'H900'"),
    (["--policy", "fastest"], "unknown policy fastest"),
    (["--policy", "slack", "--policy", "slack"], "slack named twice"),
    (["--router", "sglang:round_robin", "--router", "sglang:round_robin"],
     "sglang:round_robin named twice"),
    (["--router", "sglang:fastest"], "policy 'fastest' unknown"),
    (["--router", "nginx:round_robin"], "unknown router 'nginx'"),
    (["--router", "http://127.0.0.1:9"], "pass --endpoints"),
    (["--endpoints", "http://127.0.0.1:9"], "--endpoints names 1 URLs but --gpus 2 GPUs"),
    (["--json", "/no/such/directory/out.json"], "its directory does not exist"),
]


@pytest.mark.parametrize("extra, words", _BAD_REAL_CLOCK, ids=[" ".join(e) for e, _ in _BAD_REAL_CLOCK])
def test_bad_real_clock_input_fails_before_any_server_starts(
        extra: list[str], words: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []

    def spawn(self: Children, name: str, argv: list[str]) -> None:
        started.append(name)
        raise AssertionError(f"{name} started before the bad input was refused")

    monkeypatch.setattr(Children, "spawn", spawn)
    with pytest.raises(SystemExit) as info:
        cli(["bench", "scheduler", "--clock", "real", "--speed", "20", "--queries", "2",
             "--model", "llama-3.1-8b", "--gpus", "A100-80G,L40S", "--independent-calls",
             "--overhead-calls", "0", *extra])
    assert info.value.code == 2
    assert words in capsys.readouterr().err
    assert started == []


def test_the_spawn_seam_sees_a_good_run_start_its_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: the same command line, without the bad input, reaches spawn."""
    def spawn(self: Children, name: str, argv: list[str]) -> None:
        raise RuntimeError(f"spawn {name}")

    monkeypatch.setattr(Children, "spawn", spawn)
    with pytest.raises(RuntimeError, match="spawn emulated endpoint A100-80G-0"):
        cli(["bench", "scheduler", "--clock", "real", "--speed", "20", "--queries", "2",
             "--model", "llama-3.1-8b", "--gpus", "A100-80G,L40S", "--independent-calls",
             "--overhead-calls", "0"])


@pytest.mark.parametrize("extra, words", [
    (["--router", "sglang:cache_aware"], "--router needs --clock real"),
    (["--speed", "4", "--pool-gpus", "unknown"], "--speed, --pool-gpus need --clock real"),
    (["--duration", "0"], "--duration must be a number of seconds > 0"),
])
def test_real_clock_options_on_the_virtual_clock_are_refused(
        extra: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["bench", "scheduler", "--queries", "2", "--policy", "slack", *extra])
    assert info.value.code == 2 and words in capsys.readouterr().err


# ---- live-endpoint helpers, in-process on the virtual clock --------------------------------------


class _SlowFirst:
    """Holds each call 2 s, then answers; says the endpoint took 0.5 s to the first token."""

    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        await asyncio.sleep(2.0)
        yield Chunk("hello")
        await asyncio.sleep(1.0)
        yield Chunk("", usage=Usage(1, 2), info={"ttft_s": 0.5, "endpoint": "e"})


def test_ttft_is_measured_where_the_caller_sits() -> None:
    done = run_virtual(complete(CallerTimed(_SlowFirst()), LLMRequest((Message("user", "hi"),))))
    assert done.info is not None
    assert (done.info["ttft_s"], done.info["endpoint_ttft_s"], done.info["total_s"]) == (2.0, 0.5, 3.0)


def _live(ep: EmulatedEndpoint) -> tuple[LiveEndpoint, httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=EmulatorTransport(ep), base_url="http://a100.emulated")
    return LiveEndpoint(ep.name, "http://a100.emulated", "A100-80G"), client


def test_settle_waits_for_the_endpoint_then_empties_its_cache() -> None:
    ep = EmulatedEndpoint("A100-80G", "llama-3.1-8b", name="a100", speed=4.0)
    live, client = _live(ep)
    body = {"messages": [{"role": "user", "content": "word " * 2000}], "max_tokens": 400}

    async def main() -> tuple[float, bool, dict[str, float] | None, float, int]:
        async with client:
            loop = asyncio.get_running_loop()
            await client.post("/v1/chat/completions", json=body)
            call = asyncio.create_task(client.post("/v1/chat/completions", json=body))
            await asyncio.sleep(0.01)
            start = loop.time()
            cold = await settle(client, [live], speed=4.0)
            waited = loop.time() - start
            await call
            busy = await busy_seconds(client, [live])
            expected = ep.engine.stats().busy_s
            await check_speed(client, [live], 4.0)
            again = (await client.post("/v1/chat/completions", json=body)).json()
            return waited, cold, busy, expected, again["usage"]["prompt_tokens_details"]["cached_tokens"]

    waited, cold, busy, expected, cached = run_virtual(main())
    assert waited > 0.1 and cold and cached == 0
    assert busy is not None and busy["a100"] == pytest.approx(expected, rel=1e-9) and expected > 0


def test_an_endpoint_at_another_speed_is_refused() -> None:
    live, client = _live(EmulatedEndpoint("A100-80G", "llama-3.1-8b", speed=4.0))

    async def main() -> None:
        async with client:
            await check_speed(client, [live], 10.0)

    with pytest.raises(ConfigError, match="runs at speed 4 but the benchmark's --speed is 10"):
        run_virtual(main())


# ---- end to end over real HTTP ------------------------------------------------------------------


def _live_children() -> set[int]:
    """PIDs of this process's children that have not exited (zombies excluded)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def _bench(tmp_path: Path, *extra: str) -> dict[str, Any]:
    before = _live_children()
    out = tmp_path / "real.json"
    code = cli(["bench", "scheduler", "--clock", "real", "--speed", "20", "--trace", "trace1",
                "--independent-calls", "--queries", "4", "--rate", "2", "--model", "llama-3.1-8b",
                "--json", str(out), *extra])
    assert code == 0
    assert _live_children() <= before, "a server the benchmark started is still running"
    return json.loads(out.read_text())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_policy_over_real_http_with_and_without_gpu_profiles(tmp_path: Path) -> None:
    rep = _bench(tmp_path, "--gpus", "A100-80G", "--policy", "least-busy", "--pool-gpus", "both",
                 "--overhead-calls", "0")
    assert [r["policy"] for r in rep["runs"]] == ["least-busy", "least-busy (gpus unknown)"]
    for run in rep["runs"]:
        assert run["completed"] == run["queries"] == 4 and run["clock"] == "real"
        assert run["cold_start"] and run["utilisation"]["A100-80G-0"] > 0
        assert run["ttft_s"]["p99"] >= run["ttft_s"]["p95"] >= run["ttft_s"]["p50"] > 0
        assert run["cpu_ms_per_call"]["client"] >= 0
    assert rep["overhead"] == []


@pytest.mark.skipif(not HAVE_SGLANG, reason="sglang-router not installed (pip install 'fleetcall[routers]')")
def test_calls_go_through_sglang_router_to_the_emulated_endpoints(tmp_path: Path) -> None:
    rep = _bench(tmp_path, "--gpus", "A100-80G,L40S", "--policy", "rr-fcfs",
                 "--router", "sglang:round_robin", "--overhead-calls", "8", "--overhead-concurrency", "4",
                 "--overhead-repeat", "1")
    rr, router = rep["runs"]
    assert router["policy"] == "sglang:round_robin" and router["target"]["router"] == "sglang"
    for run in (rr, router):
        assert run["completed"] == run["queries"] == 4, run.get("first_error")
        assert all(u > 0 for u in run["utilisation"].values())  # round robin reached both
    assert router["cpu_ms_per_call"]["router"] is not None
    overhead = {(o["target"], o["concurrency"]): o for o in rep["overhead"]}
    assert set(overhead) == {("rr-fcfs", 1), ("rr-fcfs", 4), ("sglang:round_robin", 1),
                             ("sglang:round_robin", 4)}
    assert overhead["sglang:round_robin", 4]["router_cpu_ms_per_call"] is not None
    assert overhead["rr-fcfs", 4]["router_cpu_ms_per_call"] is None
    assert all(o["wall_ms_per_call"] > 0 and o["direct_wall_ms_per_call"] > 0 for o in overhead.values())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_fleetcall_emulate_process_at_speed_k_serves_k_times_faster_with_the_gpus_figures() -> None:
    """A real ``fleetcall emulate --speed 20`` process, called from a client on the dilated clock:
    the call takes the GPU's time on the client's clock and 1/20 of it on the wall, and the
    endpoint's /metrics report the GPU's figures. Bounds are generous (the machine is shared):
    the emulator may run late, never early."""
    speed, before = 20.0, _live_children()
    alone_of = Deployment.of("A100-80G", "llama-3.1-8b").single_request_latency
    spec = EmulatorSpec("a100", "A100-80G", "llama-3.1-8b", extra=("--responder", "lengths"))
    with Children() as children:
        (child,) = start_emulators(children, [spec], speed=speed)

        async def call() -> tuple[dict[str, Any], float, str]:
            async with http_client(speed) as http:
                loop = asyncio.get_running_loop()
                start = loop.time()
                response = await http.post(f"{child.url}/v1/chat/completions", json={
                    "model": "llama-3.1-8b", "max_tokens": 1500,
                    "messages": [{"role": "user", "content": "word " * 3000}]})
                took = loop.time() - start
                return response.json(), took, (await http.get(f"{child.url}/metrics")).text

        wall = time.monotonic()
        body, took, text = run_dilated(call(), speed=speed)
        wall = time.monotonic() - wall
    assert _live_children() <= before, "the emulator is still running"
    usage = body["usage"]
    alone = alone_of(usage["prompt_tokens"], usage["completion_tokens"])
    assert usage["completion_tokens"] == 1500 and alone.total_s > 8.0

    def value(name: str) -> float:
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == name)

    assert value("fleetcall_emulator_speed") == speed
    assert alone.total_s * 0.999 <= value("vllm:e2e_request_latency_seconds_sum") <= alone.total_s * 2 + 5
    assert alone.ttft_s * 0.999 <= value("vllm:time_to_first_token_seconds_sum") <= alone.ttft_s * 2 + 5
    assert alone.total_s * 0.999 <= took <= alone.total_s * 2 + 5  # GPU seconds on the client
    assert wall < alone.total_s / 2  # about 1/20 of it; at speed 1 it would take all of it


@pytest.mark.skipif(not HAVE_SGLANG, reason="sglang-router not installed (pip install 'fleetcall[routers]')")
def test_sglang_cache_aware_and_power_of_two_next_to_slack_without_gpu_profiles(tmp_path: Path) -> None:
    rep = _bench(tmp_path, "--gpus", "A100-80G,L40S", "--policy", "slack", "--pool-gpus", "unknown",
                 "--router", "sglang:cache_aware", "--router", "sglang:power_of_two",
                 "--overhead-calls", "0")
    assert [r["policy"] for r in rep["runs"]] == ["slack (gpus unknown)", "sglang:cache_aware",
                                                  "sglang:power_of_two"]
    for run in rep["runs"]:
        assert run["completed"] == run["queries"] == 4, run.get("first_error")
        assert run["latency_s"]["p95"] >= run["latency_s"]["p50"] > 0 and run["ttft_s"]["p50"] > 0
        assert sum(run["utilisation"].values()) > 0 and run["cold_start"]
    slack, *routers = rep["runs"]
    assert slack["target"]["gpus_known"] is False and slack["cpu_ms_per_call"]["router"] is None
    assert all(r["cpu_ms_per_call"]["router"] is not None for r in routers)
