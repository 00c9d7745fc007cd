"""GPU price files: the shipped example, and every kind of bad file named in its error."""

from __future__ import annotations

import pytest

from fleetcall.errors import ConfigError
from fleetcall.fleet.prices import load_prices, parse_prices


def test_the_example_prices_every_gpu_of_the_default_mix():
    prices = load_prices("example")
    assert set(prices) >= {"A100-80G", "L40S", "A6000", "H100"}
    assert all(p > 0 for p in prices.values())


def test_aliases_are_resolved_to_catalog_names():
    assert parse_prices('"nvidia_a100" = 1.5\nl40s = 0.9') == {"A100-80G": 1.5, "L40S": 0.9}


@pytest.mark.parametrize("text, message", [
    ('"A100" = ', "not valid TOML"),
    ('"Z100" = 1.0', "unknown GPU 'Z100'"),
    ('"A100" = -1', "positive number"),
    ('"A100" = "cheap"', "positive number"),
    ('"A100" = nan', "positive number"),
    ('"A100" = true', "positive number"),
    ('"A100" = 1\n"A100-80G" = 2', "priced twice"),
    ('', "prices no GPU"),
])
def test_a_bad_prices_file_is_a_config_error_naming_the_problem(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_prices(text, "p.toml")


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_prices(tmp_path / "nope.toml")
