"""What one placement costs the scheduler core (issue 12: the pool's CPU per call), counted in
operations rather than timed, so the tests hold on a busy machine; and the speed-ups behind
it decide exactly as the plain computation does."""

from __future__ import annotations

import random
from typing import Any

import pytest

from fleetcall.router.core import Grant, Outcome, SchedulerCore
from fleetcall.router.dispatcher import (LeastBusy, Slack, SlackKnobs, make_dispatcher,
                                         reads_prefill_state)
from fleetcall.router.predict import ServicePredictor
from fleetcall.router.state import EndpointSpec
from fleetcall.router.views import CallView, EndpointView

MODEL = "llama-3.1-8b"


def _core(policy: str, endpoints: int = 2, slots: int = 1, **kwargs: Any) -> SchedulerCore:
    core = SchedulerCore(policy, **kwargs)
    for i in range(endpoints):
        core.add_endpoint(EndpointSpec(f"e{i}", slots, "A100-80G", MODEL, twin_key="a100"), 0.0)
    return core


def _call(call_id: int, now: float, *, prompt: int = 300, deadline: float | None = None,
          query: str | None = None) -> CallView:
    return CallView(call_id, query or f"q{call_id}", "planner", prompt, 20, deadline, 0.0, 0,
                    now, ())


class _Counting:
    """Counts ServicePredictor.predict and .base calls while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.predict = self.base = 0
        predict, base = ServicePredictor.predict, ServicePredictor.base

        def counted_predict(p: ServicePredictor, *args: Any, **kwargs: Any) -> Any:
            self.predict += 1
            return predict(p, *args, **kwargs)

        def counted_base(p: ServicePredictor, *args: Any, **kwargs: Any) -> Any:
            self.base += 1
            return base(p, *args, **kwargs)

        monkeypatch.setattr(ServicePredictor, "predict", counted_predict)
        monkeypatch.setattr(ServicePredictor, "base", counted_base)


def _predictions_per_placement(queued: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """(predict calls, base calls) of the second of two slack placements with ``queued``
    calls waiting at each of two one-slot endpoints (every queued call ahead of the new one)."""
    core = _core("slack")
    for i in range(2 * queued + 2):
        core.submit(_call(i + 1, 0.0), 0.0)
    core.submit(_call(10_000, 0.0), 0.0)  # the memo of both queues' shapes is warm
    count = _Counting(monkeypatch)
    core.submit(_call(10_001, 0.0), 0.0)
    return count.predict, count.base


def test_a_slack_placement_predicts_no_more_with_longer_queues(monkeypatch) -> None:
    """Before: a placement called ``predict`` for every queued call ahead of the new one at
    every endpoint (its time to first token: the prefill it waits behind), 132 calls with 60
    queued per endpoint against 24 with 6. Now each queued call's time is its base time
    (kept per queue snapshot and per prompt shape) x the predictor's learned ratio: 11 calls
    either way."""
    short = _predictions_per_placement(6, monkeypatch)
    monkeypatch.undo()
    long = _predictions_per_placement(60, monkeypatch)
    assert long == short
    assert long[1] == 0  # every shape queued was seen before: no base prediction either


def test_the_queued_ttft_shortcut_is_exactly_what_predict_returns() -> None:
    """Slack reads a queued call's ``predict(p, o).ttft_s`` as ``base(p, o).ttft_s x
    ttft_ratio``: bit for bit the same, before and after learning, profiled or not."""
    rng = random.Random(3)
    for predictor in (ServicePredictor("A100-80G", MODEL), ServicePredictor(None, None)):
        for step in range(40):
            if step % 4 == 0:
                predictor.observe(rng.randrange(10, 4000), rng.randrange(2, 300),
                                  rng.uniform(0.01, 3.0), rng.uniform(0.005, 0.2))
            p, o = rng.randrange(0, 8000), rng.randrange(1, 500)
            assert predictor.base(p, o).ttft_s * predictor.ttft_ratio == \
                predictor.predict(p, o).ttft_s


def _views(core: SchedulerCore, now: float) -> list[EndpointView]:
    return core._views(now, None)


@pytest.mark.parametrize("knobs", [SlackKnobs(), SlackKnobs(prefill_slots=None),
                                   SlackKnobs(externality=0.0, aging_per_s=0.0)])
def test_slack_placements_with_its_memo_equal_a_fresh_policys(knobs: SlackKnobs) -> None:
    """A random run (mixed prompts and deadlines, queries with several calls, first tokens
    and ends in any order, learning on): at every placement the policy that kept its memo
    across the run predicts exactly what a new policy predicts from the same views."""
    rng = random.Random(11)
    policy = Slack(knobs)
    core = _core("slack", endpoints=3, slots=2, dispatcher=policy)
    live: list[Any] = []
    decoding: set[Any] = set()
    now, ids = 0.0, 0
    for _ in range(400):
        later = now + rng.choice([0.0, 0.0, rng.uniform(0.0, 2.0)])
        while (due := core.next_wakeup()) is not None and due <= later:  # as the pool's timer
            now = max(now, due)
            live += [a.call_id for a in core.advance(now) if isinstance(a, Grant)]
        now = later
        roll = rng.random()
        if roll < 0.5 or not live:
            ids += 1
            deadline = None if rng.random() < 0.3 else now + rng.uniform(1.0, 60.0)
            call = _call(ids, now, prompt=rng.randrange(1, 6000), deadline=deadline,
                         query=f"q{ids // 3}")
            views = _views(core, now)
            assert policy.placements(call, views, now) == \
                Slack(knobs).placements(call, views, now)
            actions = core.submit(call, now)
        elif roll < 0.75:
            call_id = rng.choice(live)
            actions = ([] if call_id in decoding else core.first_token(call_id, now))
            decoding.add(call_id)
        else:
            call_id = rng.choice(live)
            live.remove(call_id)
            decoding.discard(call_id)
            actions = core.finished(call_id, now, Outcome(
                ttft_s=rng.uniform(0.05, 2.0), tpot_s=rng.uniform(0.01, 0.05),
                total_s=rng.uniform(0.5, 10.0), completion_tokens=rng.randrange(1, 300)))
        live += [a.call_id for a in actions if isinstance(a, Grant)]
        core.check(now)


def test_baselines_get_views_without_the_prefill_fields() -> None:
    """rr-fcfs, least-busy and hexgen read slots, queues and predictions only: the core leaves
    the prefill fields of their views at the defaults (no prefill backlog predicted for every
    endpoint at every placement); slack, and a policy that does not say, get them filled."""
    assert [reads_prefill_state(make_dispatcher(name)) for name in
            ("rr-fcfs", "least-busy", "hexgen", "slack")] == [False, False, False, True]

    class Custom:  # a third-party policy that does not say what it reads
        def __init__(self) -> None:
            self._inner = LeastBusy()
            self.name, self.queue_order = "custom", self._inner.queue_order
            self.discipline, self.prefill_slots = self._inner.discipline, None
            self.prefill_chunk_tokens = self._inner.prefill_chunk_tokens

        def __getattr__(self, name: str) -> Any:  # choose, new_queue, steal
            if name == "reads_prefill_state":
                raise AttributeError(name)
            return getattr(self._inner, name)

    assert reads_prefill_state(Custom())
    for dispatcher, filled in ((make_dispatcher("least-busy"), False), (Slack(), True),
                               (Custom(), True)):
        core = _core("slack", dispatcher=dispatcher)
        core.submit(_call(1, 0.0, prompt=3000), 0.0)  # in prefill at e0
        busy = next(v for v in _views(core, 0.5) if v.name == "e0")
        assert (busy.prefill_backlog_s > 0, busy.prefill_load > 0,
                busy.typical_prefill_tokens > 0, busy.running_queries == ("q1",)) == \
            (filled,) * 4
        assert busy.running and busy.running[0] > 0  # what the baselines read is always there
