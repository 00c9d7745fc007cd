"""slack's ``prefer_cheap`` (issue 12, Cost): the cheapest endpoint fast enough for the call's
share of its deadline, by the GPU time it adds to the bill."""

from __future__ import annotations

import pytest

from fleetcall.bench.scheduler import Setup, gpu_costs, policy_labels, run_policy
from fleetcall.bench.workloads import load_workload
from fleetcall.errors import ConfigError
from fleetcall.router.cost import call_budget_s, cheapest_in_time, marginal_cost
from fleetcall.router.dispatcher import Slack, SlackKnobs
from fleetcall.router.predict import ServicePredictor
from fleetcall.router.views import CallView, EndpointView

MODEL = "llama-3.1-70b"
A100 = ServicePredictor("A100-80G", MODEL, 4)
L40S = ServicePredictor("L40S", MODEL, 4)


def _call(deadline: float | None, remaining: float = 0.0, prompt: int = 800,
          output: int = 40) -> CallView:
    return CallView(1, "q", "k", prompt, output, deadline, remaining, 0, 0.0, ())


def _pool(a100_price: float | None = 7.16, l40s_price: float | None = 3.44,
          a100_running: tuple[float, ...] = ()) -> list[EndpointView]:
    return [EndpointView("a100", 16, a100_running, (), A100, cost_per_hour=a100_price),
            EndpointView("l40s", 16, (), (), L40S, cost_per_hour=l40s_price)]


CHEAP = Slack(SlackKnobs(prefer_cheap=True))


def test_a_call_with_room_in_its_deadline_goes_to_the_cheap_gpu_fast_enough() -> None:
    pool = _pool()
    fast = {p.endpoint: p.finish for p in Slack().placements(_call(60.0), pool, 0.0)}
    assert fast["a100"] < fast["l40s"] < 20.0  # the L40S is slower, well within 60 s
    assert Slack().choose(_call(60.0), pool, 0.0) == "a100"
    assert CHEAP.choose(_call(60.0), pool, 0.0) == "l40s"


def test_the_cheap_gpu_is_skipped_when_the_call_would_miss_its_share() -> None:
    pool = _pool()
    finish = {p.endpoint: p.finish for p in Slack().placements(_call(60.0), pool, 0.0)}
    # a deadline the L40S meets only without the margin: the A100
    tight = finish["l40s"] * 1.2
    assert CHEAP.choose(_call(tight), pool, 0.0) == "a100"
    # the same deadline for a query with much work after this call: a smaller share
    assert CHEAP.choose(_call(60.0, remaining=200.0), pool, 0.0) == "a100"


def test_without_deadline_or_prices_slack_places_as_usual() -> None:
    assert CHEAP.choose(_call(None), _pool(), 0.0) == "a100"
    assert CHEAP.choose(_call(60.0), _pool(None, None), 0.0) == "a100"


def test_a_busy_gpu_whose_calls_outlast_this_one_adds_nothing_to_the_bill() -> None:
    """The A100 serves a long call anyway: a slot beside it costs no extra GPU time."""
    pool = _pool(a100_running=(300.0,))
    assert CHEAP.choose(_call(60.0), pool, 0.0) == "a100"
    [busy, _] = pool
    assert marginal_cost(100.0, busy, 0.0) == 0.0
    assert marginal_cost(400.0, busy, 0.0) == pytest.approx(7.16 * 100 / 3600)


def test_the_budget_is_the_calls_share_of_the_time_left() -> None:
    assert call_budget_s(_call(30.0, remaining=20.0), 10.0, 0.0) == pytest.approx(10.0)
    assert call_budget_s(_call(30.0, remaining=20.0), 10.0, 40.0) == pytest.approx(-10.0 / 3)
    assert call_budget_s(_call(None), 10.0, 0.0) is None
    assert cheapest_in_time(_call(60.0), [], _pool(), 0.0, 0.5) is None


def test_bench_options_name_bad_input() -> None:
    assert dict(gpu_costs("A6000=0.5"))["A6000"] == 0.5
    for bad in ("A6000", "A6000=-1", "=2", "A6000=x"):
        with pytest.raises(ConfigError, match="--gpu-cost"):
            gpu_costs(bad)
    assert policy_labels(["slack", "cheap=slack"]) == [("slack", "slack"), ("cheap", "slack")]
    with pytest.raises(ConfigError, match="unknown policy"):
        policy_labels(["cheap=fastest"])
    with pytest.raises(ConfigError, match="slack named twice"):
        policy_labels(["slack", "slack=slack"])
    with pytest.raises(ConfigError, match="wants a label"):
        policy_labels(["=slack"])


def test_prefer_cheap_lowers_the_cost_per_query_in_slo_at_the_same_attainment() -> None:
    """trace1 on A100 x2 + A6000 + L40S at a light load (virtual clock): every query meets its
    deadline either way; the option serves them for less GPU time x price."""
    setup = Setup(tuple(load_workload("trace1"))[:12],
                  ("A100-80G", "A100-80G", "A6000", "L40S"), MODEL)
    plain = run_policy(setup, "slack", rate=0.005)
    cheap = run_policy(setup, "slack", rate=0.005, options={"prefer_cheap": True},
                       label="cheap")
    assert cheap["policy"] == "cheap"
    assert plain["slo_attainment"] == cheap["slo_attainment"] == 1.0
    assert cheap["cost_per_slo_query"] < 0.8 * plain["cost_per_slo_query"]
    assert plain["gpu_cost"] > 0
