"""``fleetcall serve``: argument errors exit 2; a real server answers and stops cleanly on SIGINT."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
import pytest

from fleetcall.cli import COMMANDS
from fleetcall.demos import parallelqa
from fleetcall.cli.serve import main


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
