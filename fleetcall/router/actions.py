"""What goes in and out of the scheduler core, as plain picklable data.

Out (actions the shell carries out): :class:`Grant` (send the call to an endpoint),
:class:`~fleetcall.router.faults.Fail` (the call ends with an error), :class:`Retired` (a
removed endpoint has nothing left). In, besides the events' arguments: :class:`Outcome` (a
successful attempt's measurements) and :class:`~fleetcall.router.faults.Failure`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from fleetcall.router.faults import CallId, Fail

__all__ = ["Action", "Grant", "Outcome", "Retired"]


@dataclass(frozen=True, slots=True)
class Grant:
    """Action: the call holds a slot at ``endpoint``; send the attempt."""

    call_id: CallId
    endpoint: str
    attempt: int      # requests sent for this call, this one included (1 = the first)
    queue_s: float    # seconds the call has waited for a slot so far, all attempts


@dataclass(frozen=True, slots=True)
class Retired:
    """Action: a removed endpoint has no call left; its transport may be closed."""

    endpoint: str


Action = Grant | Fail | Retired


@dataclass(frozen=True, slots=True)
class Outcome:
    """A successful attempt's measurements (None: not measured)."""

    ttft_s: float | None = None   # seconds from sending to the first token
    tpot_s: float | None = None   # seconds per output token after the first
    total_s: float | None = None  # seconds from sending to the last token
    completion_tokens: int = 0
    cached_tokens: int = 0        # prompt tokens the endpoint served from its prefix cache
    complete: bool = True         # False: the caller stopped reading early (nothing learned)

    def measured(self) -> Outcome:
        """This outcome without the measurements no clock or server could give (a NaN, an
        infinity, a negative time or count): those are taken as not measured, so one bad
        report cannot poison what the scheduler learns."""
        def seconds(value: float | None) -> float | None:
            ok = value is not None and math.isfinite(value) and value >= 0
            return value if ok else None

        return replace(self, ttft_s=seconds(self.ttft_s), tpot_s=seconds(self.tpot_s),
                       total_s=seconds(self.total_s),
                       completion_tokens=max(self.completion_tokens, 0),
                       cached_tokens=max(self.cached_tokens, 0))
