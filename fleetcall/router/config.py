"""Configuration of an endpoint pool: pydantic models, and loading from / writing to TOML or YAML.

An endpoint is an OpenAI-compatible server (``http://127.0.0.1:8000/v1``: the root under which
``/chat/completions`` and ``/models`` live) or an in-process emulated GPU
(``emulated://A100/llama-3.1-8b?tp=4``: GPU catalog name, model catalog name, tensor parallelism).
A file looks like::

    policy = "slack"

    [retry]
    max_attempts = 3

    [[endpoints]]
    name = "a100-0"
    base_url = "http://10.0.0.5:8000/v1"
    model = "meta-llama/Llama-3.1-8B-Instruct"
    api_key_env = "VLLM_KEY"          # the name of a variable, never the key itself
    gpu = "A100"

    [[endpoints]]
    name = "sim-l40s"
    base_url = "emulated://L40S/llama-3.1-8b?tp=2"

API keys are read from the environment when a call is made (:meth:`EndpointConfig.api_key`), so
they never sit in a config object, its repr, a file written back, or a validation error
(the models hide input values in their errors for the same reason).

    >>> cfg = EndpointConfig(name="sim", base_url="emulated://A100/llama-3.1-8b?tp=4")
    >>> (cfg.gpu, cfg.model, cfg.tp, cfg.emulated.model)
    ('A100-80G', 'llama-3.1-8b', 4, 'llama-3.1-8b')
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator,
)

from fleetcall.errors import ConfigError
from fleetcall.llm.base import ModelInfo
from fleetcall.gpumodel.gpus import GPUConfig, get_gpu, known_gpus
from fleetcall.gpumodel.models import ModelConfig, get_model

__all__ = [
    "BreakerConfig", "EmulatedTarget", "EndpointConfig", "PoolConfig", "RetryConfig",
    "UNKNOWN_GPU", "load_pool_config", "parse_emulated_url", "pool_config_from_dict", "to_toml",
    "write_pool_config",
]

UNKNOWN_GPU = "unknown"  # gpu value of an endpoint whose hardware is not in the catalog
JSON_SCHEMA_TAG = "llama.cpp"  # an endpoint with this tag enforces JSON schemas unless it says otherwise
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True, hide_input_in_errors=True)


@dataclass(frozen=True, slots=True)
class EmulatedTarget:
    """What an ``emulated://GPU/model?tp=N`` URL asks for (canonical catalog names)."""

    gpu: str    # GPU catalog name, e.g. "A100-80G"
    model: str  # model catalog name, e.g. "llama-3.1-8b"
    tp: int     # tensor-parallel degree, >= 1


def parse_emulated_url(url: str) -> EmulatedTarget:
    """Parse ``emulated://<GPU>/<model>[?tp=N]``; names are checked against the catalogs.

    The model may contain slashes (``emulated://A100/meta-llama/Llama-3.1-8B-Instruct``).
    """
    parts = urlsplit(url)
    model = parts.path.lstrip("/")
    if not parts.netloc or not model:
        raise ConfigError(f"emulated URL must look like emulated://<GPU>/<model>?tp=N, got {url!r}")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"tp"})
    if unknown or parts.fragment:
        raise ConfigError(f"emulated URL {url!r}: only the query parameter tp is understood")
    tp_text = query.get("tp", ["1"])
    if len(tp_text) != 1 or not tp_text[0].isdigit() or int(tp_text[0]) < 1:
        raise ConfigError(f"emulated URL {url!r}: tp must be one integer >= 1")
    return EmulatedTarget(get_gpu(parts.netloc).name, get_model(model).name, int(tp_text[0]))


def _explicit_tp(url: str) -> int | None:
    """The tp an emulated URL names, or None when it names none (tp then defaults to 1)."""
    tp = parse_qs(urlsplit(url).query).get("tp")
    return int(tp[0]) if tp and tp[0].isdigit() else None


def _check_http_url(url: str) -> str:
    """An OpenAI-compatible root: http(s), a host, no query or fragment; trailing '/' dropped."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("base_url must be http(s)://host[:port]/path (an OpenAI-compatible root "
                          "such as http://127.0.0.1:8000/v1) or emulated://<GPU>/<model>?tp=N")
    if parts.query or parts.fragment:
        raise ConfigError("base_url must not carry a query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"base_url has a bad port: {exc}") from None
    return url.rstrip("/")


class EndpointConfig(BaseModel):
    """One model endpoint of a pool. See the module docstring for the two kinds of base_url."""

    model_config = _STRICT

    name: str = Field(min_length=1)       # unique within a pool; names the endpoint in errors
    base_url: str                         # http(s)://... root, or emulated://GPU/model?tp=N
    model: str = ""                       # model name sent in requests (emulated: the URL's)
    api_key_env: str | None = None        # name of the environment variable holding the key
    gpu: str = UNKNOWN_GPU                # GPU catalog name (canonicalized) or "unknown"
    tp: int = Field(default=1, ge=1)      # tensor-parallel degree (GPUs serving one replica)
    slots: int = Field(default=8, ge=1)   # calls this endpoint runs at once
    cost_per_hour: float | None = Field(default=None, ge=0)  # currency units per hour
    rpm: int | None = Field(default=None, ge=1)  # requests per minute allowed
    tpm: int | None = Field(default=None, ge=1)  # tokens (prompt + completion) per minute allowed
    tags: list[str] = Field(default_factory=list)
    # The server enforces a JSON-schema response_format (llama.cpp, vLLM, SGLang and OpenAI do):
    # plan_format="auto" then plans in JSON. None: only an endpoint tagged "llama.cpp" is taken to.
    json_schema: bool | None = None
    context_tokens: int | None = Field(default=None, ge=256)  # the model's context (prompt + answer)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_emulated_url(cls, data: Any) -> Any:
        """An emulated URL supplies gpu, tp and model when they are not given explicitly."""
        if not isinstance(data, Mapping):
            return data
        if not str(data.get("base_url", "")).startswith("emulated:"):
            return data
        try:
            target = parse_emulated_url(str(data["base_url"]))
        except ConfigError:
            return data  # the base_url field validator reports it, under its own name
        filled = dict(data)
        filled.setdefault("gpu", target.gpu)
        if not filled.get("model"):
            filled["model"] = target.model
        url_tp = _explicit_tp(str(data["base_url"]))
        if url_tp is not None:
            if filled.setdefault("tp", url_tp) != url_tp:
                raise ConfigError(f"endpoint {data.get('name')!r}: tp={filled['tp']} contradicts "
                                  f"the emulated URL's tp={url_tp}")
        return filled

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, url: str) -> str:
        if url.startswith("emulated:"):
            parse_emulated_url(url)
            return url
        return _check_http_url(url)

    @field_validator("gpu")
    @classmethod
    def _canonical_gpu(cls, gpu: str) -> str:
        if gpu.strip().lower() == UNKNOWN_GPU:
            return UNKNOWN_GPU
        try:
            return get_gpu(gpu).name
        except ConfigError:
            raise ConfigError(f"unknown GPU {gpu!r}; use one of {', '.join(known_gpus())} "
                              f"or {UNKNOWN_GPU!r} (register_gpu adds one)") from None

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        # The value is not echoed: a user who pasted the key itself here must not see it logged.
        if name is not None and not _ENV_NAME.fullmatch(name):
            raise ConfigError("api_key_env must be the NAME of an environment variable "
                              "(letters, digits, '_'), not the key itself")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> EndpointConfig:
        target = self.emulated
        if target is None:
            if not self.model:
                raise ConfigError(f"endpoint {self.name!r}: model is required for an http endpoint")
            return self
        if self.gpu != target.gpu:
            raise ConfigError(f"endpoint {self.name!r}: gpu {self.gpu!r} contradicts the emulated "
                              f"URL's {target.gpu!r}")
        return self

    @property
    def emulated(self) -> EmulatedTarget | None:
        """The emulated GPU/model/tp when base_url is ``emulated://...``, else None.

        ``tp`` is the endpoint's (the URL's when it names one)."""
        if not self.base_url.startswith("emulated:"):
            return None
        target = parse_emulated_url(self.base_url)
        return EmulatedTarget(target.gpu, target.model, self.tp)

    @property
    def model_info(self) -> ModelInfo:
        """What a run may know about this endpoint's model (see :class:`~fleetcall.llm.base.ModelInfo`)."""
        json_schema = self.json_schema if self.json_schema is not None else JSON_SCHEMA_TAG in self.tags
        return ModelInfo(json_schema, self.context_tokens)

    def api_key(self, environ: Mapping[str, str] | None = None) -> SecretStr | None:
        """The API key, read now from ``environ`` (default ``os.environ``); None if none is set up.

        Raises ConfigError naming the variable (never a value) if it is configured but unset."""
        if self.api_key_env is None:
            return None
        value = (os.environ if environ is None else environ).get(self.api_key_env)
        if not value:
            raise ConfigError(f"endpoint {self.name!r}: environment variable {self.api_key_env} "
                              "(api_key_env) is not set")
        return SecretStr(value)


class BreakerConfig(BaseModel):
    """Breaker per endpoint: open after ``failures`` in a row, probe again after ``cooldown_s``."""

    model_config = _STRICT

    failures: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=10.0, gt=0)


class RetryConfig(BaseModel):
    """Attempts of one call and their time limits (seconds of loop time).

    A failed attempt (connection error, 5xx, timeout) is retried at once on another endpoint;
    an endpoint that already failed the call is tried again only when no other is available,
    after ``backoff_s * 2**(failures - 1)``. Rate-limited answers (429, 503 + Retry-After) do
    not count against ``max_attempts``: the endpoint cools down and the call goes elsewhere, or
    waits. A call waits at most ``max_unavailable_s`` in all (its deadline, if sooner) while no
    endpoint it may use is available, then fails naming each endpoint and why."""

    model_config = _STRICT

    max_attempts: int = Field(default=3, ge=1)           # failed attempts a call may have, in all
    attempt_timeout_s: float = Field(default=60.0, gt=0)  # whole attempt, request to last token
    connect_timeout_s: float = Field(default=5.0, gt=0)  # TCP/TLS connect (real HTTP only)
    backoff_s: float = Field(default=0.2, ge=0)          # base pause before retrying an endpoint
                                                         # that failed the call
    rate_limit_s: float = Field(default=1.0, gt=0)       # cooldown after a 429 without Retry-After
    max_unavailable_s: float = Field(default=60.0, ge=0)  # wait for an available endpoint, in all


def _register_catalog_entries(data: Any) -> None:
    """Add the config's own GPUs and models to the catalogs (before its endpoints name them).

    Loading the same definition again is a no-op; one that contradicts a known entry of the
    same name is a ConfigError (a built-in cannot be silently redefined)."""
    from fleetcall.gpumodel.gpus import register_gpu
    from fleetcall.gpumodel.models import register_model

    if not isinstance(data, Mapping):
        return
    for kind, config_cls, get, register, to in (
            ("gpus", GPUConfig, get_gpu, register_gpu, "to_spec"),
            ("models", ModelConfig, get_model, register_model, "to_shape")):
        for raw in data.get(kind) or ():
            entry = raw if isinstance(raw, config_cls) else config_cls.model_validate(raw)
            wanted = getattr(entry, to)()
            try:
                known = get(entry.name)
            except ConfigError:
                register(entry)  # type: ignore[arg-type]  # each row pairs register with its config_cls
                continue
            if known != wanted:
                raise ConfigError(f"{kind[:-1]} {entry.name!r} is already in the catalog with other "
                                  "figures; give yours another name")


class PoolConfig(BaseModel):
    """A whole pool: endpoints, dispatch policy and fault handling; ``gpus`` and ``models`` add
    the user's own hardware and model shapes to the catalogs (fields of
    :class:`~fleetcall.gpumodel.gpus.GPUConfig` and :class:`~fleetcall.gpumodel.models.ModelConfig`)."""

    model_config = _STRICT

    gpus: list[GPUConfig] = Field(default_factory=list)      # extra GPU types, by spec sheet
    models: list[ModelConfig] = Field(default_factory=list)  # extra model shapes
    endpoints: list[EndpointConfig]
    policy: str = Field(default="slack", min_length=1)     # dispatch policy, by registered name
    policy_options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of the policy
    retry: RetryConfig = Field(default_factory=RetryConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    health_interval_s: float = Field(default=10.0, gt=0)   # seconds between active health probes
    max_queued_per_slot: int = Field(default=64, ge=1)     # admission bound: queued calls per slot
    block_tokens: int = Field(default=16, ge=1)            # prompt block size for prefix hashing

    @model_validator(mode="before")
    @classmethod
    def _catalog_first(cls, data: Any) -> Any:
        _register_catalog_entries(data)
        return data

    @field_validator("endpoints")
    @classmethod
    def _unique_names(cls, endpoints: list[EndpointConfig]) -> list[EndpointConfig]:
        names = [e.name for e in endpoints]
        dupes = {name for name in names if names.count(name) > 1}
        if dupes:
            raise ConfigError("endpoint names must be unique; repeated: "
                              + ", ".join(sorted(dupes)))
        return endpoints

    def to_toml(self) -> str:
        """This config as TOML text that :func:`load_pool_config` reads back to an equal config."""
        return to_toml(self.model_dump(exclude_none=True))


# ----------------------------------------------------------------------------- loading and writing


def _describe(exc: ValidationError) -> str:
    """Every problem of a validation error, one line each, naming the field path (never a value)."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"  - {where}: {message}")
    return "\n".join(lines)


def pool_config_from_dict(data: Any, *, source: str = "<dict>") -> PoolConfig:
    """Validate plain data (as parsed from TOML/YAML/JSON) into a PoolConfig; ConfigError if bad."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a pool config must be a table/mapping at the top level")
    try:
        return PoolConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid pool config:\n{_describe(exc)}") from None


def _yaml() -> ModuleType:
    """PyYAML, imported only for YAML files (TOML needs nothing beyond the standard library)."""
    try:
        import yaml
    except ImportError:
        raise ConfigError("YAML pool configs need PyYAML (pip install pyyaml); "
                          "or use a .toml file") from None
    return yaml


def load_pool_config(path: str | Path) -> PoolConfig:
    """Read a pool config from a ``.toml``, ``.yaml`` or ``.yml`` file.

        >>> # config = load_pool_config("pool.toml")

    Errors (ConfigError) name the file and every bad field."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"{path}: unknown config format {suffix or '(no extension)'!r}; "
                          "use .toml, .yaml or .yml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pool config: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text) if suffix == ".toml" else _yaml().safe_load(text)
    except (tomllib.TOMLDecodeError, _yaml().YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from None
    return pool_config_from_dict(data, source=str(path))


def write_pool_config(config: PoolConfig, path: str | Path) -> Path:
    """Write ``config`` to ``path`` as TOML or YAML (by extension); load_pool_config reads it back.

    Only the names of API-key variables are written, never keys. Unset optional fields are left
    out (TOML has no null)."""
    path = Path(path)
    suffix = path.suffix.lower()
    data = config.model_dump(exclude_none=True)
    if suffix == ".toml":
        text = to_toml(data)
    elif suffix in (".yaml", ".yml"):
        text = _yaml().safe_dump(data, sort_keys=False, allow_unicode=True)
    else:
        raise ConfigError(f"{path}: unknown config format {suffix or '(no extension)'!r}; "
                          "use .toml, .yaml or .yml")
    path.write_text(text, encoding="utf-8")
    return path


# -------------------------------------------------------------------------- a minimal TOML writer
# tomllib only reads. This writer covers what plain config data holds: str, bool, int, float,
# lists and nested dicts (None values are skipped). Top-level dicts become [tables], top-level
# lists of dicts become [[arrays of tables]], anything deeper is written inline.

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: Any) -> str:
    key = str(key)
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, Mapping):
        items = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    raise ConfigError(f"cannot write a {type(value).__name__} to TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _toml_pairs(table: Mapping[str, Any]) -> list[str]:
    return [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None]


def to_toml(data: Mapping[str, Any]) -> str:
    """TOML text for plain ``data``: ``tomllib.loads(to_toml(d))`` is ``d`` minus None values."""
    head: list[str] = []
    tables: list[str] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            tables.append(f"\n[{_toml_key(key)}]")
            tables += _toml_pairs(value)
        elif _is_table_array(value):
            for item in value:
                tables.append(f"\n[[{_toml_key(key)}]]")
                tables += _toml_pairs(item)
        else:
            head.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(head + tables).lstrip("\n") + "\n"
