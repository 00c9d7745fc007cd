"""Catalog of GPUs: spec-sheet figures plus efficiency factors calibrated on measurements.

A :class:`GPUSpec` carries what a data sheet says (memory, memory bandwidth, dense bf16 tensor
throughput) and an :class:`Efficiency`: how much of that a real serving engine gets. The
roofline in :mod:`fleetcall.gpumodel.perf` divides bytes by ``mem_bw * efficiency.bandwidth`` and
FLOPs by ``bf16_tflops * efficiency.compute``, then adds the fixed overheads.

Where the efficiencies come from: A100, A6000 and L40S are fitted by ``fleetcall calibrate`` on
the HEXGEN-TEXT2SQL vLLM profiles shipped in ``fleetcall/data/profiles`` (see
:mod:`fleetcall.gpumodel.calibrate` for the model assumptions and the fit). Those measurements
ran tensor-parallel over 4 GPUs (TP4), so the overheads include TP4 synchronization and the
compute efficiencies (0.22 / 0.08 / 0.19 of peak, from prefill) include its all-reduces; the factors
are *per GPU type* and the model shape supplies bytes and FLOPs, so they carry over to other
models. Every other GPU borrows the factors of the calibrated GPUs of its chip family (A100-40G
from A100-80G, A10G from A6000, L4 and RTX 4090 from L40S), or of all calibrated GPUs if none of
its family was measured (Hopper), and
the median fixed overheads (see :func:`default_efficiency`).

Lookup is case-insensitive and ignores punctuation and a leading ``nvidia``; "A100" means the
A100 80GB the HEXGEN cluster used::

    >>> get_gpu("nvidia_a100").name
    'A100-80G'

Users add GPUs with :func:`register_gpu` (a :class:`GPUSpec` or a :class:`GPUConfig`).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from fleetcall.errors import ConfigError, UnknownNameError
from fleetcall.gpumodel.catalog import Catalog


@dataclass(frozen=True, slots=True)
class Efficiency:
    """How far below its data sheet a GPU runs under a serving engine (fractions in (0, 1])."""

    bandwidth: float             # fraction of mem_bw reached streaming weights
    kv_bandwidth: float          # fraction of mem_bw reached reading the KV cache in attention
    compute: float               # fraction of bf16_tflops reached by the matmuls of prefill
    iteration_overhead_s: float  # fixed cost of one engine iteration (launches, sync), seconds
    request_overhead_s: float    # fixed cost once per request (HTTP, tokenizing), seconds
    chunk_overhead_s: float = 0.0  # extra cost of a prefill chunk continuing a prompt, seconds

    def __post_init__(self) -> None:
        for name in ("bandwidth", "kv_bandwidth", "compute"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"efficiency {name} must be in (0, 1], got {getattr(self, name)}")
        if min(self.iteration_overhead_s, self.request_overhead_s, self.chunk_overhead_s) < 0:
            raise ConfigError("efficiency overheads must be >= 0 seconds")


# Fitted by `fleetcall calibrate` on fleetcall/data/profiles (both files at once; see
# calibrate.py for the model each file measured: Llama-3.1-70B and -8B, both on TP4 engines).
CALIBRATED: dict[str, Efficiency] = {
    "A100-80G": Efficiency(bandwidth=0.506, kv_bandwidth=0.506, compute=0.219,
                           iteration_overhead_s=0.0053, request_overhead_s=0.013,
                           chunk_overhead_s=0.012),
    "A6000": Efficiency(bandwidth=0.776, kv_bandwidth=0.554, compute=0.083,
                        iteration_overhead_s=0.0002, request_overhead_s=0.0333,
                        chunk_overhead_s=0.025),
    "L40S": Efficiency(bandwidth=0.778, kv_bandwidth=0.426, compute=0.193,
                       iteration_overhead_s=0.0024, request_overhead_s=0.021,
                       chunk_overhead_s=0.5062),
}


# CPU devices: a llama.cpp server (`fleetcall local-pool`, SmolLM2-135M) on 1 or 2 threads of
# this kind of machine, fitted by `fleetcall calibrate` on a `fleetcall bench llamacpp profile`
# CSV (single requests, concurrency 1). Kept apart from CALIBRATED: GPUs without measurements
# of their own borrow from CALIBRATED, never from a CPU.
CALIBRATED_CPU: dict[str, Efficiency] = {
    # Fitted (`fleetcall calibrate`) on the concurrency-1 rows of a `bench llamacpp profile` run
    # (2 reps, prompts 16/128/384 x outputs 4/32/64, 220 requests in all) on the 2-core VM at load
    # average 0.5-2.0 (nothing else running), 2026-11-30: latency MAPE 6.4% (1 thread) and 6.5%
    # (2 threads), TTFT 7.0% / 8.6% against repeat floors of 6.5% / 8.5%.
    # chunk_overhead_s is 0: no measured prompt reached llama.cpp's 2048-token batch.
    "CPU-1T": Efficiency(bandwidth=0.859, kv_bandwidth=0.859, compute=0.49,
                         iteration_overhead_s=0.0093, request_overhead_s=0.0131),
    "CPU-2T": Efficiency(bandwidth=1.0, kv_bandwidth=1.0, compute=0.425,
                         iteration_overhead_s=0.0074, request_overhead_s=0.0039),
}


@dataclass(frozen=True, slots=True)
class GPUSpec:
    """One GPU type: data-sheet figures and the efficiency factors the roofline applies."""

    name: str
    arch: str                   # chip family ("ga100", "ga102", "ada", "hopper"), for defaults
    memory_gb: float            # device memory, GiB (what nvidia-smi reports, about)
    mem_bw_gbs: float           # peak memory bandwidth, GB/s (1e9 bytes)
    bf16_tflops: float          # dense bf16 tensor throughput with fp32 accumulate, TFLOPS
    efficiency: Efficiency      # calibrated, or borrowed from the same architecture
    calibrated: bool = False    # True iff efficiency was fitted on this GPU's own measurements
    aliases: tuple[str, ...] = field(default=())  # other names that find this GPU

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 2**30

    @property
    def mem_bw(self) -> float:
        """Peak memory bandwidth, bytes/s."""
        return self.mem_bw_gbs * 1e9

    @property
    def flops(self) -> float:
        """Peak dense bf16 throughput, FLOP/s."""
        return self.bf16_tflops * 1e12


class GPUConfig(BaseModel):
    """A GPU as it appears in configuration; efficiency defaults to its architecture's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    arch: str = "unknown"
    memory_gb: float = Field(gt=0)
    mem_bw_gbs: float = Field(gt=0)
    bf16_tflops: float = Field(gt=0)
    bandwidth_efficiency: float | None = Field(default=None, gt=0, le=1)
    kv_bandwidth_efficiency: float | None = Field(default=None, gt=0, le=1)
    compute_efficiency: float | None = Field(default=None, gt=0, le=1)
    iteration_overhead_s: float | None = Field(default=None, ge=0)
    request_overhead_s: float | None = Field(default=None, ge=0)
    chunk_overhead_s: float | None = Field(default=None, ge=0)
    aliases: tuple[str, ...] = ()

    def to_spec(self) -> GPUSpec:
        base = default_efficiency(self.arch)
        eff = Efficiency(
            bandwidth=_pick(self.bandwidth_efficiency, base.bandwidth),
            kv_bandwidth=_pick(self.kv_bandwidth_efficiency, base.kv_bandwidth),
            compute=_pick(self.compute_efficiency, base.compute),
            iteration_overhead_s=_pick(self.iteration_overhead_s, base.iteration_overhead_s),
            request_overhead_s=_pick(self.request_overhead_s, base.request_overhead_s),
            chunk_overhead_s=_pick(self.chunk_overhead_s, base.chunk_overhead_s),
        )
        return GPUSpec(self.name, self.arch, self.memory_gb, self.mem_bw_gbs, self.bf16_tflops,
                       eff, calibrated=False, aliases=self.aliases)


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


class UnknownGPUError(UnknownNameError, ConfigError):
    """A GPU name the catalog does not know; the message lists the known names."""

    kind = "GPU"


# (name, arch, memory GiB, GB/s, dense bf16 TFLOPS, aliases), from NVIDIA's spec sheets.
_SPEC_SHEET: tuple[tuple[str, str, float, float, float, tuple[str, ...]], ...] = (
    ("H200", "hopper", 141, 4800, 989.4, ("H200-SXM", "H200-141G")),
    ("H100", "hopper", 80, 3350, 989.4, ("H100-SXM", "H100-80G", "H100-SXM5")),
    ("H100-PCIe", "hopper", 80, 2000, 756.0, ()),
    # The HEXGEN cluster's "A100" is the 80 GB card (SXM4 figures).
    ("A100-80G", "ga100", 80, 2039, 312.0, ("A100", "A100-80GB", "A100-SXM4-80GB")),
    ("A100-40G", "ga100", 40, 1555, 312.0, ("A100-40GB", "A100-SXM4-40GB")),
    # RTX A6000: 154.8 dense fp16/bf16 tensor TFLOPS (309.7 with sparsity).
    ("A6000", "ga102", 48, 768, 154.8, ("RTX-A6000",)),
    # L40S: 362 dense (733 with sparsity).
    ("L40S", "ada", 48, 864, 362.0, ()),
    # A10G (AWS g5): the commonly quoted 70 dense bf16 TFLOPS (the A10 lists 125).
    ("A10G", "ga102", 24, 600, 70.0, ()),
    ("L4", "ada", 24, 300, 121.0, ()),
    # GeForce: 165.2 with fp32 accumulate (what bf16 matmuls use; 330 with fp16 accumulate).
    ("RTX-4090", "ada", 24, 1008, 165.2, ("4090", "GeForce-RTX-4090")),
    # CPU threads running llama.cpp (arch "cpu", never a default for a GPU). Nominal peaks, as
    # upper bounds for the fitted fractions: one AVX2 core does 2 FMA x 8 fp32 lanes x 2 FLOP x
    # ~3 GHz = 0.096 TFLOPS; one core streams at most about 20 GB/s from DRAM, two cores of a
    # small VM share its channels (30 GB/s). Memory is what a small VM gives a server (GiB).
    ("CPU-1T", "cpu", 4, 20, 0.096, ("llamacpp-cpu-1t",)),
    ("CPU-2T", "cpu", 4, 30, 0.192, ("llamacpp-cpu-2t",)),
)


def default_efficiency(arch: str) -> Efficiency:
    """Efficiency for a GPU without measurements of its own.

    The fractions (bandwidth, KV bandwidth, compute) are the mean over the calibrated GPUs of
    the same chip family, else over all calibrated GPUs: they are properties of the chip. The
    fixed overheads come from the host, the software and the interconnect rather than the chip,
    so they are the median over all calibrated GPUs (which keeps the L40S's large chunk
    overhead out of other Ada GPUs).
    """
    archs = {name: a for name, a, *_ in _SPEC_SHEET}
    every = list(CALIBRATED.values())
    same = [eff for name, eff in CALIBRATED.items() if archs.get(name) == arch.lower()] or every

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    return Efficiency(
        bandwidth=mean([e.bandwidth for e in same]),
        kv_bandwidth=mean([e.kv_bandwidth for e in same]),
        compute=mean([e.compute for e in same]),
        iteration_overhead_s=statistics.median(e.iteration_overhead_s for e in every),
        request_overhead_s=statistics.median(e.request_overhead_s for e in every),
        chunk_overhead_s=statistics.median(e.chunk_overhead_s for e in every),
    )


def _key(name: str) -> str:
    """Lookup key: lower case, no punctuation, no leading "nvidia" ("nvidia_A100" == "a100")."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return key.removeprefix("nvidia") or key


_CATALOG: Catalog[GPUSpec] = Catalog("GPU", _key)


def register_gpu(spec: GPUSpec | GPUConfig, *, replace: bool = False) -> GPUSpec:
    """Add a GPU to the catalog (under its name and aliases) and return it.

    Re-registering a known name is an error unless ``replace=True``.
    """
    if isinstance(spec, GPUConfig):
        spec = spec.to_spec()
    return _CATALOG.register(spec, replace=replace)


def get_gpu(name: str | GPUSpec) -> GPUSpec:
    """The GPU called ``name`` (case- and punctuation-insensitive, aliases allowed)."""
    if isinstance(name, GPUSpec):
        return name
    spec = _CATALOG.find(name)
    if spec is None:
        raise UnknownGPUError(name, known_gpus())
    return spec


def known_gpus() -> list[str]:
    """Canonical names in the catalog, sorted."""
    return _CATALOG.names()


def _builtin_spec(name: str, arch: str, mem: float, bw: float, tflops: float,
                  aliases: tuple[str, ...]) -> GPUSpec:
    eff = CALIBRATED.get(name) or CALIBRATED_CPU.get(name)
    return GPUSpec(name, arch, mem, bw, tflops, eff or default_efficiency(arch),
                   calibrated=eff is not None, aliases=aliases)


for _row in _SPEC_SHEET:
    register_gpu(_builtin_spec(*_row))
