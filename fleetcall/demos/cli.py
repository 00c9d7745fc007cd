"""``fleetcall demo [NAME]``: run a scripted workflow live, then the same query the ReAct way.

On a terminal the run is drawn live (rich); otherwise (pipes, CI, tests, or ``--plain``) each
event is printed as one line. At the end: the answer, a timeline of the tasks and LLM calls,
the ReAct run and the speedup. ``--timeline PATH.html`` (or ``.png`` with matplotlib) writes the
timeline as a picture, ``--json PATH`` the outcome.

    fleetcall demo                 # parallelqa
    fleetcall demo text2sql --timeline t2s.html
    fleetcall demo replan --plain --pace 0.1 --json out.json
    fleetcall demo --pool local    # real llama.cpp servers (pip install 'fleetcall[local]')
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path

from fleetcall import ConfigError, Orchestrator
from fleetcall.demos import DEFAULT_DEMO, DEMOS, Demo, get_demo, timeline
from fleetcall.demos.common import EMBEDDED_MODEL, LLMFactory, check_pace, embedded_pool
from fleetcall.llm.scripted import Responder
from fleetcall.demos.display import LiveDisplay, PlainDisplay
from fleetcall.demos.runner import DemoOutcome, run_compiled, run_react
from fleetcall.demos.view import RunState
from fleetcall.llm.base import LLM, ModelInfo
from fleetcall.router.config import PoolConfig, load_pool_config
from fleetcall.local.servers import (LocalPool, LocalServerError, find_smollm2_gguf,
                                     require_xllamacpp, start_local_pool)
from fleetcall.router.pool import EndpointPool


def _display(state: RunState, live: bool) -> LiveDisplay | PlainDisplay:
    return LiveDisplay(state) if live else PlainDisplay(state)


async def run_shown(demo: Demo, *, live: bool, pace: float = 1.0,
                    llm_factory: LLMFactory | None = None) -> DemoOutcome:
    """Both runs of ``demo``, each shown while it happens; prints the answer and timeline between."""
    loop = asyncio.get_running_loop()
    with _display(RunState(f"fleetcall demo {demo.NAME}", demo.QUESTION, loop.time()), live) as shown:
        result = await run_compiled(demo, shown.handle, pace=pace, llm_factory=llm_factory)
    print(f"\nAnswer ({result.status.value}, {result.latency:.2f}s, {len(result.replans)} replan(s)): "
          f"{result.answer if result.answer is not None else result.error}")
    print("\nTimeline: tasks by tool, LLM calls by endpoint\n" + timeline.render_text(timeline.bars(result),
                                                                                     result.latency))
    print("\nNow the same query the ReAct way (one tool call per LLM turn):\n", flush=True)
    with _display(RunState(f"{demo.NAME}, ReAct", demo.QUESTION, loop.time()), live) as shown:
        react = await run_react(demo, shown.handle, pace=pace, llm_factory=llm_factory)
    outcome = DemoOutcome(demo.NAME, demo.QUESTION, result, react)
    print(f"\nReAct: {react.latency:.2f}s ({react.status.value}, {len(react.llm_calls)} LLM calls): {react.answer}")
    print(f"Compiled plan: {result.latency:.2f}s ({len(result.llm_calls)} LLM calls). "
          f"Speedup over ReAct: {outcome.speedup:.2f}x")
    return outcome


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetcall demo", description="Run a scripted demo workflow.")
    parser.add_argument("name", nargs="?", default=DEFAULT_DEMO,
                        help=f"demo to run (default {DEFAULT_DEMO}; see --list)")
    parser.add_argument("--list", action="store_true", help="list the demos")
    parser.add_argument("--json", metavar="PATH", help="write the outcome as JSON")
    parser.add_argument("--timeline", metavar="PATH", help="write the timeline: PATH.html (or .png with matplotlib)")
    parser.add_argument("--plain", action="store_true", help="print event lines even on a terminal")
    parser.add_argument("--pace", type=float, default=1.0, metavar="FACTOR",
                        help="scale every scripted latency (1 = realistic, 0.1 = ten times faster)")
    parser.add_argument("--pool", default="emulated", metavar="KIND",
                        help="who serves the model: 'emulated' (default: 2 x A100-80G and 1 x L40S "
                             f"serving {EMBEDDED_MODEL}, in-process), 'scripted' (a paced script, no "
                             "pool), 'local' (real llama.cpp servers with SmolLM2-135M on "
                             "127.0.0.1, started for the demo; JSON-schema plans), or a pool "
                             "config file (TOML/YAML) of real endpoints")
    parser.add_argument("--replicas", type=int, default=2, metavar="N",
                        help="with --pool local: how many llama.cpp servers (default 2)")
    return parser


class PoolFactory:
    """Builds the pool each orchestrator of the demo uses, and closes them all at the end.

    The demo's scripted replies become the emulated endpoints' responder (the pool sends the
    call's kind along), so the plan, the joiner and the LLM tools are served, timed and
    scheduled by the pool; with a config file, real endpoints answer instead."""

    def __init__(self, kind: str, config: PoolConfig | None = None) -> None:
        self.kind = kind
        self.config = config   # the pool to build (local servers), instead of the file ``kind``
        self.pools: list[EndpointPool] = []

    def __call__(self, responder: Responder) -> LLM:
        if self.kind == "emulated":
            pool = embedded_pool(responder)
        elif self.config is not None:
            pool = EndpointPool.from_config(self.config)
        else:
            pool = EndpointPool.load(self.kind)
        self.pools.append(pool)
        return pool

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()
        self.pools.clear()


LOCAL_MAX_TASKS = 12   # the most tasks a plan from the local model may hold (enforced by its schema)


@dataclasses.dataclass(frozen=True)
class JsonPlanDemo:
    """``demo`` whose orchestrators plan and join in JSON mode, for small real models.

    The plan and the joiner's decision are sent with JSON-schema ``response_format``s, which
    llama.cpp enforces as grammars, so a tiny model still writes a plan the executor can run;
    the tools are the demo's own (its ``build`` makes them)."""

    demo: Demo

    @property
    def NAME(self) -> str:  # noqa: N802 - the Demo protocol's names
        return self.demo.NAME

    @property
    def QUESTION(self) -> str:  # noqa: N802
        return self.demo.QUESTION

    @property
    def DESCRIPTION(self) -> str:  # noqa: N802
        return self.demo.DESCRIPTION

    def model(self, pace: float = 1.0) -> LLMFactory:
        return self.demo.model(pace)

    def build(self, llm_factory: LLMFactory | None = None, *, pace: float = 1.0) -> Orchestrator:
        base = self.demo.build(llm_factory, pace=pace)
        return Orchestrator(
            tools=list(base.tools.values()), builtin_tools=False,
            llm=base.planner_llm, joiner_llm=base.joiner_llm,
            tool_llm=base.tool_llm, max_replans=base.max_replans, max_tasks=LOCAL_MAX_TASKS,
            plan_format="json", joiner_format="json",
        )


def _check(args: argparse.Namespace) -> Demo:
    """The demo to run; a ``ConfigError`` for a bad name, timeline path, pace or pool file, before
    anything runs."""
    demo = get_demo(args.name)
    if args.timeline:
        timeline.check_path(args.timeline)
    check_pace(args.pace)
    if args.pool == "local":
        if args.replicas < 1:
            raise ConfigError(f"--replicas must be >= 1, got {args.replicas}")
        require_xllamacpp()
        find_smollm2_gguf()
        return JsonPlanDemo(demo)
    if args.pool not in ("emulated", "scripted"):
        return demo_for_pool(demo, load_pool_config(args.pool))
    return demo


def demo_for_pool(demo: Demo, config: PoolConfig) -> Demo:
    """``demo`` as it should run on the endpoints of ``config``: in JSON mode, with the small
    plan bound, when every endpoint enforces JSON schemas (a llama.cpp pool, as
    ``fleetcall local-pool`` writes it); else as it is (its plan format is ``auto``)."""
    if ModelInfo.weakest(e.model_info for e in config.endpoints).json_schema:
        return JsonPlanDemo(demo)
    return demo


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for name, demo in DEMOS.items():
            print(f"{name:12} {demo.DESCRIPTION}")
        return 0
    try:
        demo = _check(args)
    except ConfigError as exc:
        print(f"fleetcall demo: error: {exc}", file=sys.stderr)
        return 2
    live = sys.stdout.isatty() and not args.plain
    factory = None if args.pool == "scripted" else PoolFactory(args.pool)

    async def shown() -> DemoOutcome:
        local: LocalPool | None = None
        try:
            if factory is not None and args.pool == "local":
                local = await start_local_pool(args.replicas)
                print(f"Started {args.replicas} llama.cpp server(s): {', '.join(local.urls)}", flush=True)
                factory.config = local.config()
            return await run_shown(demo, live=live, pace=args.pace, llm_factory=factory)
        finally:
            if factory is not None:
                await factory.aclose()
            if local is not None:
                await local.stop()

    try:
        outcome = asyncio.run(shown())
    except LocalServerError as exc:
        print(f"fleetcall demo: error: {exc}", file=sys.stderr)
        return 2
    if args.timeline:
        path = timeline.write(outcome.result, args.timeline, title=f"fleetcall demo {demo.NAME}")
        print(f"Timeline written to {path}")
    if args.json:
        Path(args.json).write_text(json.dumps(outcome.summary(), indent=2, default=str), encoding="utf-8")
        print(f"Outcome written to {args.json}")
    return 0 if outcome.result.answer is not None else 1
