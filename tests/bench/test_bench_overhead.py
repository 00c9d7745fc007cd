"""``fleetcall bench overhead`` on small shapes: it runs the plans it claims to and reports them."""

from __future__ import annotations

import json

from fleetcall.bench import overhead
from fleetcall.cli import main as cli


def test_plans_have_the_stated_shapes():
    from fleetcall.planner import PlanParser
    for text, deps in ((overhead.wide_plan(5), set()), (overhead.deep_plan(5), {4})):
        parser = PlanParser()
        items = parser.feed(text + "\n") + parser.close()
        tasks = [i for i in items if hasattr(i, "deps")]
        assert len(tasks) == 5 and set(tasks[-1].deps) == deps


def test_cli_reports_every_shape(tmp_path, capsys):
    out = tmp_path / "overhead.json"
    code = cli(["bench", "overhead", "--tasks", "200", "--runs", "20", "--repeat", "1", "--json", str(out)])
    rep = json.loads(out.read_text())
    assert code == (0 if rep["floors"]["holds"] else 1)
    assert rep["shapes"]["wide"]["tasks"] == 200 and rep["shapes"]["concurrent"]["runs"] == 20
    assert all(s["us_per_task"] > 0 for s in rep["shapes"].values())
    assert "us/task" in capsys.readouterr().out
