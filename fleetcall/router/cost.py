"""Cost-aware placement: slack's ``prefer_cheap`` option (after Melange: cheaper GPUs serve the
calls they are fast enough for).

A call with a deadline gets a *share* of the time its query has left: the query still has this
call's work and ``remaining_work_s`` after it, so the call may take

    budget = (deadline - now) x best / (best + remaining_work_s)

seconds, ``best`` being its predicted latency on the best endpoint now. Every endpoint whose
predicted latency for the call, grown by the margin, fits in that budget is fast enough; among
them the call goes where it adds the least to the bill: the endpoint's ``cost_per_hour`` x the
seconds the call extends the endpoint's busy period (none if it ends before the calls already
running there: a batch slot on a busy GPU is free, an idle GPU is paid from the call's start).
Calls without a deadline, with no endpoint fast enough, or with no endpoint of known price
among those, are placed as usual (earliest finish).

Pure functions over :class:`~fleetcall.router.views.EndpointView` snapshots; times are loop
seconds, prices any currency per hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fleetcall.router.views import CallView, EndpointView

if TYPE_CHECKING:
    from fleetcall.router.slack import Placement

__all__ = ["call_budget_s", "cheapest_in_time", "marginal_cost"]


def call_budget_s(call: CallView, best_latency_s: float, now: float) -> float | None:
    """Seconds from ``now`` the call may take: its share of the time left to its deadline, in
    proportion to its own predicted latency (``best_latency_s``) against the query's work after
    it. None without a deadline; negative once the deadline has passed.

        >>> c = CallView(1, "q", "planner", 100, 10, 30.0, 20.0, 0, 0.0, ())
        >>> call_budget_s(c, 10.0, 0.0)  # 30 s left for 10 s of this call + 20 s after it
        10.0
    """
    if call.deadline is None:
        return None
    left = call.deadline - now
    best = max(best_latency_s, 1e-9)
    return left * best / (best + call.remaining_work_s)


def marginal_cost(finish: float, endpoint: EndpointView, now: float) -> float | None:
    """What a call ending at loop time ``finish`` adds to ``endpoint``'s bill: its price per
    hour x the seconds past the end of the calls running there (from ``now`` if idle), / 3600.
    None if the price is unknown.

        >>> from fleetcall.router.predict import ServicePredictor
        >>> e = EndpointView("a", 16, (100.0,), (), ServicePredictor("unknown", None),
        ...                  cost_per_hour=3.6)
        >>> marginal_cost(50.0, e, 0.0), marginal_cost(200.0, e, 0.0)
        (0.0, 0.1)
    """
    if endpoint.cost_per_hour is None:
        return None
    busy_until = now + max(endpoint.running, default=0.0)
    return endpoint.cost_per_hour * max(finish - busy_until, 0.0) / 3600.0


def cheapest_in_time(call: CallView, placements: Sequence[Placement],
                     endpoints: Sequence[EndpointView], now: float,
                     margin: float) -> Placement | None:
    """The placement that adds the least to the bill among those whose predicted latency x
    (1 + ``margin``) fits the call's budget (:func:`call_budget_s`); ties go to the lowest
    slack cost. None: no deadline, none fits, or none of those has a known price."""
    if not placements:
        return None
    best = min(p.finish for p in placements) - now
    budget = call_budget_s(call, best, now)
    if budget is None:
        return None
    by_name = {e.name: e for e in endpoints}
    priced = []
    for p in placements:
        if (p.finish - now) * (1.0 + margin) > budget:
            continue
        cost = marginal_cost(p.finish, by_name[p.endpoint], now)
        if cost is not None:
            priced.append((cost, p.cost, p))
    if not priced:
        return None
    return min(priced, key=lambda t: (t[0], t[1]))[2]
