"""``fleetcall bench executor``: compiled plans against ReAct and parallel calls on ParallelQA.

Every question runs in the three modes on the same scripted model and tools
(:mod:`fleetcall.bench.parallelqa`). For the compiled mode the report also gives the ratio of its
latency to its *critical-path bound*: the time at which the plan stream makes each task
available (the chunk that completes its line), plus the longest chain of tool work after it,
then the joiner's whole reply. The bound is computed from the latency model alone, so it is what
an orchestrator with zero overhead would achieve on this model; a ratio of 1.00 means the
executor adds nothing to the plan's own critical path.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from fleetcall.bench.parallelqa import LatencyModel, ParallelQAModel, Question, load_parallelqa
from fleetcall.executor.orchestrator import Orchestrator
from fleetcall.executor.result import RunResult
from fleetcall.vclock import run_virtual
from fleetcall.bench.output import write_json

MODES = ("compiled", "react", "parallel_calls")
BOUND_FLOOR = {"virtual": 1.05, "real": 1.10}  # the floors on latency / bound


@dataclass(slots=True)
class QueryOutcome:
    id: str
    branch: int
    latency: dict[str, float]   # mode -> seconds
    correct: dict[str, bool]    # mode -> answer matched
    bound_s: float              # critical-path bound of the compiled mode

    @property
    def bound_ratio(self) -> float:
        return self.latency["compiled"] / self.bound_s


def critical_path_bound(model: ParallelQAModel, q: Question) -> float:
    """Seconds an overhead-free orchestrator needs for ``q``'s compiled plan (see module doc)."""
    lat, pace = model.latency, model.latency.pace()
    plan = model.plan_text(q)
    lines = plan.split("\n")
    ends, offset = [], 0
    for line in lines:
        offset += len(line)
        ends.append(offset)     # index of the newline that completes the line
        offset += 1

    def ready(line_no: int) -> float:
        return pace.time_of_char(plan, ends[line_no])

    b = q.branch  # line 0 is the thought; task k (1-based) is on line k
    search_done = [ready(k + 1) + lat.search_latency(q.id, k) for k in range(b)]
    math_done = [max(ready(b + k + 1), search_done[k]) + lat.math_s for k in range(b)]
    compare_done = max(ready(2 * b + 1), *math_done) + lat.math_s
    join_seen = ready(2 * b + 2)
    return max(compare_done, join_seen) + pace.duration(model.joiner_text(q))


async def _run_mode(orch: Orchestrator, q: Question, mode: str, gate: asyncio.Semaphore) -> RunResult:
    async with gate:
        return await orch.run(q.text, mode=mode)  # type: ignore[arg-type]


async def run_questions(questions: Sequence[Question], latency: LatencyModel, *,
                        concurrency: int = 64, gpus: Sequence[str] = (),
                        gpu_model: str = "llama-3.1-8b") -> list[QueryOutcome]:
    """Run every question in every mode (``concurrency`` runs at a time) and collect outcomes.

    With ``gpus`` the model's replies are served by a pool of emulated endpoints of those GPU
    types (``gpu_model`` on each) instead of the modelled pace: the LLM's timing is then the
    emulated engines', and the bound (which assumes the modelled pace) is not reported."""
    model = ParallelQAModel(list(questions), latency)
    pool = None
    if gpus:
        from fleetcall.router.pool import EndpointPool, script_responder
        pool = EndpointPool.emulated(list(gpus), gpu_model, responder=script_responder(model.reply))
    orch = Orchestrator(tools=model.tools(), llm=pool or model.llm(), builtin_tools=False, max_steps=40)
    gate = asyncio.Semaphore(concurrency)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = {(q.id, mode): group.create_task(_run_mode(orch, q, mode, gate))
                     for q in questions for mode in MODES}
    finally:
        if pool is not None:
            await pool.aclose()
    outcomes = []
    for q in questions:
        results = {mode: tasks[q.id, mode].result() for mode in MODES}
        outcomes.append(QueryOutcome(
            q.id, q.branch,
            latency={m: r.latency for m, r in results.items()},
            correct={m: r.answer == q.answer for m, r in results.items()},
            bound_s=float("nan") if gpus else critical_path_bound(model, q),
        ))
    return outcomes


def _stats(outcomes: Sequence[QueryOutcome]) -> dict[str, object]:
    def per_query(fn) -> dict[str, float]:
        values = [fn(o) for o in outcomes]
        return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}

    return {
        "queries": len(outcomes),
        "latency_s": {m: {"mean": statistics.fmean(o.latency[m] for o in outcomes),
                          "p50": statistics.median(o.latency[m] for o in outcomes)} for m in MODES},
        "accuracy": {m: sum(o.correct[m] for o in outcomes) / len(outcomes) for m in MODES},
        "speedup_vs_react": per_query(lambda o: o.latency["react"] / o.latency["compiled"]),
        "speedup_vs_parallel_calls": per_query(lambda o: o.latency["parallel_calls"] / o.latency["compiled"]),
        "bound_ratio": (per_query(lambda o: o.bound_ratio)
                        if all(math.isfinite(o.bound_s) for o in outcomes) else None),
    }


def report(outcomes: Sequence[QueryOutcome], *, clock: str, latency: LatencyModel,
           wall_s: float) -> dict[str, object]:
    """The benchmark's JSON: overall and ``by_branch`` figures, the floors and whether they hold."""
    branches = sorted({o.branch for o in outcomes})
    out: dict[str, object] = {"benchmark": "executor", "clock": clock, "model": asdict(latency),
                              "wall_s": wall_s, **_stats(outcomes)}
    out["by_branch"] = {str(b): _stats([o for o in outcomes if o.branch == b]) for b in branches}
    floor = BOUND_FLOOR[clock]
    bounded = out["bound_ratio"] is not None
    worst_react = min((o.latency["react"] / o.latency["compiled"] for o in outcomes if o.branch >= 2),
                      default=float("inf"))
    out["floors"] = {
        "bound_ratio_max": floor,
        "bound_ratio_holds": (max(o.bound_ratio for o in outcomes) <= floor) if bounded else None,
        "faster_than_react_holds": worst_react > 1.0,
        "all_correct": all(all(o.correct.values()) for o in outcomes),
    }
    return out


def format_report(rep: dict) -> str:
    lines = [f"ParallelQA, {rep['queries']} queries, {rep['clock']} clock "
             f"(wall {rep['wall_s']:.1f}s)",
             f"{'branch':>6} {'n':>4} {'compiled':>9} {'react':>8} {'parallel':>9} "
             f"{'vs react':>14} {'vs parallel':>14} {'bound ratio':>14}"]

    def row(label: str, s: dict) -> str:
        lat = s["latency_s"]
        sr, sp, br = s["speedup_vs_react"], s["speedup_vs_parallel_calls"], s["bound_ratio"]
        bound = f"{br['mean']:>6.3f} (max {br['max']:.3f})" if br else "     -"
        return (f"{label:>6} {s['queries']:>4} {lat['compiled']['mean']:>8.2f}s {lat['react']['mean']:>7.2f}s "
                f"{lat['parallel_calls']['mean']:>8.2f}s {sr['mean']:>6.2f}x (min {sr['min']:.2f}) "
                f"{sp['mean']:>5.2f}x (min {sp['min']:.2f}) {bound}")

    for b, s in rep["by_branch"].items():
        lines.append(row(b, s))
    lines.append(row("all", rep))
    f = rep["floors"]
    verdict = {True: "yes", False: "NO", None: "not measured (--gpus)"}
    lines.append(f"floors: compiled <= {f['bound_ratio_max']:.2f} x bound on every query: "
                 f"{verdict[f['bound_ratio_holds']]}; faster than ReAct on every query "
                 f"with branch >= 2: {'yes' if f['faster_than_react_holds'] else 'NO'}; "
                 f"every answer correct: {'yes' if f['all_correct'] else 'NO'}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = LatencyModel()
    parser.add_argument("--dataset", metavar="PATH", help="ParallelQA-format JSON (default: the packaged copy)")
    parser.add_argument("--clock", choices=("virtual", "real"), default="virtual",
                        help="virtual: instant and deterministic; real: actual waiting (shows overhead)")
    parser.add_argument("--limit", type=int, help="run only the first N questions")
    parser.add_argument("--concurrency", type=int, default=64, help="runs at a time (default 64)")
    parser.add_argument("--ttft", type=float, default=d.ttft_s, help=f"model time to first token, s ({d.ttft_s})")
    parser.add_argument("--tpot", type=float, default=d.tpot_s, help=f"model time per output token, s ({d.tpot_s})")
    parser.add_argument("--tokens-per-chunk", type=int, default=d.tokens_per_chunk)
    parser.add_argument("--search", type=float, nargs=2, metavar=("MIN", "MAX"),
                        default=(d.search_min_s, d.search_max_s), help="search latency range, s")
    parser.add_argument("--math", type=float, default=d.math_s, help=f"math tool latency, s ({d.math_s})")
    parser.add_argument("--thought-words", type=int, default=d.thought_words)
    parser.add_argument("--gpus", help="serve the model from emulated endpoints of these GPU types "
                        "(comma-separated, e.g. A100-80G,L40S) instead of the modelled pace")
    parser.add_argument("--gpu-model", default="llama-3.1-8b", help="model on the emulated GPUs")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")


def main(args: argparse.Namespace) -> int:
    latency = LatencyModel(args.ttft, args.tpot, args.tokens_per_chunk, args.search[0], args.search[1],
                           args.math, args.thought_words)
    questions = load_parallelqa(args.dataset)
    if args.limit is not None:
        questions = questions[: max(args.limit, 0)]
    if not questions:
        raise SystemExit("fleetcall bench executor: no questions to run")
    started = time.perf_counter()
    gpus = [g.strip() for g in (args.gpus or "").split(",") if g.strip()]
    if gpus and args.clock == "real":
        raise SystemExit("fleetcall bench executor: --gpus runs on the virtual clock only")
    coro = run_questions(questions, latency, concurrency=max(args.concurrency, 1), gpus=gpus,
                         gpu_model=args.gpu_model)
    outcomes = run_virtual(coro) if args.clock == "virtual" else asyncio.run(coro)
    rep = report(outcomes, clock=args.clock, latency=latency, wall_s=time.perf_counter() - started)
    if gpus:
        rep["gpus"], rep["gpu_model"] = gpus, args.gpu_model
    print(format_report(rep))
    if args.json:
        write_json(args.json, rep)
    floors = rep["floors"]
    assert isinstance(floors, dict)
    return 0 if all(floors[k] is not False
                    for k in ("bound_ratio_holds", "faster_than_react_holds", "all_correct")) else 1
