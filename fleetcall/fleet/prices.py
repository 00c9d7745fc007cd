"""GPU prices for the fleet planner: a TOML file of GPU name = US dollars per GPU-hour.

Prices are the user's data. The package ships an illustrative example (``--prices example``,
``fleetcall/data/prices/example.toml``, its source and date in its comments)::

    "H100" = 2.99
    "A100-80G" = 1.79

Names go through the GPU catalog (aliases allowed: ``"A100"`` is the A100-80G), so the keys of
the returned mapping are canonical catalog names.

    >>> load_prices("example")["A100-80G"]
    1.79
"""

from __future__ import annotations

import math
import os
import tomllib
from importlib import resources
from pathlib import Path

from fleetcall.errors import ConfigError, UnknownNameError
from fleetcall.gpumodel.gpus import get_gpu

BUILTIN_PRICES = {"example": "example.toml"}  # name -> file in fleetcall/data/prices


def _read(source: str | os.PathLike[str]) -> tuple[str, str]:
    """(name for messages, TOML text) of a builtin name or a file."""
    text = os.fspath(source)
    if text in BUILTIN_PRICES:
        file = resources.files("fleetcall") / "data" / "prices" / BUILTIN_PRICES[text]
        return f"{text} ({file})", file.read_text(encoding="utf-8")
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"prices file {text}: no such file (or give the builtin "
                          f"{', '.join(BUILTIN_PRICES)})")
    try:
        return text, path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"prices file {text}: cannot read it: {exc}") from exc


def parse_prices(text: str, name: str = "<prices>") -> dict[str, float]:
    """GPU catalog name -> $/GPU-hour from TOML ``text``. Raises ConfigError naming the file and
    the entry: bad TOML, an unknown GPU, a price that is not a positive finite number, or the
    same GPU twice (under two aliases)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"prices file {name}: not valid TOML: {exc}") from exc
    prices: dict[str, float] = {}
    keys: dict[str, str] = {}  # catalog name -> the key that priced it
    for key, value in data.items():
        try:
            gpu = get_gpu(key).name
        except UnknownNameError as exc:
            raise ConfigError(f"prices file {name}: {exc.args[0] if exc.args else exc}") from exc
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"prices file {name}: {key} = {value!r}: a price must be a positive "
                              f"number of dollars per GPU-hour")
        if gpu in prices:
            raise ConfigError(f"prices file {name}: {gpu} is priced twice (as {keys[gpu]!r} "
                              f"and {key!r})")
        prices[gpu] = float(value)
        keys[gpu] = key
    if not prices:
        raise ConfigError(f"prices file {name}: prices no GPU (write GPU = dollars per GPU-hour)")
    return prices


def load_prices(source: str | os.PathLike[str]) -> dict[str, float]:
    """The prices of a builtin name (``"example"``) or a TOML file; see :func:`parse_prices`."""
    name, text = _read(source)
    return parse_prices(text, name)
