"""``fleetcall emulate``: serve an emulated GPU deployment over real HTTP, vLLM-style.

    fleetcall emulate --gpu A100-80G --model llama-3.1-70b --port 8001 --error-rate 0.01

Prints the URL and the deployment (TP degree, KV capacity) once the socket is bound, then serves
until Ctrl-C or SIGTERM (uvicorn's graceful shutdown; exit code 0). ``--port 0`` picks a free
port (the printed URL names it). With ``--crash-after N`` the process exits with code 3 on the
request after the N-th chat completion, so clients really see their connections break.
Unknown GPU or model names, or a model that does not fit, exit with code 2.

``--speed K`` runs the emulated GPU K times faster than real (every duration divided by K), so
real-clock experiments take 1/K of the time; everything it reports (``/metrics``: TTFT, time
per output token, latency, busy seconds; ``Retry-After``) stays in the real GPU's seconds.
``fleetcall bench scheduler --clock real --speed K`` runs its own clock K times faster to match.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

import uvicorn
from pydantic import ValidationError

from fleetcall.cli import quiet_stop_signals
from fleetcall.errors import ConfigError
from fleetcall.sim.emulator import EmulatedEndpoint, Faults
from fleetcall.sim.fronts import create_app
from fleetcall.sim.responders import EchoResponder, LengthsResponder, Responder
from fleetcall.sim.engine import DEFAULT_STREAM_INTERVAL_S

CRASH_EXIT_CODE = 3

# --responder name -> factory; one table, no if/elif chain.
RESPONDERS: dict[str, type[EchoResponder] | type[LengthsResponder]] = {
    "echo": EchoResponder, "lengths": LengthsResponder,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleetcall emulate",
                                description="Serve emulated GPUs as an OpenAI-compatible endpoint.")
    p.add_argument("--gpu", required=True, help="GPU type, e.g. A100-80G, L40S, H100")
    p.add_argument("--model", required=True, help="model, e.g. llama-3.1-70b")
    p.add_argument("--tp", type=int, default=None, help="tensor-parallel degree (default: smallest "
                   "that leaves 10%% of memory for KV cache)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    p.add_argument("--name", default=None, help="endpoint name (also accepted as model id)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    p.add_argument("--responder", choices=sorted(RESPONDERS), default="echo",
                   help="echo: short answers; lengths: max_tokens tokens of filler")
    p.add_argument("--block-tokens", type=int, default=16, help="KV block size, tokens")
    p.add_argument("--stream-interval", type=float, default=DEFAULT_STREAM_INTERVAL_S,
                   help="emulated-GPU seconds between streamed chunks (0: every iteration)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="run K times faster than the real GPU (durations / K; reported figures "
                        "stay the GPU's)")
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--error-status", type=int, default=500)
    p.add_argument("--rate-limit-rate", type=float, default=0.0)
    p.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of 429s, seconds")
    p.add_argument("--spike-rate", type=float, default=0.0)
    p.add_argument("--spike-s", type=float, default=1.0)
    p.add_argument("--hang-rate", type=float, default=0.0)
    p.add_argument("--drop-rate", type=float, default=0.0)
    p.add_argument("--crash-after", type=int, default=None)
    return p


def _faults(args: argparse.Namespace) -> Faults:
    return Faults(error_rate=args.error_rate, error_status=args.error_status,
                  rate_limit_rate=args.rate_limit_rate, retry_after_s=args.retry_after,
                  spike_rate=args.spike_rate, spike_s=args.spike_s, hang_rate=args.hang_rate,
                  drop_rate=args.drop_rate, crash_after=args.crash_after)


def _crash() -> None:
    """The emulated server dies: no graceful shutdown, open connections break."""
    print("fleetcall emulate: crashing (--crash-after reached)", file=sys.stderr, flush=True)
    os._exit(CRASH_EXIT_CODE)


def main(argv: list[str]) -> int:
    """``fleetcall emulate --gpu G --model M [--tp N] [--port P] [fault options]``."""
    args = _parser().parse_args(argv)
    try:
        responder: Responder = RESPONDERS[args.responder]()
        endpoint = EmulatedEndpoint(args.gpu, args.model, tp=args.tp, name=args.name,
                                    responder=responder, faults=_faults(args), seed=args.seed,
                                    block_tokens=args.block_tokens,
                                    stream_interval_s=args.stream_interval, speed=args.speed)
    except (ConfigError, ValidationError, ValueError) as exc:
        print(f"fleetcall emulate: error: {exc}", file=sys.stderr)
        return 2
    try:
        sock = socket.create_server((args.host, args.port))
    except OSError as exc:
        print(f"fleetcall emulate: error: cannot listen on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    d = endpoint.deployment
    print(f"fleetcall emulate: {endpoint.name}: {d.model.name} on {d.tp}x {d.gpu.name} "
          f"(tp={d.tp}, KV cache {d.kv_capacity_tokens()} tokens) at http://{host}:{port}"
          + (f", speed {endpoint.speed:g}x" if endpoint.speed != 1.0 else ""), flush=True)
    app = create_app(endpoint, on_crash=_crash)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    with quiet_stop_signals(), sock:
        server.run(sockets=[sock])
    print("fleetcall emulate: stopped", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
