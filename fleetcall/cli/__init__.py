"""The ``fleetcall`` command line: ``fleetcall demo``, ``fleetcall calibrate``, ..."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import signal
import sys
from collections.abc import Callable, Iterator, Sequence

# sub-command -> (module with a ``main(argv) -> int``, one-line help). One table, no if/elif chain.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("fleetcall.demos.cli", "run a scripted demo workflow (default: parallelqa)"),
    "calibrate": ("fleetcall.gpumodel.calibrate", "fit / check the GPU performance model against profiles"),
    "emulate": ("fleetcall.cli.emulate", "serve emulated GPUs as an OpenAI-compatible endpoint"),
    "tune": ("fleetcall.bench.tune", "search a dispatch policy's knobs on a workload by simulation"),
    "plan-fleet": ("fleetcall.cli.plan_fleet", "the cheapest GPU mix serving a workload within its SLO, by simulation"),
    "bench": ("fleetcall.bench.cli", "run a benchmark: executor, overhead, ..."),
    "serve": ("fleetcall.cli.serve", "run fleetcall as an HTTP service"),
    "local-pool": ("fleetcall.cli.local_pool",
                   "start llama.cpp servers with SmolLM2 on 127.0.0.1 and write their pool config"),
}


@contextlib.contextmanager
def quiet_stop_signals() -> Iterator[None]:
    """While uvicorn serves: SIGINT/SIGTERM handlers that do nothing, restored afterwards.

    uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal to the handlers it
    found; quiet ones make that a normal return (exit 0, no KeyboardInterrupt traceback). Used by
    ``fleetcall serve`` and ``fleetcall emulate``.
    """
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore(sig: int, frame: object) -> None:
    """A signal arriving after uvicorn's shutdown: nothing left to stop."""


def _entry(name: str) -> Callable[[list[str]], int]:
    module = importlib.import_module(COMMANDS[name][0])
    return module.main


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    available = {k: v for k, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}
    parser = argparse.ArgumentParser(prog="fleetcall", description="fleetcall: fast agents on GPU fleets")
    parser.add_argument("command", choices=sorted(available),
                        help="; ".join(f"{k}: {v[1]}" for k, v in available.items()))
    if not args or args[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if args else 2
    if args[0] not in available:
        parser.error(f"unknown command {args[0]!r}; choose from {', '.join(sorted(available))}")
    return _entry(args[0])(args[1:])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
