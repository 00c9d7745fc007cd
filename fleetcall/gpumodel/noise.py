"""How much of a model's error against measured latencies is the measurements' own noise.

Two views, both pure arithmetic on (prompt length, seconds) or on errors:

- the *repeatability floor* (:func:`repeat_floor_pct`): requests with the same prompt length
  scored against their best constant; no model of prompt length can go below it;
- the *outliers* (:func:`outlier_stats`): requests off by many times the series' typical error.
  On the shipped A6000 profile these are stalls of 0.1-0.6 s that strike prefill and decode
  alike, about 0.15 times per second of either (see the README's calibrate section): a
  property of that machine's run, not of the prompt, so no cost term can predict them. The
  share of the MAPE they carry, and the MAPE without them, say how far a model of the lengths
  is from the rest of the measurements.

Example::

    >>> o = outlier_stats([1.0, 2.0, 1.5, 40.0])
    >>> (o.n, round(o.mape_without_pct, 2))
    (1, 1.5)
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from pydantic import BaseModel

REPEAT_TOKENS = 10   # prompts this close in length count as repeats of one measurement
REPEAT_MIN_GROUP = 3  # repeats needed before a group says anything about the noise
# An error above this many times the series' median error is an outlier. For Gaussian noise
# the median absolute error is 0.67 sigma, so 5x is 3.4 sigma: under 0.1% of rows by chance.
OUTLIER_FACTOR = 5.0


def repeat_floor_pct(points: Sequence[tuple[int, float]], *, within: int = REPEAT_TOKENS,
                     min_group: int = REPEAT_MIN_GROUP) -> float | None:
    """Measurement noise of a series, as the lowest MAPE any model of prompt length can reach.

    points: (prompt tokens, measured seconds) of one GPU. Points whose prompt lengths lie within
    ``within`` tokens of their group's first are repeats of one measurement (a few tokens move
    a prefill by well under 1%); each group of at least ``min_group`` is predicted by the
    constant that minimises its MAPE (a median weighted by 1 / measured). The result is the
    MAPE of those best constants over the grouped points, in percent, or None if no group is
    large enough. A model of TTFT or TPOT against prompt length whose MAPE is near this figure
    is at the noise of the measurements: what is left is run-to-run variation, not a missing
    term (TPOT also moves with the output length, so its floor is a slight overestimate).
    """
    ordered = sorted(points)
    errors: list[float] = []
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1][0] - ordered[start][0] <= within:
            end += 1
        values = [v for _, v in ordered[start:end + 1] if v > 0]
        if len(values) >= min_group:
            best = _mape_minimiser(values)
            errors.extend(abs(best - v) / v for v in values)
        start = end + 1
    return 100.0 * sum(errors) / len(errors) if errors else None


def _mape_minimiser(values: Sequence[float]) -> float:
    """The constant c minimising sum |c - v| / v: a median of ``values`` weighted by 1 / v."""
    ordered = sorted(values)
    half, acc = sum(1.0 / v for v in ordered) / 2, 0.0
    for v in ordered:
        acc += 1.0 / v
        if acc >= half:
            return v
    return ordered[-1]  # pragma: no cover  # acc reaches the total at the last value


class OutlierStats(BaseModel):
    """What the outliers of one series (one GPU, one column) carry of its MAPE."""

    n: int                   # rows whose error exceeds OUTLIER_FACTOR x the median error
    share_pct: float         # percent of the series' summed error those rows carry
    mape_without_pct: float  # MAPE of the other rows, percent
    worst_pct: float         # the largest error, percent
    # MAPE without the k worst rows, k = 1, 3, 10 (fewer if the series is short); JSON keys
    # are strings
    without_worst_pct: dict[int, float] = {}
    # repeatability floor (repeat_floor_pct) of the other rows; None without points or groups
    floor_without_pct: float | None = None


def is_outlier(errors_pct: Sequence[float], *, factor: float = OUTLIER_FACTOR) -> list[bool]:
    """Per row, whether its absolute percentage error exceeds ``factor`` x the median error
    (never, if the median is 0). Raises ValueError on an empty series or a negative error."""
    if not errors_pct:
        raise ValueError("no errors to analyse")
    if min(errors_pct) < 0:
        raise ValueError("errors must be absolute (>= 0)")
    limit = factor * statistics.median(errors_pct)
    return [limit > 0 and e > limit for e in errors_pct]


def outlier_stats(errors_pct: Sequence[float], *, factor: float = OUTLIER_FACTOR,
                  points: Sequence[tuple[int, float]] | None = None) -> OutlierStats:
    """Outliers of a series of absolute percentage errors (one per request, >= 0).

    A row is an outlier when its error exceeds ``factor`` times the median error
    (:func:`is_outlier`). points: the rows' (prompt tokens, measured seconds), if given, for
    the repeatability floor of the rows that are not outliers. Raises ValueError on an empty
    series, a negative error, or points of another length.
    """
    flags = is_outlier(errors_pct, factor=factor)
    if points is not None and len(points) != len(errors_pct):
        raise ValueError(f"{len(points)} points for {len(errors_pct)} errors")
    inliers = [e for e, out in zip(errors_pct, flags) if not out]
    total = sum(errors_pct)
    floor = None if points is None else repeat_floor_pct(
        [pt for pt, out in zip(points, flags) if not out])
    return OutlierStats(
        n=len(errors_pct) - len(inliers),
        share_pct=100.0 * (total - sum(inliers)) / total if total else 0.0,
        mape_without_pct=sum(inliers) / len(inliers),
        worst_pct=max(errors_pct),
        without_worst_pct={k: mape_without_worst_pct(errors_pct, k)
                           for k in (1, 3, 10) if k < len(errors_pct)},
        floor_without_pct=floor)


def mape_without_worst_pct(errors_pct: Sequence[float], k: int) -> float:
    """MAPE (percent) of a series of absolute percentage errors without its ``k`` worst rows.

    Raises ValueError unless 0 <= k < len(errors_pct).
    """
    if not 0 <= k < len(errors_pct):
        raise ValueError(f"k must be in [0, {len(errors_pct)}), got {k}")
    kept = sorted(errors_pct)[:len(errors_pct) - k]
    return sum(kept) / len(kept)
