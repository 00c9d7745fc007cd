"""How much of a model's error against measured latencies is the measurements' own noise.

Three views, all pure arithmetic on (prompt length, seconds) or on errors:

- the *repeatability floor* (:func:`repeat_floor_pct`): requests with the same prompt length
  scored against their best constant; no model of prompt length can go below it;
- the *best monotone model* (:func:`monotone_mape_pct`, :func:`monotone_held_out_pct`): the
  non-decreasing function of prompt length with the lowest MAPE, in sample (a bound no model
  in which a longer prompt never prefills faster beats on these rows) and fitted on alternate
  rows, scored on the others (what such a free-form model does on other measurements);
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


def monotone_fit(points: Sequence[tuple[int, float]]) -> list[tuple[int, int, float]]:
    """The non-decreasing step function of prompt length with the lowest MAPE on ``points``
    ((prompt tokens, measured seconds), measured > 0), as ``(first, last prompt length,
    value)`` steps in order: an isotonic regression under the L1 loss weighted by 1 / measured
    (pool adjacent violators, each pool at its :func:`_mape_minimiser`; equal lengths share a
    step). Empty for no points.

        >>> monotone_fit([(10, 1.0), (20, 3.0), (30, 2.0)])
        [(10, 10, 1.0), (20, 30, 2.0)]
    """
    steps: list[tuple[int, int, list[float], float]] = []  # first, last, values, value
    for tokens, value in sorted(points):
        if steps and steps[-1][1] == tokens:
            first, last, values, _ = steps.pop()
            values = values + [value]
            steps.append((first, last, values, _mape_minimiser(values)))
        else:
            steps.append((tokens, tokens, [value], value))
        while len(steps) > 1 and steps[-2][3] > steps[-1][3]:
            b = steps.pop()
            a = steps.pop()
            values = a[2] + b[2]
            steps.append((a[0], b[1], values, _mape_minimiser(values)))
    return [(first, last, value) for first, last, _, value in steps]


def monotone_predict(steps: Sequence[tuple[int, int, float]], tokens: int) -> float:
    """:func:`monotone_fit`'s function at ``tokens``: linear between the steps' middles, flat
    beyond the first and last (so still non-decreasing)."""
    middles = [(first + last) / 2 for first, last, _ in steps]
    if tokens <= middles[0]:
        return steps[0][2]
    for i in range(1, len(steps)):
        if tokens <= middles[i]:
            t = (tokens - middles[i - 1]) / (middles[i] - middles[i - 1])
            return steps[i - 1][2] + t * (steps[i][2] - steps[i - 1][2])
    return steps[-1][2]


def monotone_mape_pct(points: Sequence[tuple[int, float]]) -> float | None:
    """MAPE (percent) of :func:`monotone_fit` on the points it was fitted on: no model of the
    prompt length that never predicts a longer prompt faster does better on them (None: no
    point with a positive measurement)."""
    usable = [(t, v) for t, v in points if v > 0]
    if not usable:
        return None
    errors: list[float] = []
    for first, last, value in monotone_fit(usable):  # each point scored by its own step
        errors.extend(abs(value - v) / v for t, v in usable if first <= t <= last)
    return 100.0 * sum(errors) / len(errors)


def monotone_held_out_pct(points: Sequence[tuple[int, float]]) -> float | None:
    """MAPE (percent) of :func:`monotone_fit` fitted on every other point by prompt length and
    scored on the rest, averaged over both halves (None: fewer than 4 usable points). A
    free-form model of prompt length fitted to these measurements does about this well on
    other measurements of similar prompts."""
    usable = sorted((t, v) for t, v in points if v > 0)
    if len(usable) < 4:
        return None
    scores = []
    for train, test in ((usable[0::2], usable[1::2]), (usable[1::2], usable[0::2])):
        steps = monotone_fit(train)
        scores.append(sum(abs(monotone_predict(steps, t) - v) / v for t, v in test) / len(test))
    return 100.0 * sum(scores) / len(scores)


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
