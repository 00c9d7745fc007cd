"""Arrival processes: when each query of a benchmark arrives, in seconds from time 0.

Every process returns ``n`` non-decreasing times, the first at 0.0, deterministic given its seed
(``random.Random(seed)``, no global state):

- :func:`poisson` -- exponential gaps at ``rate`` queries/s;
- :func:`gamma` -- gamma gaps with mean ``1/rate`` and coefficient of variation ``cv`` (bursty for
  ``cv > 1``, regular for ``cv < 1``; ``cv = 1`` is Poisson);
- :func:`from_csv` -- the gaps of a recorded trace (``timestamp_s`` column), optionally scaled
  to a mean rate;
- :func:`from_specs` -- the queries' own recorded ``arrival_s`` (Mooncake, agent sessions).

:func:`make_arrivals` picks one by name or path, as ``--arrivals`` does.

    >>> times = poisson(2.0, 4, seed=1)
    >>> times[0], len(times), times == poisson(2.0, 4, seed=1)
    (0.0, 4, True)
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import random
from collections.abc import Callable, Sequence

from fleetcall.bench.workloads import QuerySpec, Source, data_file
from fleetcall.errors import ConfigError, WorkloadError


def _check(rate: float, n: int) -> None:
    if not rate > 0 or math.isinf(rate):
        raise ConfigError(f"arrival rate must be a finite number > 0 queries/s, got {rate!r}")
    if n < 0:
        raise ConfigError(f"number of arrivals must be >= 0, got {n}")


def _cumulate(gaps: list[float]) -> list[float]:
    """Arrival times from the gaps between them, the first arrival at 0."""
    return list(itertools.accumulate(gaps, initial=0.0))


def poisson(rate: float, n: int, seed: int = 0) -> list[float]:
    """``n`` arrivals of a Poisson process at ``rate`` queries/s."""
    _check(rate, n)
    rng = random.Random(seed)
    return _cumulate([rng.expovariate(rate) for _ in range(n - 1)]) if n else []


def gamma(rate: float, cv: float, n: int, seed: int = 0) -> list[float]:
    """``n`` arrivals with gamma-distributed gaps: mean ``1/rate`` s, coefficient of variation
    ``cv`` (shape ``1/cv**2``). ``cv == 1`` is exactly :func:`poisson` (same draws)."""
    _check(rate, n)
    if not cv > 0 or math.isinf(cv):
        raise ConfigError(f"arrival cv must be a finite number > 0, got {cv!r}")
    if cv == 1.0:
        return poisson(rate, n, seed)
    shape = 1.0 / (cv * cv)
    scale = 1.0 / (rate * shape)
    rng = random.Random(seed)
    return _cumulate([rng.gammavariate(shape, scale) for _ in range(n - 1)]) if n else []


def scale_to_rate(times: Sequence[float], rate: float) -> list[float]:
    """``times`` stretched so their mean rate (arrivals after the first over the span) is ``rate``."""
    _check(rate, len(times))
    span = max(times) - min(times) if times else 0.0
    if len(times) < 2 or span <= 0.0:
        raise WorkloadError(f"cannot scale {len(times)} arrival(s) spanning {span} s to a rate")
    factor = (len(times) - 1) / span / rate
    start = min(times)
    return [(t - start) * factor for t in times]


def from_csv(path: Source, n: int | None = None, rate: float | None = None, *,
             column: str = "timestamp_s") -> list[float]:
    """The first ``n`` (default all) arrivals of a recorded trace, replayed from time 0.

    Timestamps (seconds, column ``column``) are sorted and shifted so the first is 0; with
    ``rate``, the gaps are scaled so the mean rate of the replayed arrivals is ``rate``.
    Builtin names work too (``"azure-conv"``).
    """
    label = str(path)
    times = sorted(_read_times(label, data_file(path).read_text(encoding="utf-8"), column))
    if n is not None:
        if n > len(times):
            raise WorkloadError(f"{label}: {n} arrivals asked, the trace has {len(times)}")
        times = times[:n]
    if not times:
        return []
    if rate is not None:
        return scale_to_rate(times, rate)
    return [t - times[0] for t in times]


def _read_times(label: str, text: str, column: str) -> list[float]:
    reader = csv.DictReader(io.StringIO(text))
    if column not in (reader.fieldnames or ()):
        raise WorkloadError(f"{label}: no {column!r} column "
                            f"(header: {', '.join(reader.fieldnames or ()) or 'none'})")
    times = []
    for row in reader:
        try:
            t = float(row[column])
        except (TypeError, ValueError):
            t = math.nan
        if not math.isfinite(t):
            raise WorkloadError(f"{label}: line {reader.line_num}: {column!r} must be a number "
                                f"of seconds, got {row[column]!r}")
        times.append(t)
    return times


def from_specs(queries: Sequence[QuerySpec]) -> list[float]:
    """The queries' recorded ``arrival_s``, in query order, shifted so the earliest is 0."""
    missing = [q.query_id for q in queries if q.arrival_s is None]
    if missing:
        raise WorkloadError(f"{len(missing)} queries have no recorded arrival "
                            f"(first: {missing[0]!r}); use a Poisson or gamma process")
    times = [q.arrival_s for q in queries if q.arrival_s is not None]
    start = min(times, default=0.0)
    return [t - start for t in times]


ArrivalProcess = Callable[[float | None, int, int, float, Sequence[QuerySpec] | None], list[float]]


def _need_rate(kind: str, rate: float | None) -> float:
    if rate is None:
        raise ConfigError(f"arrivals {kind!r} need a rate (queries/s)")
    return rate


def _recorded(rate: float | None, n: int, seed: int, cv: float,
              queries: Sequence[QuerySpec] | None) -> list[float]:
    if queries is None:
        raise ConfigError("arrivals 'recorded' need the queries")
    if n > len(queries):
        raise WorkloadError(f"{n} arrivals asked, the workload records {len(queries)}")
    times = from_specs(queries[:n])
    return scale_to_rate(times, rate) if rate is not None else times


# process name -> (rate, n, seed, cv, queries) -> arrival times
ARRIVAL_PROCESSES: dict[str, ArrivalProcess] = {
    "poisson": lambda rate, n, seed, cv, queries: poisson(_need_rate("poisson", rate), n, seed),
    "gamma": lambda rate, n, seed, cv, queries: gamma(_need_rate("gamma", rate), cv, n, seed),
    "recorded": _recorded,
}


def make_arrivals(kind_or_path: Source, rate: float | None, n: int, seed: int = 0,
                  cv: float = 1.0, *, queries: Sequence[QuerySpec] | None = None) -> list[float]:
    """``n`` arrival times from a process name (``poisson``, ``gamma`` with ``cv``, ``recorded``:
    the queries' own ``arrival_s``) or from a CSV trace path / builtin name (its gaps, scaled to
    ``rate`` if given). Rates are queries/s."""
    process = ARRIVAL_PROCESSES.get(str(kind_or_path))
    if process is not None:
        return process(rate, n, seed, cv, queries)
    return from_csv(kind_or_path, n, rate)
