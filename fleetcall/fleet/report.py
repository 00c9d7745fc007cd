"""The fleet plan as text, as JSON and as a chart (cost against SLO attainment).

:func:`format_plan` is what ``fleetcall plan-fleet`` prints; :func:`plan_json` what ``--json``
writes (the question, the first cut, every simulated mix with the frontier marked, the answer
as ``choice`` and the search's own choice beside it, the simple rules and the validation runs;
with validation the answer and the rules' mixes are the ones that hold at full length, and
the savings compare those); :func:`plot_frontier` draws the frontier with
matplotlib (the ``plot`` extra): every simulated mix at its cost and attainment (a run stopped
early at the most it could have reached), the frontier, the target, the answer, the search's choice and the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetcall.fleet.planner import FleetPlan
from fleetcall.fleet.search import Mix, Outcome, frontier


def cost_per_query(mix: Mix, out: Outcome, rate: float) -> float | None:
    """Dollars per query served within its SLO: the hourly cost over the queries an hour brings
    that meet their deadline (None if none does or the run was stopped)."""
    if out.attainment is None or out.attainment <= 0:
        return None
    return mix.cost / (3600.0 * rate * out.attainment)


def _mix_json(mix: Mix, out: Outcome | None, rate: float) -> dict[str, Any]:
    body: dict[str, Any] = {
        "mix": mix.label, "endpoints": [{"gpu": k.gpu, "tp": k.tp, "count": n} for k, n in mix.counts],
        "gpus": mix.gpus, "cost_per_hour": round(mix.cost, 4), "first_cut_headroom": round(mix.headroom, 4)}
    if out is not None:
        body.update({"meets": out.meets, "attainment": out.attainment,
                     "attainment_max": out.attainment_max, "stopped_early": out.stopped,
                     "p95_s": out.p95_s, "utilisation": dict(out.utilisation),
                     "cost_per_query_in_slo": cost_per_query(mix, out, rate),
                     "misses": out.detail.get("misses"), "queries": out.detail.get("queries"),
                     "simulated_s": out.detail.get("sim_s"), "wall_s": round(out.wall_s, 3)})
    return body


def savings(plan: FleetPlan) -> dict[str, float | None]:
    """Rule -> the share of the rule's hourly cost the plan's answer saves, both as validated
    (:attr:`FleetPlan.answer`, :meth:`FleetPlan.rule_answer`; None if either is missing)."""
    answer = plan.answer
    out: dict[str, float | None] = {}
    for name in plan.rules:
        mix = plan.rule_answer(name)
        out[name] = None if mix is None or answer is None else 1.0 - answer.cost / mix.cost
    return out


def plan_json(plan: FleetPlan, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The plan as a JSON-ready dict (``extra`` is merged in at the top: trace name, load...)."""
    q = plan.question
    rate = q.rate
    on_frontier = {m.counts for m, _ in frontier(plan.runs)}
    runs = []
    for mix, out in plan.runs:
        runs.append({**_mix_json(mix, out, rate), "on_frontier": mix.counts in on_frontier})
    def named(mix: Mix | None) -> dict[str, Any] | None:
        return None if mix is None else _mix_json(mix, plan.answer_outcome(mix), rate)

    rules = {name: named(plan.rule_answer(name)) for name in plan.rules}
    searched_rules = {name: None if mix is None else _mix_json(mix, plan.outcome(mix), rate)
                      for name, mix in plan.rules.items()}
    return {
        **(extra or {}),
        "rate": rate, "slo_scale": q.slo_scale, "attainment_target": q.target, "model": q.model,
        "policy": q.policy, "policy_options": dict(q.policy_options), "gpus": list(q.gpus),
        "prices_per_gpu_hour": dict(q.prices), "max_gpus": q.max_gpus, "reference": q.reference,
        "slots": q.slots, "seed": q.seed, "search_queries": q.search_queries,
        "confirm_queries": q.confirm_length,
        "first_cut": [{"endpoint": c.kind.label, "gpu": c.kind.gpu, "tp": c.kind.tp,
                       "kv_tokens": c.kv_tokens, "batch": c.batch,
                       "gpu_s_per_query": c.gpu_s_per_query, "speed_vs_reference": c.speed,
                       "usable_load": c.usable_load, "slo_qps": c.slo_qps} for c in plan.capacities],
        "skipped": plan.skipped,
        "search": {"enumerated": plan.result.enumerated, "near_frontier": plan.result.candidates,
                   "simulated": len(plan.runs), "stopped_early": sum(1 for _, o in plan.runs if o.stopped),
                   "exhausted": plan.result.exhausted, "wall_s": round(plan.wall_s, 3)},
        "choice": named(plan.answer),  # THE answer: validated (and escalated) if --validate
        "search_choice": None if plan.best is None else _mix_json(plan.best, plan.outcome(plan.best), rate),
        "next_cheaper": None if (n := plan.next_cheaper()) is None else _mix_json(n, plan.outcome(n), rate),
        "rules": rules, "rules_in_search": searched_rules, "savings": savings(plan),
        "frontier": runs,
        "validation": {"queries": q.validate_queries, "wall_s": round(plan.validation_wall_s, 3),
                       "runs": {name: _mix_json(mix, out, rate)
                                for name, (mix, out) in plan.validation.items()}},
    }


def _verdict(out: Outcome | None) -> str:
    if out is None:
        return "not simulated"
    queries = out.detail.get("queries")
    screen = out.detail.get("screen")
    first = "" if not isinstance(screen, Mapping) or screen.get("attainment") is None else \
        f"{screen['attainment']:.1%} in {screen.get('queries')}, then "
    if out.stopped:
        return f"{first}<= {out.attainment_max:.1%} (stopped early, {queries} queries)"
    p95 = f", p95 {out.p95_s:.0f} s" if out.p95_s is not None else ""
    return f"{first}{out.attainment_max:.1%} in {queries}{p95}"


def _choice_lines(plan: FleetPlan) -> list[str]:
    q = plan.question
    answer, best = plan.answer, plan.best
    where = f"at full length ({q.validate_queries} queries)" if plan.validated else "in the search"
    if answer is None:
        if best is None:
            return [f"no mix within {q.max_gpus} GPUs met {q.target:.0%} SLO attainment in the simulations"]
        return [f"no mix holds {q.target:.0%} SLO attainment at full length ({q.validate_queries} "
                f"queries): the search's choice {best.label} and every escalation missed (below)"]
    out = plan.answer_outcome(answer)
    assert out is not None  # the answer was simulated
    per_query = cost_per_query(answer, out, q.rate)
    lines = [f"cheapest mix meeting {q.target:.0%} {where}: {answer.label} ({answer.gpus} GPUs)",
             f"  cost                       ${answer.cost:.2f}/hour",
             "  cost per query within SLO  " + ("n/a" if per_query is None else f"${per_query:.4f}"),
             f"  SLO attainment             {out.attainment_max:.1%} ({out.detail.get('queries')} queries)",
             "  p95 latency                " + ("n/a" if out.p95_s is None else f"{out.p95_s:.1f} s"),
             "  utilisation                " + ", ".join(f"{k} {v:.0%}" for k, v in out.utilisation.items())]
    if best is not None and best.counts != answer.counts:
        searched = plan.answer_outcome(best)
        lines.append(f"  (the search's choice {best.label}, ${best.cost:.2f}/h, misses at full length: "
                     f"{_verdict(searched)}; escalated to the mix above)")
    return lines


def _rule_lines(plan: FleetPlan) -> list[str]:
    q = plan.question
    lines = ["simple rules (each GPU at its usual tensor-parallel degree"
             + (", validated and escalated as the plan):" if plan.validated else "):")]
    saved = savings(plan)
    for name, searched in plan.rules.items():
        mix = plan.rule_answer(name)
        if mix is None:
            why = "no mix of it within {0} GPUs met the target (or its GPU is not among --gpus)" \
                if searched is None else f"{searched.label} and its escalations missed at full length"
            lines.append(f"  {name:<22} none: " + why.format(q.max_gpus))
            continue
        share = saved[name]
        lines.append(f"  {name:<22} {mix.label:<28} ${mix.cost:.2f}/h  {_verdict(plan.answer_outcome(mix))}"
                     + ("" if share is None else f"   the plan saves {share:.0%}"))
        if searched is not None and searched.counts != mix.counts:
            lines.append(f"  {'':<22} (the search's {searched.label}, ${searched.cost:.2f}/h, misses at "
                         f"full length: {_verdict(plan.answer_outcome(searched))})")
    return lines


def format_plan(plan: FleetPlan) -> str:
    """The plan as ``fleetcall plan-fleet`` prints it."""
    q = plan.question
    res = plan.result
    stopped = sum(1 for _, o in plan.runs if o.stopped)
    confirmed = sum(1 for _, o in plan.runs if "screen" in o.detail)
    lines = [f"first cut: {len(plan.capacities)} endpoint kinds ("
             + ", ".join(c.kind.label for c in plan.capacities) + f"); {res.enumerated} mixes within "
             f"{q.max_gpus} GPUs, {res.candidates} near the frontier"]
    lines += [f"  skipped: {s}" for s in plan.skipped]
    confirm = f"{confirmed} met and were confirmed at {q.confirm_length}" \
        if q.confirm_length > q.search_queries else "no confirmation runs"
    lines.append(f"simulated {len(plan.runs)} mixes ({stopped} stopped early) in screens of {q.search_queries} "
                 f"queries, {confirm}, in {plan.wall_s:.1f} s wall"
                 + ("" if res.exhausted else f" (--max-sims {q.max_sims} reached: the search was cut short)"))
    lines += _choice_lines(plan)
    lines += _rule_lines(plan)
    lines.append("frontier (simulated; cost vs SLO attainment at the length that judged it):")
    for mix, out in frontier(plan.runs):
        mark = "  <- search's choice" if plan.best is not None and mix.counts == plan.best.counts else ""
        lines.append(f"  ${mix.cost:>7.2f}/h  {mix.label:<34} {_verdict(out)}{mark}")
    if plan.validation:
        lines.append(f"validation ({q.validate_queries} queries, no early stop; a confirmation of that length "
                     f"is reused, stopped early if it missed; {plan.validation_wall_s:.1f} s wall):")
        for name, (mix, out) in plan.validation.items():
            verdict = "meets" if out.meets else "misses"
            lines.append(f"  {name:<34} {mix.label:<28} {_verdict(out)}  {verdict} {q.target:.0%}")
    return "\n".join(lines)


def _mark_named(ax: Any, plan: FleetPlan) -> None:
    """The answer (a star), the search's choice if it differs (a hollow star) and the rules'
    mixes (squares), each at its validated attainment if validated; one label per mix."""
    named: dict[tuple[Any, ...], tuple[Mix, list[str]]] = {}  # mix -> (mix, its names)
    answer = plan.answer
    entries = [("answer", answer), ("search's choice", plan.best),
               *((name, plan.rule_answer(name)) for name in plan.rules)]
    for name, mix in entries:
        if mix is not None:
            named.setdefault(mix.counts, (mix, []))[1].append(name)
    costs = [m.cost for m, _ in plan.runs] or [0.0]
    middle = (min(costs) + max(costs)) / 2
    for i, (mix, names) in enumerate(named.values()):
        out = plan.answer_outcome(mix) or plan.outcome(mix)
        y = (out.attainment_max if out is not None else plan.question.target) * 100
        star = "answer" in names or "search's choice" in names
        ax.scatter([mix.cost], [y], marker="*" if star else "s", s=200 if star else 70,
                   color="#228833" if "answer" in names else ("none" if star else "#ee7733"),
                   edgecolors="#228833" if star else "#ee7733", zorder=5 if star else 4)
        left = mix.cost > middle  # label towards the middle of the chart
        ax.annotate(f"{' = '.join(names)}: {mix.label}, ${mix.cost:.2f}/h", (mix.cost, y),
                    textcoords="offset points", xytext=(-10 if left else 10, -16 - 14 * i),
                    ha="right" if left else "left", fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "#888888", "linewidth": 0.6})


def plot_frontier(plan: FleetPlan, path: str | Path, *, title: str = "") -> Path:
    """Draw cost ($/hour) against SLO attainment to ``path`` (PNG, PDF or SVG by matplotlib)."""
    from matplotlib.figure import Figure

    q = plan.question
    fig = Figure(figsize=(8.0, 5.2))
    ax = fig.subplots()
    full = [(m, o) for m, o in plan.runs if not o.stopped]
    cut = [(m, o) for m, o in plan.runs if o.stopped]
    ax.scatter([m.cost for m, _ in full], [o.attainment_max * 100 for _, o in full], color="#4477aa",
               label="simulated mix", zorder=3)
    ax.scatter([m.cost for m, _ in cut], [o.attainment_max * 100 for _, o in cut], marker="v",
               facecolors="none", edgecolors="#4477aa", label="stopped early (at most)", zorder=3)
    front = frontier(plan.runs)
    ax.step([m.cost for m, _ in front], [o.attainment_max * 100 for _, o in front], where="post",
            color="#4477aa", alpha=0.6, label="frontier")
    ax.axhline(q.target * 100, color="#cc3311", linestyle="--", linewidth=1,
               label=f"target {q.target:.0%}")
    _mark_named(ax, plan)
    checked = list(plan.validation.values())
    if checked:
        ax.scatter([m.cost for m, _ in checked], [o.attainment_max * 100 for _, o in checked], marker="D",
                   facecolors="none", edgecolors="#aa3377", s=60, zorder=6,
                   label=f"validated ({q.validate_queries} queries)")
    lows = [o.attainment_max * 100 for _, o in [*plan.runs, *checked]] or [q.target * 100]
    ax.set_ylim(max(0.0, min(min(lows), q.target * 100) - 3), 100.5)
    ax.margins(x=0.08)
    ax.set(xlabel="cost ($/hour)", ylabel="SLO attainment (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or f"fleet plan: {q.rate:g} q/s, deadline {q.slo_scale:g}x, {q.model}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
