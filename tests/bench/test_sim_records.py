"""The simulation's figures do not move when it is made faster (issue 12).

Every query's record of a ``bench scheduler`` run -- arrival, deadline, finish, every call's
start, finish, endpoint, queue wait, TTFT, cached and output tokens -- and each endpoint's busy
seconds, serialised as canonical JSON (floats at ``repr`` precision) and hashed. The digests
below were taken on the commit before the speed-ups (2fd4406, the merge base of the first
speed-up work), with this module's :func:`digest`; equal digests mean bit-identical runs. On a
mismatch, ``python -m tests.bench.sim_records dump ...`` on both commits and ``compare`` say
where the runs part (see :mod:`tests.bench.sim_records`).

A change that is meant to change the figures (the model, a policy) updates the digests, and
says so.

hexgen's and slack's digests were updated by issue 12's model fixes (h-regret): slack's
placement model, and the service predictor (which hexgen's scores read too) learning each
endpoint's decode speed without the interference it suffered. rr-fcfs's and least-busy's
records are unchanged. slack's two digests moved again with the seconds a long prompt pushes
a running call past its deadline (issue 12, found on Mooncake-format traces), and again when
slack counted every token a long prompt's chunks hold up, not at most the running call's
remaining seconds (the same traces).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from fleetcall.bench.scheduler import Setup
from fleetcall.bench.workloads import load_workload, repeat_queries
from tests.bench import sim_records

POLICIES = ("rr-fcfs", "least-busy", "hexgen", "slack")
OPTIONS: dict[str, dict[str, Any]] = {"hexgen": {"alpha": 0.3}}

# trace1, 30 queries at 0.2 q/s on the paper's cluster (queues form at every endpoint, slack's
# prefill gate holds calls, rr-fcfs's A6000 queue grows): policy -> (calls, digest)
TRACE1_LOADED = {
    "rr-fcfs": (562, "db087b260a4a554613767e51d8d108288a23501253e4d9979d4b206f46cbfe58"),
    "least-busy": (562, "abf91e30fb8cb1cb90ba66747c356d98f77920d6bb74428be619abe7fdbf0fa1"),
    "hexgen": (562, "019a716dea0617d7e2e63ec3804916fd1911de219a1e2245011cce256b7e0f6e"),
    "slack": (562, "33041baacf2ed8f8d0c35ebb5ef6bf9c58bcfe75861c0001a6a914a19e0e853f"),
}
# Mooncake (shared prefixes: the prefix caches and indexes decide), 60 requests at 2 req/s,
# Llama-3.1-8B on the same GPUs
MOONCAKE = {
    "rr-fcfs": (60, "5a290aece5ca86cb5936c3c6db0d9bc986ef2aafa4c827465364a9419538337a"),
    "least-busy": (60, "d55f61f84b48422a8d212ca88f31812996612062ca680829013ef08ce5f8418e"),
    "hexgen": (60, "83ea8653788388ce65cb501aba45130f76a28791c847ed0d3d863194180924c1"),
    "slack": (60, "75ae8fc10adce8ed9e6e469249c8f69029627a61840bb743a8cc518aafb76a9d"),
}
GPUS = ("A100-80G", "A100-80G", "A6000", "L40S")


def digest(run: dict[str, Any]) -> str:
    """SHA-256 of a :func:`sim_records.records` run's queries and busy seconds."""
    data = json.dumps({"queries": run["queries"], "busy": run["busy"]}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


@pytest.mark.parametrize("policy", POLICIES)
def test_trace1_under_load_gives_the_same_records_as_before_the_speed_ups(policy: str) -> None:
    setup = Setup(tuple(repeat_queries(load_workload("trace1"), 30)), GPUS, "llama-3.1-70b")
    run = sim_records.records(setup, policy, 0.2, OPTIONS.get(policy))
    assert (run["calls"], digest(run)) == TRACE1_LOADED[policy]


@pytest.mark.parametrize("policy", POLICIES)
def test_mooncake_prefixes_give_the_same_records_as_before_the_speed_ups(policy: str) -> None:
    setup = Setup(tuple(repeat_queries(load_workload("mooncake"), 60)), GPUS, "llama-3.1-8b")
    run = sim_records.records(setup, policy, 2.0, OPTIONS.get(policy))
    assert (run["calls"], digest(run)) == MOONCAKE[policy]


def test_compare_names_where_two_dumps_part() -> None:
    run = {"policy": "slack", "rate": 0.2, "queries": [{"finish": 1.0, "calls": [{"ttft_s": 0.5}]}],
           "busy": {"a": 1.0}}
    other = json.loads(json.dumps(run))
    other["queries"][0]["calls"][0]["ttft_s"] = 0.5000000000000001
    a, b = {"setup": {}, "runs": [run]}, {"setup": {}, "runs": [other]}
    assert sim_records.compare(a, a) == []
    assert sim_records.compare(a, b) == ["slack@0.2.queries[0].calls[0].ttft_s: 0.5 != 0.5000000000000001"]
