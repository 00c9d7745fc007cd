"""Where a benchmark's report goes: ``--json PATH`` (one writer for every ``fleetcall bench``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def write_json(path: str, report: Any, *, default: Callable[[Any], Any] | None = None) -> None:
    """Write ``report`` to ``path`` as indented JSON and say so (``wrote PATH`` on stdout).

    ``default``: as :func:`json.dump`'s (e.g. ``str`` for reports that hold non-JSON values);
    without it a value JSON cannot carry raises TypeError. OSError if ``path`` cannot be written.
    """
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2, default=default)
    print(f"wrote {path}")
