"""Calibrate the GPU efficiency factors against measured vLLM latencies, and check them.

``fleetcall calibrate`` re-fits the factors on the shipped profiles (``fleetcall/data/profiles``,
from HEXGEN-TEXT2SQL) and prints them with their fit; ``fleetcall calibrate --check PATH.csv``
evaluates the *shipped* factors (:data:`fleetcall.gpumodel.gpus.CALIBRATED`) on any CSV in one of
the two formats, without refitting, and prints the mean absolute percentage error (MAPE) per GPU.
The exit code is 1 if a GPU's latency MAPE reaches the 15% floor.

Formats, told apart by their columns:

- ``single_request``: ``input_tokens, output_tokens, gpu, latency_s`` (end to end);
- ``breakdown``: ``input_tokens, output_tokens, gpu, total_s, ttft_s, tpot_s`` with
  ``tpot_s = (total_s - ttft_s) / output_tokens`` (checked on the data to 1e-6).

What the two shipped files measured (the model assumption of each format, overridable with
``--model``, ``--tp`` and ``--prefix-cache``):

- ``single_request`` = Llama-3.1-70B, bf16, tensor parallel over 4 GPUs (TP4), prompt served
  from the prefix cache. Regressing latency on output tokens gives a decode step of 38.4 / 58.9
  / 54.4 ms (A100 / A6000 / L40S). 70B bf16 is 141 GB of weights: it fits none of these GPUs
  alone and needs TP4 on the 48 GB cards, where one GPU then streams 35 GB a step, 77-78% of
  the A6000's and L40S's bandwidth. The step grows by 0.1-0.2 us per context token, about the
  70B KV cache (320 KB/token) split over 4 GPUs. The HEXGEN simulator, too, runs
  Llama-3.1-70B-Instruct on 4-GPU engines. The prompt costs only 5-10 us per token, whereas
  computing a 70B prefill takes >= 0.11 ms per token even at the peak of 4 A100s: the synthetic
  prompts hit vLLM's automatic prefix cache, so every prompt token but the last is taken as
  cached (equivalently, the clock started near the first token).
- ``breakdown`` = Llama-3.1-8B, bf16, TP4, no prefix-cache hits. Its decode step is 8.8 / 6.6
  / 8.0 ms: a 70B would need 5 TB/s per A6000 even at TP4, and any model of 3B or more on one
  A6000 needs more than 6.6 ms for its weights alone. 8B on TP4 fits with the same per-GPU
  factors as the 70B file (weight bandwidth efficiency 0.51 / 0.78 / 0.78, a few ms of fixed
  overhead per step), i.e. the same 4-GPU engines serving a smaller model. (Llama-3.2-1B on
  one GPU fits about as well; the data cannot tell them apart. TP2 for the A100 is ruled out:
  the two files would then need 100% bandwidth and a negative overhead.) TTFT grows linearly
  with the prompt and steps up once the prompt passes 2048 tokens, on every GPU (about 12 ms on
  A100, 25 ms on A6000, 0.5 s on L40S): vLLM's chunked prefill in 2048-token chunks, a chunk
  continuing a prompt costing extra. The model carries this as the per-GPU
  ``chunk_overhead_s``; the prefix-cached prompts of the other file never continue a chunk.

A file whose devices are all CPUs (``CPU-1T``, ``CPU-2T``: a llama.cpp server on 1 or 2 threads,
written by ``fleetcall bench llamacpp profile``) is taken to measure SmolLM2-135M on one process
with every prompt computed (:data:`CPU_ASSUMPTION`); its rows sent with others in flight
(``concurrency`` > 1) are left out, the model being of a request alone.

The fit (:func:`fit`) is per GPU, on all files at once: Nelder-Mead on the mean absolute log
error of every measured series (latency; TTFT and TPOT where measured), each file with its own
model assumption and the same factors. It uses only the standard library.

How much of the error is the measurements' own: :mod:`fleetcall.gpumodel.noise` (each GPU's
repeatability floor, and each column's outliers with the share of the MAPE they carry; on the
A6000 these are stalls of 0.1-0.6 s at about 0.15 per second of prefill or decode alike). How
well a fit carries over to other prompt lengths: :mod:`fleetcall.gpumodel.crossval`
(``--cross-validate``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, computed_field

from fleetcall.errors import ConfigError
from fleetcall.gpumodel.gpus import CALIBRATED, Efficiency, GPUSpec, get_gpu
from fleetcall.gpumodel.models import get_model
from fleetcall.gpumodel.noise import (  # re-exported: the floor was first defined here
    OUTLIER_FACTOR, REPEAT_MIN_GROUP, REPEAT_TOKENS, OutlierStats, monotone_held_out_pct,
    monotone_mape_pct, outlier_stats, repeat_floor_pct,
)
from fleetcall.gpumodel.perf import single_request_latency

SINGLE, BREAKDOWN = "single_request", "breakdown"
FLOOR_PCT = 15.0  # a GPU passes a file when its latency MAPE is below this
_COLUMNS: dict[str, tuple[str, ...]] = {  # format -> columns it must have
    SINGLE: ("input_tokens", "output_tokens", "gpu", "latency_s"),
    BREAKDOWN: ("input_tokens", "output_tokens", "gpu", "total_s", "ttft_s", "tpot_s"),
}


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """One measured request."""

    input_tokens: int
    output_tokens: int
    gpu: str                # as written in the CSV
    total_s: float          # end-to-end latency
    ttft_s: float | None    # time to first token (breakdown format only)
    tpot_s: float | None    # (total - ttft) / output tokens (breakdown format only)


@dataclass(frozen=True, slots=True)
class Profile:
    path: str
    format: str                    # SINGLE or BREAKDOWN
    rows: tuple[ProfileRow, ...]
    concurrent_rows: int = 0       # rows measured with others in flight, left out (see load)


@dataclass(frozen=True, slots=True)
class Assumption:
    """What a profile measured: the model, its deployment, and the prefix cache."""

    model: str
    tp: int
    prefix_cached: bool            # True iff all prompt tokens but the last hit the prefix cache
    max_prefill_chunk: int = 2048  # vLLM chunked-prefill chunk (the TTFT jump at 2048 tokens)

    def describe(self) -> str:
        cache = "prompt from prefix cache" if self.prefix_cached else "prompt computed"
        return f"{self.model}, tp={self.tp}, {cache}, prefill chunk {self.max_prefill_chunk}"


DEFAULT_ASSUMPTIONS: dict[str, Assumption] = {  # format -> what the shipped file of it measured
    SINGLE: Assumption("llama-3.1-70b", tp=4, prefix_cached=True),
    BREAKDOWN: Assumption("llama-3.1-8b", tp=4, prefix_cached=False),
}


# A profile of CPU devices only (``fleetcall bench llamacpp profile``): the local llama.cpp
# server, SmolLM2-135M on one process, every prompt computed (the benchmark turns the prompt
# cache off), prompts in batches of llama.cpp's n_batch (2048).
CPU_ASSUMPTION = Assumption("smollm2-135m", tp=1, prefix_cached=False)


def default_assumption(profile: Profile) -> Assumption:
    """What a file measured unless told: :data:`CPU_ASSUMPTION` if every device in it is a CPU
    (arch ``cpu``), else the shipped file of its format's (:data:`DEFAULT_ASSUMPTIONS`)."""
    if all(get_gpu(row.gpu).arch == "cpu" for row in profile.rows):
        return CPU_ASSUMPTION
    return DEFAULT_ASSUMPTIONS[profile.format]


def shipped_profiles() -> list[Path]:
    """The profile CSVs shipped in ``fleetcall/data/profiles``."""
    root = resources.files("fleetcall") / "data" / "profiles"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".csv"))


def detect_format(columns: Sequence[str]) -> str:
    """SINGLE or BREAKDOWN from a CSV header; :class:`ConfigError` naming both otherwise."""
    have = {c.strip() for c in columns}
    for fmt in (BREAKDOWN, SINGLE):
        if set(_COLUMNS[fmt]) <= have:
            return fmt
    expected = " | ".join(", ".join(cols) for cols in _COLUMNS.values())
    raise ConfigError(f"unrecognised profile columns {sorted(have)}; expected either: {expected}")


def load_profile(path: str | Path) -> Profile:
    """Read a profile CSV of either format.

    An optional ``concurrency`` column (``fleetcall bench llamacpp profile`` writes one) marks
    requests sent several at once: the model here is of a request alone, so only rows with
    concurrency 1 are kept (the others are counted in ``concurrent_rows``)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fmt = detect_format(reader.fieldnames or [])
        rows: list[ProfileRow] = []
        concurrent = 0
        try:
            for rec in reader:
                clean = {k.strip(): v for k, v in rec.items() if k}
                if int(clean.get("concurrency") or 1) != 1:
                    concurrent += 1
                    continue
                rows.append(_row(fmt, clean))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: bad value on line {reader.line_num}: {exc}") from exc
    if not rows:
        raise ConfigError(f"{path}: no rows" + (" with concurrency 1" if concurrent else ""))
    return Profile(str(path), fmt, tuple(rows), concurrent)


def _row(fmt: str, rec: dict[str, str]) -> ProfileRow:
    inp, out = int(rec["input_tokens"]), int(rec["output_tokens"])
    if inp < 1 or out < 1:
        raise ValueError("input_tokens and output_tokens must be >= 1")
    if fmt == SINGLE:
        return ProfileRow(inp, out, rec["gpu"].strip(), float(rec["latency_s"]), None, None)
    return ProfileRow(inp, out, rec["gpu"].strip(), float(rec["total_s"]), float(rec["ttft_s"]),
                      float(rec["tpot_s"]))


def predict(row: ProfileRow, gpu: GPUSpec, a: Assumption) -> tuple[float, float, float]:
    """Predicted (total, ttft, tpot) of a row, tpot defined as in the breakdown format."""
    lat = single_request_latency(
        gpu, a.model, row.input_tokens, row.output_tokens, tp=a.tp,
        cached_tokens=row.input_tokens if a.prefix_cached else 0,
        max_prefill_chunk=a.max_prefill_chunk)
    return lat.total_s, lat.ttft_s, (lat.total_s - lat.ttft_s) / row.output_tokens


class GPUFit(BaseModel):
    """How well the model fits one GPU of one file (MAPE in percent)."""

    csv_gpu: str                  # the name used in the CSV
    gpu: str                      # the catalog GPU it maps to
    n: int                        # rows
    latency_mape_pct: float
    ttft_mape_pct: float | None = None
    tpot_mape_pct: float | None = None
    # Repeatability floor (see :func:`repeat_floor_pct`): no model of the prompt length can do
    # better on these rows; None when the file has no repeated prompt lengths for the GPU.
    ttft_floor_pct: float | None = None
    tpot_floor_pct: float | None = None
    # TTFT of the best non-decreasing function of prompt length (noise.monotone_*): in sample,
    # and fitted on alternate rows, scored on the others; None without a TTFT column
    ttft_monotone_pct: float | None = None
    ttft_monotone_held_out_pct: float | None = None
    # column ("latency", "ttft", "tpot") -> its outliers (see noise.outlier_stats)
    outliers: dict[str, OutlierStats] = {}


class FileReport(BaseModel):
    path: str
    format: str
    assumption: str                # Assumption.describe()
    gpus: list[GPUFit]
    floor_pct: float = FLOOR_PCT

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented usage
    @property
    def passed(self) -> bool:
        """True iff every GPU's latency MAPE is below the floor."""
        return all(g.latency_mape_pct < self.floor_pct for g in self.gpus)


class HeldOut(BaseModel):
    """Scores of one split: factors fitted on its training rows, MAPE on its held-out rows."""

    split: str                 # one of crossval.SPLITS
    fitted: dict[str, dict[str, float]]  # catalog GPU -> the Efficiency fields fitted
    files: list[FileReport]    # one per input file, on its held-out rows only


class CalibrationReport(BaseModel):
    """What ``fleetcall calibrate`` prints, as data (``--json``)."""

    mode: str                                # "check" (shipped factors), "fit" or "cross-validate"
    floor_pct: float = FLOOR_PCT
    files: list[FileReport]
    fitted: dict[str, dict[str, float]] = {}  # catalog GPU -> Efficiency fields (fit mode)
    held_out: list[HeldOut] = []             # one per split (cross-validate mode)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented usage
    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.files)


def _by_gpu(profile: Profile) -> dict[str, list[ProfileRow]]:
    """Rows grouped by the CSV's GPU name, in first-seen order; unknown names raise."""
    groups: dict[str, list[ProfileRow]] = {}
    for row in profile.rows:
        groups.setdefault(row.gpu, []).append(row)
    for name in groups:
        get_gpu(name)  # UnknownGPUError lists the catalog
    return groups


def _errors_pct(pairs: Sequence[tuple[float, float]]) -> list[float]:
    """Absolute percentage errors of (predicted, measured) pairs."""
    return [100.0 * abs(p - m) / m for p, m in pairs]


def check(profile: Profile, assumption: Assumption | None = None, *,
          efficiencies: Mapping[str, Efficiency] | None = None,
          floor_pct: float = FLOOR_PCT) -> FileReport:
    """MAPE per GPU of the catalog's factors (or ``efficiencies``, by catalog name) on a file,
    with each column's outliers (:func:`~fleetcall.gpumodel.noise.outlier_stats`)."""
    a = assumption or default_assumption(profile)
    fits = []
    for name, rows in _by_gpu(profile).items():
        gpu = _with_efficiency(get_gpu(name), efficiencies)
        preds = [predict(row, gpu, a) for row in rows]
        columns = ("latency", "ttft", "tpot") if profile.format == BREAKDOWN else ("latency",)
        errors = {col: _errors_pct([(p[m], _measured(r, m)) for p, r in zip(preds, rows)])
                  for m, col in enumerate(columns)}
        points = {col: [(r.input_tokens, _measured(r, m)) for r in rows]
                  for m, col in enumerate(columns) if col != "latency"}  # floors: per column
        mape = {col: sum(e) / len(e) for col, e in errors.items()}
        fit = GPUFit(csv_gpu=name, gpu=gpu.name, n=len(rows), latency_mape_pct=mape["latency"],
                     ttft_mape_pct=mape.get("ttft"), tpot_mape_pct=mape.get("tpot"),
                     outliers={col: outlier_stats(e, points=points.get(col))
                               for col, e in errors.items()})
        if profile.format == BREAKDOWN:
            ttfts = [(r.input_tokens, r.ttft_s or 0.0) for r in rows]
            fit.ttft_floor_pct = repeat_floor_pct(ttfts)
            fit.ttft_monotone_pct = monotone_mape_pct(ttfts)
            fit.ttft_monotone_held_out_pct = monotone_held_out_pct(ttfts)
            fit.tpot_floor_pct = repeat_floor_pct([(r.input_tokens, r.tpot_s or 0.0) for r in rows])
        fits.append(fit)
    return FileReport(path=profile.path, format=profile.format, assumption=a.describe(),
                      gpus=fits, floor_pct=floor_pct)


def _with_efficiency(gpu: GPUSpec, effs: Mapping[str, Efficiency] | None) -> GPUSpec:
    if effs is None or gpu.name not in effs:
        return gpu
    return dataclasses.replace(gpu, efficiency=effs[gpu.name], calibrated=True)


# ---- fitting ---------------------------------------------------------------------------------

_Series = tuple[Assumption, list[ProfileRow], int]  # rows of one file and the metric index
# Weak prior: KV reads stream memory like weight reads, so kv_bandwidth stays near bandwidth
# where the data hardly constrain it (a lone request attends to little KV).
_PRIOR_WEIGHT = 0.005


def fit(profiles: Sequence[tuple[Profile, Assumption | None]], *,
        max_evals: int = 1500,
        start: Efficiency | None = None) -> dict[str, Efficiency]:
    """Fit the efficiency factors of every GPU in ``profiles`` (catalog name -> factors).

    Each GPU is fitted on all its series at once (every file's latency, plus TTFT and TPOT of
    breakdown files), each file under its own assumption, starting from the shipped factors
    (or from ``start`` for every GPU: cross-validation starts away from factors fitted on the
    rows it holds out). A factor the data do not identify (``chunk_overhead_s`` when no prompt
    continues a chunk) stays at its starting value.
    """
    series: dict[str, list[_Series]] = {}
    for profile, assumption in profiles:
        a = assumption or default_assumption(profile)
        metrics = (0, 1, 2) if profile.format == BREAKDOWN else (0,)
        for name, rows in _by_gpu(profile).items():
            gpu = get_gpu(name).name
            series.setdefault(gpu, []).extend((a, rows, m) for m in metrics)
    return {gpu: _fit_gpu(get_gpu(gpu), s, max_evals, start) for gpu, s in series.items()}


def _measured(row: ProfileRow, metric: int) -> float:
    value = (row.total_s, row.ttft_s, row.tpot_s)[metric]
    assert value is not None  # metrics 1 and 2 are only used for breakdown rows
    return value


def _loss(gpu: GPUSpec, series: Sequence[_Series]) -> float:
    """Sum over series of the mean absolute log error (robust; close to MAPE when small)."""
    total = 0.0
    for a, rows, metric in series:
        err = 0.0
        for row in rows:
            pred = predict(row, gpu, a)[metric]
            err += abs(math.log(max(pred, 1e-12) / _measured(row, metric)))
        total += err / len(rows)
    return total


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _encode(e: Efficiency) -> list[float]:
    fractions = (e.bandwidth, e.kv_bandwidth, e.compute)
    overheads = (e.iteration_overhead_s, e.request_overhead_s, e.chunk_overhead_s)
    return [_logit(f) for f in fractions] + [math.log(max(o, 1e-6)) for o in overheads]


def _decode(x: Sequence[float]) -> Efficiency:
    frac = [1 / (1 + math.exp(-v)) for v in x[:3]]
    over = [math.exp(min(v, 5.0)) for v in x[3:]]
    return Efficiency(*frac, *over)


def _fit_gpu(gpu: GPUSpec, series: Sequence[_Series], max_evals: int,
             start_at: Efficiency | None = None) -> Efficiency:
    def loss(x: Sequence[float]) -> float:
        eff = _decode(x)
        prior = _PRIOR_WEIGHT * abs(math.log(eff.kv_bandwidth / eff.bandwidth))
        return _loss(dataclasses.replace(gpu, efficiency=eff), series) + prior

    start = start_at or CALIBRATED.get(gpu.name, gpu.efficiency)
    best = _seed(loss, _encode(start))
    for _ in range(3):  # restarts: a fresh simplex gets Nelder-Mead out of a collapsed one
        best = _nelder_mead(loss, best, step=0.5, max_evals=max_evals // 3)
    fitted = _rounded(_decode(best))
    if not any(row.input_tokens > a.max_prefill_chunk for a, rows, _ in series for row in rows):
        # No prompt continued a chunk: the data say nothing of chunk_overhead_s, which the
        # search left wherever it drifted (up to its bound); keep the starting value.
        fitted = dataclasses.replace(fitted, chunk_overhead_s=start.chunk_overhead_s)
    return fitted


def _seed(loss: Callable[[Sequence[float]], float], start: list[float]) -> list[float]:
    """Best of ``start`` and a coarse grid over the two TTFT factors (compute efficiency and
    chunk overhead): TTFT curves with a jump have a local minimum without the jump."""
    candidates = [start] + [
        start[:2] + [_logit(compute)] + start[3:5] + [math.log(chunk)]
        for compute in (0.05, 0.1, 0.2, 0.4) for chunk in (1e-3, 0.01, 0.1, 0.5)]
    return min(candidates, key=loss)


def _rounded(e: Efficiency) -> Efficiency:
    """Factors to 3 decimals and overheads to 0.1 ms: what is worth shipping."""
    return Efficiency(round(e.bandwidth, 3) or 0.001, round(e.kv_bandwidth, 3) or 0.001,
                      round(e.compute, 3) or 0.001, round(e.iteration_overhead_s, 4),
                      round(e.request_overhead_s, 4), round(e.chunk_overhead_s, 4))



def _along(a: list[float], b: list[float], t: float) -> list[float]:
    """The point ``a + t * (b - a)`` (Nelder-Mead's reflections, expansions and contractions)."""
    return [x + t * (y - x) for x, y in zip(a, b)]

def _nelder_mead(f: Callable[[Sequence[float]], float], x0: Sequence[float], *, step: float,
                 max_evals: int, tol: float = 1e-7) -> list[float]:
    """Minimise ``f`` from ``x0`` with the Nelder-Mead simplex (standard coefficients)."""
    n = len(x0)
    simplex = [list(x0)] + [[v + (step if i == j else 0.0) for j, v in enumerate(x0)]
                            for i in range(n)]
    values = [f(x) for x in simplex]
    evals = n + 1
    while evals < max_evals:
        order = sorted(range(n + 1), key=values.__getitem__)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        if values[-1] - values[0] < tol:
            break
        centroid = [sum(x[j] for x in simplex[:-1]) / n for j in range(n)]
        worst = simplex[-1]

        xr = _along(centroid, worst, -1.0)
        fr = f(xr)
        evals += 1
        if fr < values[0]:
            xe = _along(centroid, worst, -2.0)
            fe = f(xe)
            evals += 1
            simplex[-1], values[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = xr, fr
        else:
            xc = _along(centroid, worst, -0.5 if fr < values[-1] else 0.5)
            fc = f(xc)
            evals += 1
            if fc < min(fr, values[-1]):
                simplex[-1], values[-1] = xc, fc
            else:  # shrink toward the best point
                best = simplex[0]
                simplex = [best] + [[b + 0.5 * (v - b) for b, v in zip(best, x)]
                                    for x in simplex[1:]]
                values = [values[0]] + [f(x) for x in simplex[1:]]
                evals += n
    return simplex[min(range(n + 1), key=values.__getitem__)]


# ---- command line ----------------------------------------------------------------------------


def format_report(report: CalibrationReport) -> str:
    """The report as text tables, one per file."""
    lines: list[str] = []
    if report.fitted:
        lines.append("Fitted efficiency factors (paste into gpus.CALIBRATED, CPU devices into "
                     "gpus.CALIBRATED_CPU):")
        for gpu, eff in report.fitted.items():
            args = ", ".join(f"{k}={v:g}" for k, v in eff.items())
            lines.append(f'    "{gpu}": Efficiency({args}),')
        lines.append("")
    lines.extend(_held_out_lines(report.held_out) if report.held_out else [])
    for f in report.files:
        verdict = "PASS" if f.passed else "FAIL"
        lines.append(f"{f.path}  [{f.format}: {f.assumption}]  {verdict} "
                     f"(latency MAPE < {report.floor_pct:g}% per GPU)")
        lines.append(f"  {'GPU':<8} {'catalog':<10} {'n':>5} {'latency':>9} {'TTFT':>9} "
                     f"{'TPOT':>9} {'TTFT floor':>11} {'TPOT floor':>11}")
        for g in f.gpus:
            cells = [_pct(v) for v in (g.latency_mape_pct, g.ttft_mape_pct, g.tpot_mape_pct,
                                       g.ttft_floor_pct, g.tpot_floor_pct)]
            lines.append(f"  {g.csv_gpu:<8} {g.gpu:<10} {g.n:>5} {cells[0]:>9} {cells[1]:>9} "
                         f"{cells[2]:>9} {cells[3]:>11} {cells[4]:>11}")
        lines.extend(_outlier_lines(f))
        monotone = [f"{g.csv_gpu} {_pct(g.ttft_monotone_pct)} / "
                    f"{_pct(g.ttft_monotone_held_out_pct)}"
                    for g in f.gpus if g.ttft_monotone_pct is not None]
        if monotone:
            lines.append("  TTFT of the best non-decreasing function of prompt length (in sample "
                         "/ held out): " + ", ".join(monotone))
        lines.append("")
    lines.append("MAPE: mean absolute percentage error of the model against the measurements.")
    lines.append(f"floor: MAPE of the best constant per group of repeated prompt lengths (within "
                 f"{REPEAT_TOKENS} tokens, >= {REPEAT_MIN_GROUP} rows), i.e. the measurements' "
                 f"own noise; no model of prompt length goes below it.")
    lines.append("best non-decreasing function: the lowest MAPE any model in which a longer "
                 "prompt never prefills faster reaches on these rows (isotonic regression), and "
                 "that fit's MAPE on alternate rows when fitted on the others.")
    lines.append(f"outliers: requests off by more than {OUTLIER_FACTOR:g}x the column's median "
                 f"error: how many, the share of the MAPE they carry, the MAPE and the floor "
                 f"without them.")
    return "\n".join(lines)


def _outlier_lines(f: FileReport) -> list[str]:
    """One line per GPU: each column's outliers as ``n, share of the MAPE, MAPE without them,
    floor without them``."""
    cols = list(f.gpus[0].outliers) if f.gpus else []
    lines = [f"  {'outliers (n share w/o floor)':<29}" + "".join(f"{c.upper():>23}" for c in cols)]
    for g in f.gpus:
        cells = [f"{o.n:>3} {o.share_pct:>3.0f}% {o.mape_without_pct:>4.1f}% "
                 f"{_pct(o.floor_without_pct):>5}" for o in (g.outliers[c] for c in cols)]
        lines.append(f"  {g.csv_gpu:<8} {g.gpu:<20}" + "".join(f"{c:>23}" for c in cells))
    return lines


def _held_out_lines(results: Sequence[HeldOut]) -> list[str]:
    """Per split and file, each GPU's held-out MAPE of every column."""
    lines = ["Held-out MAPE (factors fitted on the other half of each GPU's prompt lengths; "
             "TTFT w/o = without its outliers):"]
    for h in results:
        for f in h.files:
            lines.append(f"  {h.split:<12} {Path(f.path).name}")
            for g in f.gpus:
                cols = [("latency", g.latency_mape_pct), ("TTFT", g.ttft_mape_pct),
                        ("TPOT", g.tpot_mape_pct)]
                cells = "  ".join(f"{name} {v:4.1f}%" for name, v in cols if v is not None)
                ttft = g.outliers.get("ttft")
                extra = f"  TTFT w/o {ttft.n:>2}: {ttft.mape_without_pct:.1f}%" if ttft else ""
                lines.append(f"    {g.csv_gpu:<8} n={g.n:<4} {cells}{extra}")
    lines.append("")
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fleetcall calibrate",
        description="Fit the GPU efficiency factors on latency profiles, or check the shipped "
                    "ones (--check). Exit code 1 if a GPU's latency MAPE reaches the floor.")
    p.add_argument("paths", nargs="*", type=Path,
                   help="profile CSVs to fit on (default: the shipped HEXGEN profiles)")
    p.add_argument("--check", action="append", type=Path, metavar="PATH.csv", default=[],
                   help="evaluate the shipped factors on this CSV without refitting (repeatable)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON")
    p.add_argument("--model", help="model the CSV measured (default: llama-3.1-70b for the "
                                   "single-request format, llama-3.1-8b for the breakdown format)")
    p.add_argument("--tp", type=int, help="tensor-parallel degree of the measured deployment "
                                          "(default 4)")
    p.add_argument("--prefix-cache", action=argparse.BooleanOptionalAction, default=None,
                   help="prompts were served from the prefix cache (default: yes for the "
                        "single-request format, no for the breakdown format)")
    p.add_argument("--floor", type=float, default=FLOOR_PCT, help="pass/fail MAPE floor, percent")
    p.add_argument("--cross-validate", action="store_true",
                   help="refit on half of each GPU's prompt lengths and score the other half "
                        "(4 splits, one fit each), next to the shipped factors on every row")
    return p


def _assumption(profile: Profile, args: argparse.Namespace) -> Assumption:
    base = default_assumption(profile)
    model = get_model(args.model).name if args.model else base.model
    return dataclasses.replace(
        base, model=model, tp=args.tp or base.tp,
        prefix_cached=base.prefix_cached if args.prefix_cache is None else args.prefix_cache)


def run(args: argparse.Namespace) -> CalibrationReport:
    """Carry out a parsed ``calibrate`` command and return its report."""
    if args.check and args.cross_validate:
        raise ConfigError("--cross-validate refits the factors; --check keeps the shipped ones: "
                          "give the CSVs to cross-validate as paths, without --check")
    if args.check:
        profiles = [load_profile(p) for p in args.check]
        files = [check(p, _assumption(p, args), floor_pct=args.floor) for p in profiles]
        return CalibrationReport(mode="check", floor_pct=args.floor, files=files)
    profiles = [load_profile(p) for p in (args.paths or shipped_profiles())]
    pairs = [(p, _assumption(p, args)) for p in profiles]
    if args.cross_validate:
        from fleetcall.gpumodel.crossval import cross_validate  # it builds on this module
        files = [check(p, a, floor_pct=args.floor) for p, a in pairs]
        return CalibrationReport(mode="cross-validate", floor_pct=args.floor, files=files,
                                 held_out=cross_validate(pairs, floor_pct=args.floor))
    fitted = fit(pairs)
    files = [check(p, a, efficiencies=fitted, floor_pct=args.floor) for p, a in pairs]
    return CalibrationReport(mode="fit", floor_pct=args.floor, files=files,
                             fitted={g: dataclasses.asdict(e) for g, e in fitted.items()})


def main(argv: list[str]) -> int:
    """``fleetcall calibrate [PATH ...] [--check PATH.csv] [--cross-validate] [--json OUT]
    [--model M] [--tp N]``.

    Example: ``fleetcall calibrate --check fleetcall/data/profiles/latency_breakdown.csv``.
    """
    args = _parser().parse_args(argv)
    try:
        report = run(args)
    except (ConfigError, OSError) as exc:
        print(f"fleetcall calibrate: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        args.json.write_text(report.model_dump_json(indent=2) + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
