"""Servers a real-clock benchmark starts on 127.0.0.1: emulated endpoints and external routers.

Each server is a child process (:class:`Child`) with its output in a log file; the benchmark
owns it from start to stop, by PID: :meth:`Child.stop` sends SIGTERM, waits, then SIGKILLs,
and :class:`Children` stops every child it holds when its ``with`` block ends, however it ends.
Starting is bounded: a server that exits or is not ready within ``timeout_s`` wall seconds is a
:class:`~fleetcall.errors.ServerStartError` naming it and quoting the end of its log (the
children already started are stopped).

- :func:`start_emulators` -- one ``fleetcall emulate`` per GPU, on port 0 (the port is read
  from its start line), all started at once;
- :func:`start_router` -- an OpenAI-compatible router of :data:`ROUTERS` (sglang-router,
  vllm-router: Rust routers installed as Python wheels) in front of given workers, ready once
  its ``/readiness`` counts every worker healthy.

:meth:`Child.cpu_seconds` reads the process's CPU time (user + system, all threads) from
``/proc/PID/stat``: the cost a router really adds per call, whatever else shares the machine.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import httpx

import fleetcall
from fleetcall.errors import ConfigError, ServerStartError
from fleetcall.ports import free_port

__all__ = ["Child", "Children", "EmulatorSpec", "ROUTERS", "RouterKind", "start_emulators",
           "start_router"]

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0   # wall seconds for a server to come up (the machine may be busy)
STOP_GRACE_S = 5.0       # wall seconds between SIGTERM and SIGKILL
_POLL_S = 0.05           # wall seconds between readiness checks
_LOG_TAIL = 1500         # characters of a log quoted in an error
_URL = re.compile(r"http://127\.0\.0\.1:(\d+)")
_R = TypeVar("_R")


@dataclass(slots=True)
class Child:
    """A server process this benchmark started; ``url`` is its root (``http://127.0.0.1:P``)."""

    name: str
    argv: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    log: Path                       # its stdout and stderr
    url: str = ""                   # set once it is ready

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return text[-_LOG_TAIL:].strip()

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the process (all its threads) so far; None where
        ``/proc`` is not available or the process is gone."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM, up to ``grace_s`` seconds to exit, then SIGKILL; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait()

    def failure(self, why: str) -> ServerStartError:
        tail = self.log_tail()
        return ServerStartError(f"{self.name} ({' '.join(self.argv)}) {why}"
                                + (f"; its log ends:\n{tail}" if tail else "; it wrote nothing"))


@dataclass(slots=True)
class Children:
    """Owns started servers: ``with Children() as kids:``; on leaving, each is stopped (last
    started first) and the log directory removed."""

    started: list[Child] = field(default_factory=list)
    _logs: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Children:
        self._logs = tempfile.TemporaryDirectory(prefix="fleetcall-bench-")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()
        if self._logs is not None:
            self._logs.cleanup()

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()

    def stop(self, child: Child) -> None:
        """Stop one child now (a router between two runs)."""
        child.stop()
        if child in self.started:
            self.started.remove(child)

    def spawn(self, name: str, argv: Sequence[str]) -> Child:
        if self._logs is None:
            raise RuntimeError("Children is used outside its with block")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        log = Path(self._logs.name) / f"{len(self.started)}-{slug}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=_child_env())
        child = Child(name, tuple(argv), popen, log)
        self.started.append(child)
        return child


def _child_env() -> dict[str, str]:
    """This environment, unbuffered, with this fleetcall first on the path (children import
    the same code as the benchmark, installed or not)."""
    root = str(Path(fleetcall.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


# ---- emulated endpoints ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmulatorSpec:
    """One ``fleetcall emulate`` server."""

    name: str          # endpoint name (also accepted as the model id)
    gpu: str           # GPU catalog name
    model: str
    tp: int | None = None
    extra: tuple[str, ...] = ()  # more ``fleetcall emulate`` options


def start_emulators(children: Children, specs: Sequence[EmulatorSpec], *, speed: float = 1.0,
                    timeout_s: float = START_TIMEOUT_S) -> list[Child]:
    """Start one ``fleetcall emulate`` per spec (all at once) and wait for each start line;
    returns them ready, in order, each with its ``url``."""
    started = []
    for spec in specs:
        argv = [sys.executable, "-m", "fleetcall.cli", "emulate", "--gpu", spec.gpu,
                "--model", spec.model, "--name", spec.name, "--host", HOST, "--port", "0",
                "--speed", repr(float(speed)), *(["--tp", str(spec.tp)] if spec.tp else []),
                *spec.extra]
        started.append(children.spawn(f"emulated endpoint {spec.name}", argv))
    deadline = time.monotonic() + timeout_s
    for child in started:
        port = _wait(child, deadline, _start_line_port)
        child.url = f"http://{HOST}:{port}"
    return started


def _start_line_port(child: Child) -> int | None:
    try:
        text = child.log.read_text(errors="replace")
    except OSError:
        return None
    found = _URL.search(text)
    return int(found.group(1)) if found else None


def _wait(child: Child, deadline: float, ready: Callable[[Child], _R | None]) -> _R:
    """Poll ``ready(child)`` until it answers, the child exits, or the deadline passes."""
    while True:
        value = ready(child)
        if value is not None:
            return value
        if not child.running():
            raise child.failure(f"exited with code {child.popen.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise child.failure("was not ready in time")
        time.sleep(_POLL_S)


# ---- external routers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouterKind:
    """How to start one kind of router: ``python -m MODULE`` with sglang-router's options."""

    module: str                   # its launcher module
    package: str                  # what to pip install
    policies: tuple[str, ...]     # --policy values it takes
    extra: tuple[str, ...] = ()   # options beyond workers, policy, host, ports


# router kind -> how to start it; one table, no if/elif chain.
ROUTERS: dict[str, RouterKind] = {
    "sglang": RouterKind("sglang_router.launch_router", "sglang-router",
                         ("cache_aware", "round_robin", "power_of_two", "random"),
                         ("--log-level", "warn", "--shutdown-grace-period-secs", "1")),
    "vllm": RouterKind("vllm_router.launch_router", "vllm-router",
                       ("cache_aware", "round_robin", "power_of_two", "random",
                        "consistent_hash"),
                       ("--log-level", "warning")),
}


def router_kind(kind: str, policy: str) -> RouterKind:
    """The kind, checked: ConfigError for an unknown kind or policy, or a router not installed."""
    found = ROUTERS.get(kind)
    if found is None:
        raise ConfigError(f"unknown router {kind!r}; fleetcall starts {', '.join(ROUTERS)} "
                          "(or give the URL of a running one)")
    if policy not in found.policies:
        raise ConfigError(f"{kind} router policy {policy!r} unknown; choose from "
                          f"{', '.join(found.policies)}")
    if importlib.util.find_spec(found.module.partition(".")[0]) is None:
        raise ConfigError(f"{found.package} is not installed: pip install 'fleetcall[routers]' "
                          f"(or pip install {found.package})")
    return found


def start_router(children: Children, kind: str, policy: str, workers: Sequence[str], *,
                 timeout_s: float = START_TIMEOUT_S) -> Child:
    """Start a ``kind`` router with ``policy`` in front of ``workers`` (root URLs); returns it
    once it reports every worker healthy."""
    spec = router_kind(kind, policy)
    port = free_port(HOST)
    argv = [sys.executable, "-m", spec.module, "--worker-urls", *workers, "--policy", policy,
            "--host", HOST, "--port", str(port), "--prometheus-host", HOST,
            "--prometheus-port", str(free_port(HOST)), "--worker-startup-check-interval", "1",
            *spec.extra]
    child = children.spawn(f"{kind} router ({policy})", argv)
    child.url = f"http://{HOST}:{port}"
    with httpx.Client(timeout=2.0) as http:
        _wait(child, time.monotonic() + timeout_s,
              lambda c: True if _router_ready(http, c.url, len(workers)) else None)
    return child


def _router_ready(http: httpx.Client, url: str, workers: int) -> bool:
    """``/readiness`` answers 200 with every worker healthy (or, without that count, 200)."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        response = http.get(f"{url}/readiness")
        if response.status_code != 200:
            return False
        body = response.json()
        healthy = body.get("healthy_workers") if isinstance(body, dict) else None
        return healthy is None or healthy >= workers
    return False
