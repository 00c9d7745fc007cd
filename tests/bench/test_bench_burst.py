"""``fleetcall bench burst`` on a small run against a real ``fleetcall emulate`` subprocess.

Real clock, so nothing here asserts a rate: the benchmark reports them (README); this checks
that every route is measured and the server is started and stopped.
"""

from __future__ import annotations

import asyncio
import json

from fleetcall.bench import burst
from fleetcall.cli import main as cli


def test_every_route_is_measured_against_one_server() -> None:
    async def main() -> tuple[dict, int]:
        async with burst.emulate_server() as url:
            assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
            rep = await burst.measure(url, calls=24, concurrency=8, repeat=1,
                                      policies=["least-busy", "slack"])
            return rep, len(rep["rows"])

    rep, rows = asyncio.run(main())
    assert rows == 3 and [r["via"] for r in rep["rows"]] == ["direct", "least-busy", "slack"]
    assert all(r["calls_per_s"] > 0 for r in rep["rows"])
    assert rep["rows"][0]["of_direct"] == 1.0 and isinstance(rep["floors"]["holds"], bool)


def test_cli_starts_its_own_server_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "burst.json"
    code = cli(["bench", "burst", "--calls", "16", "--concurrency", "8", "--repeat", "1",
                "--policy", "slack", "--json", str(out)])
    rep = json.loads(out.read_text())
    assert code in (0, 1) and (code == 0) == rep["floors"]["holds"]
    assert "calls/s" in capsys.readouterr().out
