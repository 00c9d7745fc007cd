"""No regret (issue 12): at an idle and at a loaded rate, ``slack``'s p95 latency is at most 3%
above the best other policy's, and at idle its queries take about their unloaded latency
(mean stretch within 5% of 1.0). trace1's first 24 queries on the paper's cluster (A100-80G x2,
A6000, L40S; Llama-3.1-70B, TP 4), Poisson arrivals, the virtual clock.

Before the model fixes of issue 12, slack's p95 here was 14% above tuned hexgen's at
0.005 q/s (132.6 s against 116.2 s) and 10% above at 0.04 q/s (178.8 s against 163.2 s):
calls went to the slow GPUs while the fast ones had room."""

from __future__ import annotations

import pytest

from fleetcall.bench.report import regret
from fleetcall.bench.scheduler import Setup, run_policy
from fleetcall.bench.workloads import load_workload

GPUS = ("A100-80G", "A100-80G", "A6000", "L40S")
OPTIONS = {"hexgen": {"alpha": 0.3}}  # tuned as in the README (fleetcall tune)


@pytest.mark.parametrize("rate", [0.005, 0.04])
def test_slack_is_never_worse_than_the_best_other_policy(rate: float) -> None:
    setup = Setup(tuple(load_workload("trace1"))[:24], GPUS, "llama-3.1-70b", seed=0)
    runs = [run_policy(setup, p, rate, OPTIONS.get(p))
            for p in ("rr-fcfs", "least-busy", "hexgen", "slack")]
    excess = regret(runs)[rate]
    assert excess["excess"] <= 0.03, (excess, [(r["policy"], r["latency_s"]["p95"]) for r in runs])
    slack = runs[-1]
    assert slack["slo_attainment"] == max(r["slo_attainment"] for r in runs)
    if rate == 0.005:
        assert slack["stretch"]["mean"] <= 1.05
