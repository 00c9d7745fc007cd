"""Cross-validation of the calibrated GPU model: fit on half the prompt lengths, score the rest.

An in-sample MAPE says how well the factors fit the rows they were fitted on; what matters is
how they do on other measurements of the same GPUs. Each *split* divides every GPU's rows of
every file in two by prompt length (per GPU, rows ordered by prompt length):

- ``short->long``: fit on the shorter half, score the longer half (extrapolation up);
- ``long->short``: the reverse (extrapolation down);
- ``even->odd`` / ``odd->even``: alternate rows of that order (interpolation: other runs of
  similar prompts).

Each split refits every GPU (:func:`fleetcall.gpumodel.calibrate.fit`, all files at once, from
:data:`NEUTRAL_START`) on its training rows and scores the held-out rows with
:func:`~fleetcall.gpumodel.calibrate.check` (MAPE, floor, outliers) into a
:class:`~fleetcall.gpumodel.calibrate.HeldOut`.
``fleetcall calibrate --cross-validate [PATH ...]`` prints them.

Example (a small fit, for speed)::

    >>> from fleetcall.gpumodel.calibrate import load_profile, shipped_profiles
    >>> profiles = [(load_profile(p), None) for p in shipped_profiles()]
    >>> [h.split for h in cross_validate(profiles, splits=("even->odd",), max_evals=30)]
    ['even->odd']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from fleetcall.errors import ConfigError
from fleetcall.gpumodel.calibrate import (
    FLOOR_PCT, Assumption, HeldOut, Profile, ProfileRow, check, default_assumption, fit,
)
from fleetcall.gpumodel.gpus import Efficiency

SPLITS = ("short->long", "long->short", "even->odd", "odd->even")
# Where every split's fit starts, for every GPU: round figures, not the shipped factors (those
# were fitted on the rows a split holds out, and a factor the training half does not identify,
# such as the chunk overhead of short prompts, would keep its shipped value).
NEUTRAL_START = Efficiency(bandwidth=0.7, kv_bandwidth=0.7, compute=0.2,
                           iteration_overhead_s=0.002, request_overhead_s=0.02,
                           chunk_overhead_s=0.01)


def split_rows(rows: Sequence[ProfileRow], split: str) -> tuple[list[ProfileRow],
                                                                 list[ProfileRow]]:
    """(training, held-out) rows of one GPU for a split (see the module docstring).

    The halves are by rank of prompt length (ties kept in file order); with an odd count the
    held-out half of ``short->long`` gets the middle row. Raises ConfigError on an unknown split.
    """
    ordered = sorted(rows, key=lambda r: r.input_tokens)  # stable: ties stay in file order
    half = len(ordered) // 2
    if split == "short->long":
        return ordered[:half], ordered[half:]
    if split == "long->short":
        return ordered[half:], ordered[:half]
    if split in ("even->odd", "odd->even"):
        even, odd = ordered[0::2], ordered[1::2]
        return (even, odd) if split == "even->odd" else (odd, even)
    raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def _halves(profile: Profile, split: str) -> tuple[Profile, Profile]:
    train: list[ProfileRow] = []
    test: list[ProfileRow] = []
    by_gpu: dict[str, list[ProfileRow]] = {}
    for row in profile.rows:
        by_gpu.setdefault(row.gpu, []).append(row)
    for gpu, rows in by_gpu.items():
        if len(rows) < 2:  # else its held-out row would be scored with the shipped factors
            raise ConfigError(f"{profile.path}: too few rows of {gpu} to split ({len(rows)}); "
                              f"cross-validation needs at least 2 per GPU")
        a, b = split_rows(rows, split)
        train.extend(a)
        test.extend(b)
    return (dataclasses.replace(profile, rows=tuple(train)),
            dataclasses.replace(profile, rows=tuple(test)))


def cross_validate(profiles: Sequence[tuple[Profile, Assumption | None]], *,
                   splits: Sequence[str] = SPLITS, max_evals: int = 1500,
                   floor_pct: float = FLOOR_PCT) -> list[HeldOut]:
    """Held-out scores of the fit, one :class:`HeldOut` per split (each refits every GPU).

    profiles: (profile, assumption or None for the format's default), as for ``fit``.
    Raises ConfigError if a GPU of a file has fewer than 2 rows, or on an unknown split.
    Costs one fit per split (about 10 s of CPU each on the shipped files at 1500 evaluations).
    """
    results = []
    for split in splits:
        pairs = [(p, a or default_assumption(p)) for p, a in profiles]
        halves = [(_halves(p, split), a) for p, a in pairs]
        fitted = fit([(train, a) for (train, _), a in halves], max_evals=max_evals,
                     start=NEUTRAL_START)
        files = [check(test, a, efficiencies=fitted, floor_pct=floor_pct)
                 for (_, test), a in halves]
        results.append(HeldOut(split=split, files=files,
                               fitted={g: dataclasses.asdict(e) for g, e in fitted.items()}))
    return results
