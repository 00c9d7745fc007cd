"""``fleetcall serve``: run fleetcall as an HTTP service (see :mod:`fleetcall.service.app` for the API).

    fleetcall serve --app myagent:make_app --port 8080 --token-env FLEETCALL_TOKEN
    curl -s localhost:8080/v1/runs -H "Authorization: Bearer $FLEETCALL_TOKEN" \\
         -H 'Content-Type: application/json' -d '{"query": "How dense is France?"}'

``--app module:attribute`` serves your own agent: the attribute is an ``Orchestrator``, or a
function (plain or async, no arguments) returning an ``Orchestrator`` or a pair
``(Orchestrator, EndpointPool | None)``; it is called on the serving loop, and the pool it
returns is shown by ``/v1/endpoints`` and ``/metrics`` and closed when the server stops. The
module is imported from the current directory first (as uvicorn does).

fleetcall's logs (:mod:`fleetcall.logs`: ``run.start``/``run.end`` at INFO, failures at WARNING)
go to stderr at ``--log-level`` (``info`` by default), unless the ``--app`` module configured
logging itself (then its handlers and levels stand, but for a ``--log-level`` given).

Without ``--app`` the demo is served: the ``parallelqa`` demo's tools, its model a pool of emulated
GPUs answering with the demo's script (``--pool emulated``, the default: two A100-80G and one L40S
serving llama-3.1-8b), or the endpoints of a pool file (``--pool pool.toml``).

Prints the URL once the socket is bound, serves until Ctrl-C or SIGTERM (in-flight runs are
cancelled and listed), then closes the pool; exit code 0. Bad arguments, an ``--app`` that cannot
be imported, raises or gives no orchestrator, a missing token variable or an unusable port exit
with code 2. Ctrl-C while the factory still runs exits with 130, SIGTERM then ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from pydantic import ValidationError

from fleetcall.service.app import create_app
from fleetcall.cli import quiet_stop_signals
from fleetcall.demos import parallelqa
from fleetcall.observe import describe_exception
from fleetcall.demos.common import embedded_pool
from fleetcall.errors import ConfigError
from fleetcall.executor.orchestrator import Orchestrator
from fleetcall.router.config import load_pool_config
from fleetcall.router.pool import EndpointPool, script_responder



def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fleetcall serve", description="Run fleetcall as an HTTP service: your own agent with --app, "
        "else the parallelqa demo (the demo is served only when --app is absent).")
    p.add_argument("--app", default=None, metavar="MODULE:ATTRIBUTE",
                   help="your agent: an Orchestrator, or a function returning one or (Orchestrator, "
                        "EndpointPool); without it the parallelqa demo is served")
    p.add_argument("--name", default="fleetcall",
                   help="the agent's name: the 'model' of /v1/chat/completions (default: fleetcall)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--pool", default=None,
                   help="the demo's model (without --app): 'emulated' (in-process GPUs, scripted "
                        "answers; the default) or a pool file (TOML/YAML)")
    p.add_argument("--token-env", default=None, metavar="NAME",
                   help="require 'Authorization: Bearer <token>', the token read from this variable")
    p.add_argument("--max-in-flight", type=int, default=None, metavar="N",
                   help="runs executing at once; more get 429 (default: no cap)")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                   help="fleetcall's logs on stderr (run start and end, rejected plans, failed tools, "
                        "retries, cooldowns), with time, level and logger (default: info, unless "
                        "the --app module configured logging itself); with --ray, every "
                        "replica's too (in its Ray worker's log file)")
    ray = p.add_argument_group("Ray Serve (the [ray] extra; see fleetcall.distributed.serve)")
    ray.add_argument("--ray", action="store_true",
                     help="serve N replicas with Ray Serve, all placing through one shared scheduler")
    ray.add_argument("--replicas", type=int, default=None, metavar="N", help="with --ray: replicas (1)")
    ray.add_argument("--autoscaling", default=None, metavar="JSON",
                     help="with --ray: Ray Serve's autoscaling_config instead of --replicas, e.g. "
                          "'{\"min_replicas\": 1, \"max_replicas\": 4}'")
    ray.add_argument("--ray-address", default=None,
                     help="with --ray: the cluster to join ('auto': the one `ray start` runs; "
                          "default: start a local one)")
    ray.add_argument("--replica-cpus", type=float, default=0.5,
                     help="with --ray: CPUs each replica reserves (0.5)")
    return p


def configure_logging(level: str | None) -> None:
    """fleetcall's loggers at ``level`` (None: ``info``), shown on stderr one line each with
    time, level and logger name. An ``--app`` module that configured logging itself keeps its
    handlers, and its levels unless ``level`` is given."""
    configured = bool(logging.getLogger().handlers)
    if level is not None or not configured:
        logging.getLogger("fleetcall").setLevel((level or "info").upper())
    if not configured:
        logging.basicConfig(format="%(asctime)s %(levelname)-7s %(name)s  %(message)s")


def build_pool(spec: str) -> EndpointPool:
    """The pool ``--pool`` names; emulated endpoints answer with the parallelqa script."""
    if spec == "emulated":
        return embedded_pool(parallelqa.respond)
    return EndpointPool.load(spec, responder=script_responder(parallelqa.respond))


def read_token(name: str | None) -> str | None:
    if name is None:
        return None
    token = os.environ.get(name, "")
    if not token:
        raise ConfigError(f"--token-env {name}: the variable is unset or empty")
    return token


@dataclass(frozen=True, slots=True)
class AppSpec:
    """What ``--app module:attribute`` names, imported (the attribute not yet called)."""

    spec: str                                  # "module:attribute" as given
    target: Orchestrator | Callable[[], Any]   # the attribute: an orchestrator or its factory


def load_app(spec: str) -> AppSpec:
    """Import ``module:attribute`` (the current directory first on the path); ConfigError if
    the spec is malformed, the module cannot be imported, or the attribute is missing or is
    neither an Orchestrator nor callable."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"--app {spec!r}: expected MODULE:ATTRIBUTE, e.g. myagent:make_app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:   # noqa: BLE001  # any import-time error of the user's module
        raise ConfigError(f"--app {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"--app {spec!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not isinstance(target, Orchestrator) and not callable(target):
        raise ConfigError(f"--app {spec!r}: {type(target).__name__} is neither an Orchestrator nor a "
                          "function returning one")
    return AppSpec(spec, target)


async def build_app(app: AppSpec) -> tuple[Orchestrator, EndpointPool | None]:
    """The orchestrator (and pool) ``app`` gives: the attribute itself, or what calling (and
    awaiting) it returns; ConfigError if that is not an Orchestrator or (Orchestrator, pool)."""
    made: Any = app.target
    if not isinstance(made, Orchestrator):
        try:
            made = made()
            if inspect.isawaitable(made):
                made = await made
        except Exception as exc:   # noqa: BLE001  # any bug of the user's factory
            raise ConfigError(f"--app {app.spec!r} raised {describe_exception(exc)}") from exc
    if isinstance(made, Orchestrator):
        return made, None
    if (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], Orchestrator)
            and (made[1] is None or isinstance(made[1], EndpointPool))):
        return made[0], made[1]
    raise ConfigError(f"--app {app.spec!r} returned {type(made).__name__}; expected an Orchestrator "
                      "or (Orchestrator, EndpointPool | None)")


async def _agent(args: argparse.Namespace, app: AppSpec | None) -> tuple[Orchestrator, EndpointPool | None]:
    """The user's agent (``--app``), else the demo's on the ``--pool`` it names."""
    if app is not None:
        return await build_app(app)
    pool = build_pool(args.pool or "emulated")
    return Orchestrator(tools=[parallelqa.make_search()], llm=pool), pool


async def serve(args: argparse.Namespace, token: str | None, sock: socket.socket,
                app_spec: AppSpec | None = None) -> None:
    """Build pool and orchestrator on the serving loop, serve until a signal, close both (the
    orchestrator's tool threads are not waited for; see its ``aclose``)."""
    orchestrator, pool = await _agent(args, app_spec)   # (Ctrl-C and SIGTERM stop a factory that hangs)
    try:
        app = create_app(orchestrator, pool=pool, token=token, max_in_flight=args.max_in_flight, name=args.name)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                               timeout_keep_alive=30))
        with quiet_stop_signals():
            await server.serve(sockets=[sock])
        cancelled = app.state.shutdown_report
        if cancelled:
            print(f"fleetcall serve: cancelled {len(cancelled)} run(s) in flight: {', '.join(cancelled)}", flush=True)
    finally:
        await orchestrator.aclose()
        if pool is not None:
            await pool.aclose()


def main(argv: list[str]) -> int:
    """``fleetcall serve [--app MODULE:ATTRIBUTE] [--name NAME] [--host H] [--port P]
    [--pool emulated|PATH] [--token-env NAME] [--max-in-flight N] [--log-level LEVEL]``."""
    args = _parser().parse_args(argv)
    try:
        token = read_token(args.token_env)
        if args.max_in_flight is not None and args.max_in_flight < 1:
            raise ConfigError(f"--max-in-flight must be >= 1, got {args.max_in_flight}")
        if not args.name.strip():
            raise ConfigError("--name must not be blank")
        if args.app is not None and args.pool is not None:
            raise ConfigError("--pool sets the demo's model; with --app, your factory returns the pool")
        app_spec = load_app(args.app) if args.app is not None else None
        configure_logging(args.log_level)   # after the --app module's own logging setup, if any
        if args.pool not in (None, "emulated"):
            load_pool_config(args.pool)   # a bad pool file fails here, before the socket is bound
    except (ConfigError, ValidationError, ValueError, OSError) as exc:
        print(f"fleetcall serve: error: {exc}", file=sys.stderr)
        return 2
    if args.ray or args.replicas is not None or args.autoscaling is not None:
        from fleetcall.distributed.serve import run_cli
        return run_cli(args, token)
    try:
        sock = socket.create_server((args.host, args.port))
    except OSError as exc:
        print(f"fleetcall serve: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    what = f"app {args.app}" if app_spec is not None else f"demo on pool {args.pool or 'emulated'}"
    print(f"fleetcall serve: {what} as {args.name!r}, auth {'on' if token else 'off'}, at http://{host}:{port}",
          flush=True)
    with sock:
        try:
            asyncio.run(serve(args, token, sock, app_spec))
        except ConfigError as exc:   # the --app factory raised, or gave no orchestrator
            if exc.__cause__ is not None:
                traceback.print_exception(exc.__cause__, file=sys.stderr)
            print(f"fleetcall serve: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:    # Ctrl-C before the server started (a factory still running)
            print("fleetcall serve: interrupted before the server started", file=sys.stderr)
            return 130
    print("fleetcall serve: stopped", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
