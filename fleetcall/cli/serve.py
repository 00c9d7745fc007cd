"""``fleetcall serve``: run fleetcall as an HTTP service (see :mod:`fleetcall.service.app` for the API).

    fleetcall serve --port 8080 --token-env FLEETCALL_TOKEN
    curl -s localhost:8080/v1/runs -H "Authorization: Bearer $FLEETCALL_TOKEN" \\
         -d '{"query": "Which of France, Germany, Italy and Spain is the most densely populated?"}'

The orchestrator holds the ``parallelqa`` demo's tools; its model is a pool of emulated GPUs
answering with the demo's script (``--pool emulated``, the default: two A100-80G and one L40S
serving llama-3.1-8b), or the endpoints of a pool file (``--pool pool.toml``). Prints the URL once
the socket is bound, serves until Ctrl-C or SIGTERM (in-flight runs are cancelled and listed),
then closes the pool; exit code 0. Bad arguments, a missing token variable or an unusable port
exit with code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

import uvicorn
from pydantic import ValidationError

from fleetcall.service.app import create_app
from fleetcall.cli import quiet_stop_signals
from fleetcall.demos import parallelqa
from fleetcall.demos.common import embedded_pool
from fleetcall.errors import ConfigError
from fleetcall.executor.orchestrator import Orchestrator
from fleetcall.router.config import load_pool_config
from fleetcall.router.pool import EndpointPool, script_responder



def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleetcall serve", description="Run fleetcall as an HTTP service.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--pool", default="emulated",
                   help="'emulated' (in-process GPUs, scripted answers) or a pool file (TOML/YAML)")
    p.add_argument("--token-env", default=None, metavar="NAME",
                   help="require 'Authorization: Bearer <token>', the token read from this variable")
    p.add_argument("--max-in-flight", type=int, default=None, metavar="N",
                   help="runs executing at once; more get 429 (default: no cap)")
    return p


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


async def serve(args: argparse.Namespace, token: str | None, sock: socket.socket) -> None:
    """Build pool and orchestrator on the serving loop, serve until a signal, close the pool."""
    pool = build_pool(args.pool)
    try:
        orchestrator = Orchestrator(tools=[parallelqa.make_search()], llm=pool)
        app = create_app(orchestrator, pool=pool, token=token, max_in_flight=args.max_in_flight)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                               timeout_keep_alive=30))
        await server.serve(sockets=[sock])
        cancelled = app.state.shutdown_report
        if cancelled:
            print(f"fleetcall serve: cancelled {len(cancelled)} run(s) in flight: {', '.join(cancelled)}", flush=True)
    finally:
        await pool.aclose()


def main(argv: list[str]) -> int:
    """``fleetcall serve [--host H] [--port P] [--pool emulated|PATH] [--token-env NAME]
    [--max-in-flight N]``."""
    args = _parser().parse_args(argv)
    try:
        token = read_token(args.token_env)
        if args.max_in_flight is not None and args.max_in_flight < 1:
            raise ConfigError(f"--max-in-flight must be >= 1, got {args.max_in_flight}")
        if args.pool != "emulated":
            load_pool_config(args.pool)   # a bad pool file fails here, before the socket is bound
    except (ConfigError, ValidationError, ValueError, OSError) as exc:
        print(f"fleetcall serve: error: {exc}", file=sys.stderr)
        return 2
    try:
        sock = socket.create_server((args.host, args.port))
    except OSError as exc:
        print(f"fleetcall serve: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    print(f"fleetcall serve: pool {args.pool}, auth {'on' if token else 'off'}, at http://{host}:{port}", flush=True)
    with quiet_stop_signals(), sock:
        asyncio.run(serve(args, token, sock))
    print("fleetcall serve: stopped", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
