"""Pool configuration: validation messages, API-key handling, TOML/YAML load and round trip."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from fleetcall.errors import ConfigError
from fleetcall.router.config import (
    BreakerConfig, EmulatedTarget, EndpointConfig, PoolConfig, RetryConfig, load_pool_config,
    pool_config_from_dict, to_toml, write_pool_config,
)

HTTP = {"name": "a100-0", "base_url": "http://10.0.0.5:8000/v1", "model": "llama"}


def endpoint(**overrides: Any) -> EndpointConfig:
    return EndpointConfig(**(HTTP | overrides))


def errors_of(**fields: Any) -> str:
    with pytest.raises(ValidationError) as info:
        EndpointConfig(**fields)
    return str(info.value)


# ----------------------------------------------------------------------------- endpoints


def test_http_endpoint_defaults_and_normalization() -> None:
    cfg = endpoint(base_url="https://api.example.com/v1/", gpu="nvidia_a100")
    assert cfg.base_url == "https://api.example.com/v1"
    assert cfg.gpu == "A100-80G" and cfg.tp == 1 and cfg.slots == 8 and cfg.tags == []
    assert cfg.emulated is None and cfg.api_key() is None
    assert endpoint(gpu="Unknown").gpu == "unknown"


def test_emulated_url_supplies_gpu_model_tp() -> None:
    cfg = EndpointConfig(name="sim", base_url="emulated://L40S/meta-llama/Llama-3.1-70B-Instruct?tp=4")
    assert cfg.emulated == EmulatedTarget("L40S", "llama-3.1-70b", 4)
    assert (cfg.gpu, cfg.tp, cfg.model) == ("L40S", 4, "llama-3.1-70b")
    named = EndpointConfig(name="sim", base_url="emulated://A100/llama-3.1-8b", model="served-name", tp=2)
    assert named.model == "served-name" and named.emulated == EmulatedTarget("A100-80G", "llama-3.1-8b", 2)


@pytest.mark.parametrize(("fields", "message"), [
    ({"base_url": "emulated://A100/llama-3.1-8b?tp=4", "tp": 2}, "contradicts the emulated URL's tp=4"),
    ({"base_url": "emulated://A100/llama-3.1-8b", "gpu": "L4"}, "contradicts the emulated URL's"),
    ({"base_url": "emulated://Z999/llama-3.1-8b"}, "unknown GPU 'Z999'; known GPUs: A100-40G"),
    ({"base_url": "emulated://A100/no-such-model"}, "unknown model"),
    ({"base_url": "emulated://A100/llama-3.1-8b?tp=0"}, "tp must be one integer >= 1"),
    ({"base_url": "emulated://A100/llama-3.1-8b?batch=3"}, "only the query parameter tp"),
    ({"base_url": "emulated://A100"}, "emulated://<GPU>/<model>"),
])
def test_bad_emulated_urls(fields: dict[str, Any], message: str) -> None:
    assert message in errors_of(name="sim", **fields)


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://host/v1", "base_url must be http(s)://"),
    ("127.0.0.1:8000/v1", "base_url must be http(s)://"),
    ("http:///v1", "base_url must be http(s)://"),
    ("http://host:99999/v1", "bad port"),
    ("http://host/v1?x=1", "query or fragment"),
])
def test_bad_http_urls(url: str, message: str) -> None:
    text = errors_of(**(HTTP | {"base_url": url}))
    assert "base_url" in text and message in text


def test_bad_gpu_lists_known_names() -> None:
    text = errors_of(**(HTTP | {"gpu": "B300"}))
    assert "gpu" in text and "unknown GPU 'B300'" in text and "L40S" in text and "'unknown'" in text


def test_http_endpoint_needs_a_model() -> None:
    assert "model is required" in errors_of(name="x", base_url="http://h/v1")


def test_strict_types_ranges_and_unknown_fields() -> None:
    assert "slots" in errors_of(**(HTTP | {"slots": "8"}))
    assert "tp" in errors_of(**(HTTP | {"tp": 0}))
    assert "cost_per_hour" in errors_of(**(HTTP | {"cost_per_hour": -1.0}))
    assert "Extra inputs are not permitted" in errors_of(**(HTTP | {"slotz": 3}))
    assert endpoint(cost_per_hour=2).cost_per_hour == 2.0  # ints are fine for floats


def test_api_key_read_at_use_time_and_never_shown() -> None:
    cfg = endpoint(api_key_env="POOL_KEY")
    key = cfg.api_key({"POOL_KEY": "sk-very-secret"})
    assert isinstance(key, SecretStr) and key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in repr(key) and "sk-very-secret" not in str(key)
    with pytest.raises(ConfigError, match="POOL_KEY") as info:
        cfg.api_key({})
    assert "a100-0" in str(info.value)


def test_api_key_env_holding_a_key_is_rejected_without_echoing_it() -> None:
    text = errors_of(**(HTTP | {"api_key_env": "sk-live-abcdef123456"}))
    assert "NAME of an environment variable" in text and "sk-live-abcdef123456" not in text


# ----------------------------------------------------------------------------- pool


def test_pool_defaults() -> None:
    pool = PoolConfig(endpoints=[endpoint()])
    assert pool.policy == "slack" and pool.policy_options == {} and pool.max_queued_per_slot == 64
    assert pool.retry == RetryConfig() and pool.retry.max_attempts == 3 and pool.retry.backoff_s == 0.2
    assert pool.breaker == BreakerConfig(failures=5, cooldown_s=10.0)
    assert pool.health_interval_s == 10.0 and pool.block_tokens == 16


def test_duplicate_endpoint_names() -> None:
    data = {"endpoints": [HTTP, HTTP | {"base_url": "http://other/v1"}, HTTP | {"name": "b"}]}
    with pytest.raises(ConfigError, match="endpoint names must be unique; repeated: a100-0"):
        pool_config_from_dict(data, source="test")


def test_errors_name_the_source_and_field_path() -> None:
    data = {"endpoints": [HTTP, HTTP | {"name": "b", "gpu": "Q1"}], "retry": {"max_attempts": 0}}
    with pytest.raises(ConfigError) as info:
        pool_config_from_dict(data, source="pool.toml")
    text = str(info.value)
    assert text.startswith("pool.toml: invalid pool config")
    assert "endpoints.1.gpu: unknown GPU 'Q1'" in text and "retry.max_attempts" in text
    with pytest.raises(ConfigError, match="mapping at the top level"):
        pool_config_from_dict([HTTP], source="x.yaml")


# ----------------------------------------------------------------------------- files


def _sample() -> PoolConfig:
    return PoolConfig(
        endpoints=[
            endpoint(api_key_env="VLLM_KEY", gpu="A100", tp=4, slots=16, cost_per_hour=4.1, rpm=600,
                     tags=["fast", "us-east \"1\""]),
            EndpointConfig(name="sim l40s", base_url="emulated://L40S/llama-3.1-8b?tp=2"),
        ],
        policy="hexgen", policy_options={"alpha": 0.7, "weights": {"planner": 2, "names": ["a", "b"]}},
        retry=RetryConfig(max_attempts=4, attempt_timeout_s=30), breaker=BreakerConfig(failures=2),
        health_interval_s=2.5)


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".yml"])
def test_round_trip_through_files(tmp_path: Path, suffix: str) -> None:
    config = _sample()
    path = write_pool_config(config, tmp_path / f"pool{suffix}")
    assert load_pool_config(path) == config
    assert "sk-" not in path.read_text()


def test_to_toml_is_valid_toml() -> None:
    config = _sample()
    data = tomllib.loads(config.to_toml())
    assert data["endpoints"][0]["tags"] == ["fast", 'us-east "1"']
    assert "cost_per_hour" not in data["endpoints"][1]  # None left out
    assert pool_config_from_dict(data) == config


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown config format '.json'"):
        load_pool_config(tmp_path / "pool.json")
    with pytest.raises(ConfigError, match="cannot read pool config"):
        load_pool_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("endpoints = [\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_pool_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("endpoints:\n  - name: a\n    base_url: http://h/v1\n    model: m\n    slots: many\n")
    with pytest.raises(ConfigError, match=r"wrong\.yaml: invalid pool config:\n  - endpoints\.0\.slots"):
        load_pool_config(wrong)
    with pytest.raises(ConfigError, match="unknown config format"):
        write_pool_config(_sample(), tmp_path / "pool.ini")


_scalars = (st.text(max_size=12) | st.integers(-10**12, 10**12) | st.booleans()
            | st.floats(allow_nan=False, width=64))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _values, max_size=5))
def test_to_toml_round_trips_plain_data(data: dict[str, Any]) -> None:
    assert tomllib.loads(to_toml(data)) == data


def test_a_pool_file_can_add_its_own_gpu_and_model(tmp_path) -> None:
    """Users add hardware and model shapes in the pool file, then name them in endpoints."""
    from fleetcall.gpumodel.gpus import get_gpu
    from fleetcall.gpumodel.models import get_model
    from fleetcall.gpumodel.perf import Deployment
    path = tmp_path / "pool.toml"
    path.write_text('''
[[gpus]]
name = "MI300X-test"
arch = "cdna3"
memory_gb = 192
mem_bw_gbs = 5300
bf16_tflops = 1307

[[models]]
name = "tiny-test-1b"
params_b = 1.2
layers = 16
hidden = 2048
heads = 32
kv_heads = 8
head_dim = 64
vocab = 128256

[[endpoints]]
name = "sim"
base_url = "emulated://MI300X-test/tiny-test-1b"
''')
    config = load_pool_config(path)
    assert config.endpoints[0].gpu == "MI300X-test" and get_gpu("MI300X-test").memory_gb == 192
    assert get_model("tiny-test-1b").layers == 16
    assert Deployment.of("MI300X-test", "tiny-test-1b").kv_capacity_tokens() > 0
    assert load_pool_config(path) == config  # loading the same definitions again is fine
    clash = tmp_path / "clash.toml"
    clash.write_text('[[gpus]]\nname = "A100-80G"\nmemory_gb = 1\nmem_bw_gbs = 1\nbf16_tflops = 1\n'
                     '[[endpoints]]\nname = "x"\nbase_url = "emulated://A100-80G/tiny-test-1b"\n')
    with pytest.raises(ConfigError, match="A100-80G"):
        load_pool_config(clash)
