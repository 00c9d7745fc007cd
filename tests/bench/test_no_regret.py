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


def test_a_long_prompt_does_not_push_a_running_call_past_its_deadline(tmp_path) -> None:
    # Issue 12, found on the later half of the Mooncake hour (a trace of the same format as the
    # shipped one): a call with a 16k-token prompt decodes on the A100 when a 112k-token prompt
    # arrives. On the A100 the long prompt would finish sooner than on the idle L40S (84 s
    # against 118 s), but its 55 prefill chunks each hold one of the running call's last
    # tokens: that call went from 16 s to 92 s, past its 49 s deadline. Both keep their
    # deadlines when the long prompt takes the L40S.
    trace = tmp_path / "two.jsonl"
    trace.write_text(
        '{"timestamp": 0, "input_length": 16228, "output_length": 540, "hash_ids": %s}\n'
        '{"timestamp": 10700, "input_length": 111800, "output_length": 305, "hash_ids": %s}\n'
        % (list(range(32)), list(range(100, 319))))
    setup = Setup(tuple(load_workload(trace)), ("A100-80G", "L40S"), "llama-3.1-8b",
                  arrivals="recorded")
    run = run_policy(setup, "slack", 1.0)
    assert run["slo_attainment"] == 1.0, run["latency_s"]


def test_a_long_prompt_does_not_hold_up_a_decoding_call_for_longer_than_it_saves(tmp_path) -> None:
    # Issue 12, found on the later half of the Mooncake hour (600 requests, seed 1, 0.1 req/s):
    # a call with a 31k-token prompt and 784 tokens to write decodes on the A100 when a
    # 101k-token prompt arrives, 17 s and ~600 tokens before it ends. On the A100 the long
    # prompt would end 23 s sooner than on the idle L40S; but its 49 prefill chunks each hold one
    # of the running call's tokens, ~60 s in all: that call went from 32 s to 93 s (deadline 89
    # s), into the trace's p95 tail. Slack counted at most the call's remaining 17 s.
    trace = tmp_path / "two.jsonl"
    trace.write_text(
        '{"timestamp": 0, "input_length": 31430, "output_length": 784, "hash_ids": %s}\n'
        '{"timestamp": 15200, "input_length": 100886, "output_length": 216, "hash_ids": %s}\n'
        % (list(range(62)), list(range(100, 298))))
    setup = Setup(tuple(load_workload(trace)), ("A100-80G", "L40S"), "llama-3.1-8b",
                  arrivals="recorded")
    run = run_policy(setup, "slack", 1 / 15.2)  # (recorded gaps scaled to 1/rate on average)
    assert run["slo_attainment"] == 1.0, run["latency_s"]
    assert run["latency_s"]["p50"] < 70.0, run["latency_s"]  # (30 s and 98 s; before, 93 s and 70 s)
