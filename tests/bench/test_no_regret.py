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


def _two_requests(tmp_path, first: tuple[int, int, int], second: tuple[int, int, int],
                  gap_s: float) -> dict:  # type: ignore[no-untyped-def]
    """slack's run of two Mooncake-format requests, (prompt tokens, output tokens, prompt
    blocks) each, ``gap_s`` apart, on an A100-80G and an L40S serving Llama-3.1-8B."""
    trace = tmp_path / "two.jsonl"
    lines = []
    for at_ms, (prompt, output, blocks), first_id in ((0, first, 0), (gap_s * 1000, second, 1000)):
        ids = list(range(first_id, first_id + blocks))
        lines.append(f'{{"timestamp": {at_ms}, "input_length": {prompt}, '
                     f'"output_length": {output}, "hash_ids": {ids}}}')
    trace.write_text("\n".join(lines) + "\n")
    setup = Setup(tuple(load_workload(trace)), ("A100-80G", "L40S"), "llama-3.1-8b",
                  arrivals="recorded")
    return run_policy(setup, "slack", 1 / gap_s)  # (recorded gaps scaled to 1/rate on average)


def test_a_long_prompt_does_not_push_a_running_call_past_its_deadline(tmp_path) -> None:
    # Issue 12, from the later half of the Mooncake hour (a trace of the same format as the
    # shipped one): a call with a 16k-token prompt decodes on the A100 when a 112k-token prompt
    # arrives. On the A100 the long prompt would finish sooner than on the idle L40S (84 s
    # against 118 s), but its 55 prefill chunks each hold one of the running call's last
    # tokens: in the trace that call went from 16 s to 92 s, past its 49 s deadline. Both keep
    # their deadlines when the long prompt takes the L40S. (Two requests alone do not
    # reproduce the trace's choice: slack put the long prompt on the L40S here even before the
    # deadline term; the regression test of that term is
    # tests/router/test_dispatcher.py::test_slack_counts_the_deadline_a_long_prompt_makes_a_running_call_miss.)
    run = _two_requests(tmp_path, (16228, 540, 32), (111800, 305, 219), 10.7)
    assert run["slo_attainment"] == 1.0, run["latency_s"]


def test_a_long_prompt_does_not_hold_up_a_decoding_call_for_longer_than_it_saves(tmp_path) -> None:
    # Issue 12, found on the later half of the Mooncake hour (600 requests, seed 1, 0.1 req/s):
    # a call with a 31k-token prompt and 784 tokens to write decodes on the A100 when a
    # 101k-token prompt arrives, 17 s and ~600 tokens before it ends. On the A100 the long
    # prompt would end 23 s sooner than on the idle L40S; but its 49 prefill chunks each hold one
    # of the running call's tokens, ~60 s in all: that call went from 32 s to 93 s (deadline 89
    # s), into the trace's p95 tail. Slack counted at most the call's remaining 17 s.
    run = _two_requests(tmp_path, (31430, 784, 62), (100886, 216, 198), 15.2)
    assert run["slo_attainment"] == 1.0, run["latency_s"]
    assert run["latency_s"]["p50"] < 70.0, run["latency_s"]  # (30 s and 98 s; before, 93 s and 70 s)
