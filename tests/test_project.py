"""The project's own promises about how it is run: the README's test command is CI's, and it
prints pytest's summary line (a pass/fail count a user can see)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s+(pip install .*python3 -m pytest.*)$", text, flags=re.M)
    assert len(commands) == 1, "the README states exactly one test command"
    return commands[0].strip()


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    pytest_part = _readme_test_command().split("&&")[-1].strip()
    assert any(line.strip() == pytest_part for line in ci.splitlines()), (
        f"{pytest_part!r} is not a line of .ci/run")


def test_ci_installs_the_extras_the_readme_test_command_installs() -> None:
    """The README's installs are .ci/run's (e.g. the ``routers`` extra the real-router test
    needs): a test that runs in CI but is skipped for a reader, or the reverse, is a surprise."""
    ci = [shlex.split(line.removeprefix("python3 -m ")) for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.startswith("python3 -m pip install")]
    for install in _readme_test_command().split("&&")[:-1]:
        args = shlex.split(install)
        assert args[:2] + ["-q"] + args[2:] in ci, f"{install.strip()!r} is not (quietly) a line of .ci/run"


def _quietness(args: list[str]) -> int:
    level = 0
    for arg in args:
        if arg == "--quiet":
            level += 1
        elif re.fullmatch(r"-q+", arg):
            level += len(arg) - 1
    return level


def test_the_test_command_prints_the_summary_line() -> None:
    """pytest drops its summary line ("N passed in Xs") at -qq: addopts and the command line
    together must stay below that."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    addopts = config["tool"]["pytest"]["ini_options"].get("addopts", "")
    command = shlex.split(_readme_test_command().split("&&")[-1])
    assert _quietness(shlex.split(addopts)) + _quietness(command) < 2
