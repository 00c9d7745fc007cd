"""The planner's verdicts: a screened meet is confirmed at full length, and with validation the
mix that holds at full length is THE answer (headline, JSON, savings, exit code), for the plan
and for the simple rules alike."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from fleetcall.bench.workloads import load_workload
from fleetcall.cli import main as cli
from fleetcall.fleet import planner
from fleetcall.fleet.capacity import EndpointKind
from fleetcall.fleet.planner import FleetPlan, Question, plan_fleet
from fleetcall.fleet.prices import load_prices
from fleetcall.fleet.report import format_plan, plan_json, savings
from fleetcall.fleet.search import Mix, Outcome, SearchResult, make_mix

TRACE = tuple(load_workload("trace1"))
ONE_A100 = ((EndpointKind("A100-80G", 1), 1),)


def test_a_mix_that_meets_a_short_run_but_misses_a_long_one_is_a_miss():
    """Llama-3.1-8B on one A100 at 0.05 q/s misses nothing in its first 40 queries and 18.8% of
    80 (virtual clock): a 20-query screen alone chose it; the confirmation rejects it."""
    q = Question(TRACE, 0.05, 3.0, 0.95, ("A100-80G",), load_prices("example"), "llama-3.1-8b",
                 max_gpus=2, search_queries=20, confirm_queries=80, tp_degrees=(1,))
    plan = plan_fleet(q)
    one = plan.outcome(make_mix(dict(ONE_A100), {EndpointKind("A100-80G", 1): 1.0},
                                {EndpointKind("A100-80G", 1): 1.79}))
    assert one is not None and not one.meets and one.detail["queries"] == 80
    screen = one.detail["screen"]
    assert isinstance(screen, Mapping) and screen["meets"] and screen["attainment"] == 1.0
    assert plan.best is not None and plan.best.counts == ((EndpointKind("A100-80G", 1), 2),)
    best = plan.outcome(plan.best)
    assert best is not None and best.meets and best.detail["queries"] == 80
    assert "2 met and were confirmed at 80" in format_plan(plan)


def test_the_confirmation_length_defaults_to_the_validation_length_else_five_screens():
    q = Question(TRACE, 0.05, 3.0, 0.95, ("A100-80G",), {"A100-80G": 1.0}, "llama-3.1-8b")
    assert q.confirm_length == 1000
    assert Question(**{**_fields(q), "validate_queries": 300}).confirm_length == 300
    assert Question(**{**_fields(q), "validate_queries": 300, "confirm_queries": 0}).confirm_length == 0


def _fields(q: Question) -> dict[str, object]:
    return {f: getattr(q, f) for f in Question.__dataclass_fields__}


def test_nothing_holding_at_full_length_exits_1_and_says_so(capsys):
    """Without confirmation the 20-query screen picks one A100; at 80 queries it misses, and
    within one GPU nothing dearer exists: no answer, exit 1 (before: the failed choice, exit 0)."""
    args = ["plan-fleet", "--trace", "trace1", "--rate", "0.05", "--gpus", "A100-80G", "--prices",
            "example", "--model", "llama-3.1-8b", "--queries", "20", "--confirm", "0", "--validate",
            "80", "--max-gpus", "1", "--tp", "1", "--no-progress"]
    assert cli(args) == 1
    out = capsys.readouterr().out
    assert "no mix holds 95% SLO attainment at full length (80 queries)" in out


# -- escalation and the answer, on a plan built by hand (no simulation) ------------------------

K_L40S, K_A100, K_H100 = EndpointKind("L40S", 4), EndpointKind("A100-80G", 4), EndpointKind("H100", 4)
QPS = {K_L40S: 0.02, K_A100: 0.03, K_H100: 0.06}
PRICES = {K_L40S: 3.44, K_A100: 7.16, K_H100: 11.96}


def _make(counts: Mapping[EndpointKind, int]) -> Mix:
    return make_mix(counts, QPS, PRICES, rate=0.04)


def _out(att: float, queries: int) -> Outcome:
    return Outcome(att >= 0.95, att, att, detail={"queries": queries, "misses": round((1 - att) * queries)})


def _plan(runs: list[tuple[Mix, Outcome]], rules: dict[str, Mix | None]) -> FleetPlan:
    q = Question(TRACE, 0.04, 3.0, 0.95, ("L40S", "A100-80G", "H100"),
                 {"L40S": 0.86, "A100-80G": 1.79, "H100": 2.99}, "llama-3.1-70b",
                 search_queries=200, validate_queries=1000)
    best = min((m for m, o in runs if o.meets), key=lambda m: m.cost)
    return FleetPlan(q, [], [], SearchResult(best, runs, len(runs), len(runs)), runs, rules,
                     rule_kinds={"all-A100": (K_A100,), "cheapest single type": (K_H100, K_A100, K_L40S)},
                     make=_make)


def test_missed_mixes_escalate_and_the_mixes_that_hold_are_the_answers(monkeypatch):
    """trace1 at 0.04 q/s: the choice and the all-A100 rule met in 200 queries and missed in
    1,000 (88.6%, 92.7%). The answer, the JSON choice, the savings and the headline must be the
    mixes that hold at full length; before, the search's choices stood (and its savings)."""
    mixed = _make({K_L40S: 3})
    two_a100, three_a100, h100 = _make({K_A100: 2}), _make({K_A100: 3}), _make({K_H100: 1})
    four_a100 = _make({K_A100: 4})
    met = _out(0.96, 200)
    plan = _plan([(mixed, met), (two_a100, met), (h100, _out(1.0, 200))],
                 {"all-A100": two_a100, "cheapest single type": h100})
    full = {mixed.counts: _out(0.886, 1000), two_a100.counts: _out(0.927, 1000),
            three_a100.counts: _out(0.94, 1000), four_a100.counts: _out(1.0, 1000),
            h100.counts: _out(1.0, 1000)}
    ran: list[str] = []

    class FullLength:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __call__(self, mix: Mix) -> Outcome:
            ran.append(mix.label)
            return full[mix.counts]

    monkeypatch.setattr(planner, "_Simulator", FullLength)
    monkeypatch.setattr(planner, "_workload", lambda *args: type("W", (), {"queries": [0] * 1000})())
    planner.validate(plan, progress=planner.Progress(enabled=False))
    v = plan.validation
    # the choice escalates to the cheapest dearer mix the search saw meet
    assert v["holds at full length"][0] is h100 and "escalated 1" not in v
    # the all-A100 rule escalates one A100 endpoint at a time; the cheapest single type held
    assert v["all-A100: escalated 1"][0].counts == three_a100.counts
    assert v["all-A100: holds at full length"][0].counts == four_a100.counts
    assert sorted(ran) == sorted({m.label for m in (mixed, two_a100, h100, three_a100, four_a100)})
    assert plan.best is mixed and plan.answer is h100
    assert plan.rule_answer("all-A100").counts == four_a100.counts
    assert plan.rule_answer("cheapest single type") is h100
    saved = savings(plan)
    assert saved["all-A100"] == pytest.approx(1 - h100.cost / four_a100.cost)
    assert saved["cheapest single type"] == 0.0
    body = json.loads(json.dumps(plan_json(plan), default=str))
    assert body["choice"]["mix"] == h100.label and body["choice"]["queries"] == 1000
    assert body["search_choice"]["mix"] == mixed.label
    assert body["rules"]["all-A100"]["mix"] == four_a100.label
    text = format_plan(plan)
    assert f"cheapest mix meeting 95% at full length (1000 queries): {h100.label}" in text
    assert f"the search's choice {mixed.label}" in text and "88.6% in 1000" in text


def test_a_rule_that_holds_cheaper_than_the_escalated_choice_is_the_answer(monkeypatch):
    """The choice and the rules escalate separately: the choice (3 x L40S) misses at full
    length and escalates to the dearer mix the search saw meet (2 x H100, $23.92/h), while the
    cheapest-single-type rule's 3 x L40S escalates to 4 x L40S ($13.76/h), which holds. The
    answer is the cheapest mix that holds, so no rule's saving is negative (found by the
    issue-14 attacker: "the plan saves -74%" was possible)."""
    three_l40s, four_l40s, two_h100 = _make({K_L40S: 3}), _make({K_L40S: 4}), _make({K_H100: 2})
    assert four_l40s.cost < two_h100.cost
    plan = _plan([(three_l40s, _out(0.96, 200)), (two_h100, _out(1.0, 200))],
                 {"all-A100": None, "cheapest single type": three_l40s})
    plan.rule_kinds = {"cheapest single type": (K_L40S,)}
    full = {three_l40s.counts: _out(0.90, 1000), four_l40s.counts: _out(0.97, 1000),
            two_h100.counts: _out(1.0, 1000)}

    class FullLength:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __call__(self, mix: Mix) -> Outcome:
            return full[mix.counts]

    monkeypatch.setattr(planner, "_Simulator", FullLength)
    monkeypatch.setattr(planner, "_workload", lambda *args: type("W", (), {"queries": [0] * 1000})())
    planner.validate(plan, progress=planner.Progress(enabled=False))
    assert plan.validation["holds at full length"][0].counts == two_h100.counts
    assert plan.rule_answer("cheapest single type").counts == four_l40s.counts
    assert plan.answer.counts == four_l40s.counts
    assert all(v is None or v >= 0.0 for v in savings(plan).values())


def test_without_validation_the_search_choice_is_the_answer():
    mixed = _make({K_L40S: 3})
    plan = _plan([(mixed, _out(0.97, 200))], {"all-A100": None, "cheapest single type": None})
    plan.question = Question(**{**_fields(plan.question), "validate_queries": 0})
    assert plan.answer is mixed and plan.answer_outcome(mixed) is plan.runs[0][1]
