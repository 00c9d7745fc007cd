"""``fleetcall serve``: argument errors exit 2; a real server answers and stops cleanly on SIGINT;
``--app module:attribute`` serves the user's own agent."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fleetcall.cli import COMMANDS
from fleetcall.demos import parallelqa
from fleetcall.cli.serve import build_app, load_app, main
from fleetcall.errors import ConfigError

from tests.service import served_app

ROOT = Path(__file__).resolve().parents[2]


def test_serve_is_a_registered_command() -> None:
    assert COMMANDS["serve"][0] == "fleetcall.cli.serve"


def test_missing_token_variable_exits_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETCALL_TEST_TOKEN_UNSET", raising=False)
    assert main(["--token-env", "FLEETCALL_TEST_TOKEN_UNSET", "--port", "0"]) == 2
    assert "FLEETCALL_TEST_TOKEN_UNSET" in capsys.readouterr().err


def test_bad_pool_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--pool", "/nonexistent/pool.toml", "--port", "0"]) == 2
    assert "error" in capsys.readouterr().err


def test_serves_a_query_then_stops_on_sigint() -> None:
    env = {**os.environ, "FLEETCALL_TOKEN": "cli-token"}
    proc = subprocess.Popen([sys.executable, "-m", "fleetcall.cli", "serve", "--port", "0", "--token-env", "FLEETCALL_TOKEN"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        url = re.search(r"http://[\d.]+:\d+", first)
        assert url, first
        headers = {"authorization": "Bearer cli-token"}
        with httpx.Client(base_url=url.group(0), timeout=30, headers=headers) as c:
            r = c.post("/v1/runs", json={"query": parallelqa.QUESTION})
            assert r.status_code == 200 and r.json()["answer"] == parallelqa.expected_answer()
            names = [e["name"] for e in c.get("/v1/endpoints").json()]
            assert names == ["A100-80G-0", "A100-80G-1", "L40S-2"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def test_help_says_the_demo_is_served_only_without_app(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--app MODULE:ATTRIBUTE" in text and "the demo is served only when --app is absent" in text


@pytest.mark.parametrize(("argv", "words"), [
    (["--app", "no_colon_here"], "MODULE:ATTRIBUTE"),
    (["--app", ":make_app"], "MODULE:ATTRIBUTE"),
    (["--app", "tests.service.served_app:"], "MODULE:ATTRIBUTE"),
    (["--app", "no_such_module_xyz:make_app"], "cannot import"),
    (["--app", "tests.service.served_app:missing"], "no attribute"),
    (["--app", "tests.service.served_app:NOT_AN_APP"], "neither an Orchestrator"),
    (["--app", "tests.service.served_app:make_app", "--pool", "emulated"], "--pool"),
    (["--name", "  "], "--name"),
])
def test_a_bad_app_exits_2_before_binding(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_app_factories_of_each_shape() -> None:
    async def main_() -> None:
        orchestrator, pool = await build_app(load_app("tests.service.served_app:make_app"))
        assert pool is not None and [s.name for s in pool.snapshot()] == ["L40S-0"]
        assert (await orchestrator.run(served_app.QUESTION)).answer == served_app.ANSWER
        await pool.aclose()
        orchestrator, pool = await build_app(load_app("tests.service.served_app:make_app_async"))
        assert pool is None and (await orchestrator.run(served_app.QUESTION)).answer == served_app.ANSWER
        with pytest.raises(ConfigError, match="returned str"):
            await build_app(load_app("tests.service.served_app:returns_junk"))

    asyncio.run(main_())


@pytest.mark.parametrize(("attribute", "words"), [
    ("raises", "raised RuntimeError: the user's factory failed"),
    ("raises_async", "raised LookupError: no such model"),
])
def test_a_factory_that_raises_exits_2_naming_it(attribute: str, words: str, capsys: pytest.CaptureFixture[str]) -> None:
    """It used to end in a bare traceback (exit 1); the traceback is still shown, above the error."""
    assert main(["--app", f"tests.service.served_app:{attribute}", "--port", "0"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"fleetcall serve: error: --app 'tests.service.served_app:{attribute}'") and words in last


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_factory_that_hangs_can_be_stopped(sig: int) -> None:
    """Ctrl-C and SIGTERM were ignored until uvicorn started, so a factory that never returned
    left a process that only SIGKILL could end."""
    cmd = [sys.executable, "-m", "fleetcall.cli", "serve", "--app", "tests.service.served_app:hangs", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert lines[1].strip() == "factory started", lines
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGTERM


def test_serve_app_runs_the_users_agent_in_a_real_process() -> None:
    openai = pytest.importorskip("openai")
    env = {**os.environ, "FLEETCALL_TOKEN": "app-token"}
    cmd = [sys.executable, "-m", "fleetcall.cli", "serve", "--app", "tests.service.served_app:make_app",
           "--name", "reverser", "--port", "0", "--token-env", "FLEETCALL_TOKEN"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "app tests.service.served_app:make_app" in first, first
        url = re.search(r"http://[\d.]+:\d+", first)
        assert url, first
        headers = {"authorization": "Bearer app-token"}
        with httpx.Client(base_url=url.group(0), timeout=30, headers=headers) as c:
            r = c.post("/v1/runs", json={"query": served_app.QUESTION})
            assert r.status_code == 200 and r.json()["answer"] == served_app.ANSWER
            assert [t["tool"] for t in r.json()["tasks"]] == ["reverse"]
            assert [e["name"] for e in c.get("/v1/endpoints").json()] == ["L40S-0"]   # the app's pool
        with openai.OpenAI(base_url=f"{url.group(0)}/v1", api_key="app-token", timeout=30) as client:
            assert [m.id for m in client.models.list().data] == ["reverser"]
            reply = client.chat.completions.create(model="reverser", messages=[{"role": "user", "content": served_app.QUESTION}])
            assert reply.choices[0].message.content == served_app.ANSWER
            stream = client.chat.completions.create(model="reverser", stream=True,
                                                    messages=[{"role": "user", "content": served_app.QUESTION}])
            assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == served_app.ANSWER
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def test_the_runs_are_logged_on_stderr_at_the_log_level() -> None:
    # before: fleetcall serve configured no logging, so an operator saw no run.start/run.end at
    # all, and warnings only as bare text through Python's last-resort handler
    def serve_one(*level: str) -> str:
        proc = subprocess.Popen([sys.executable, "-m", "fleetcall.cli", "serve", "--port", "0", *level],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert proc.stdout is not None
            url = re.search(r"http://[\d.]+:\d+", proc.stdout.readline())
            assert url
            with httpx.Client(base_url=url.group(0), timeout=30) as c:
                assert c.post("/v1/runs", json={"query": parallelqa.QUESTION}).status_code == 200
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        return err

    err = serve_one()
    assert re.search(r"INFO +fleetcall\.executor +run\.start query_id=", err), err
    assert re.search(r"INFO +fleetcall\.executor +run\.end query_id=\S+ mode=compiled status=answered", err), err
    assert "run.start" not in serve_one("--log-level", "warning")


@pytest.mark.parametrize(("app_setup", "level", "effective"), [
    ("", None, "INFO"),                                                          # ours, at info
    ("", "debug", "DEBUG"),
    ("logging.basicConfig(level=logging.DEBUG, format='APP %(message)s')", None, "DEBUG"),   # the app's stand
    ("logging.basicConfig(level=logging.DEBUG, format='APP %(message)s')", "warning", "WARNING"),
])
def test_an_app_that_configures_logging_keeps_it(app_setup: str, level: str | None, effective: str) -> None:
    code = ("import logging\n" + app_setup + "\nfrom fleetcall.cli.serve import configure_logging\n"
            f"configure_logging({level!r})\n"
            "root = logging.getLogger()\n"
            "print(logging.getLevelName(logging.getLogger('fleetcall').getEffectiveLevel()), len(root.handlers),"
            " root.handlers[0].formatter._fmt)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    got_level, handlers, fmt = out.stdout.split(" ", 2)
    assert (got_level, handlers) == (effective, "1")
    assert fmt.startswith("APP") == bool(app_setup)
