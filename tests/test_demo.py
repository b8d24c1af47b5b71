"""The README's main command end to end at a tiny budget (the 5k default once crashed on an
evaluation interval that was not a multiple of the fused chunk; only running it finds that)."""

from __future__ import annotations

import json

import pytest

from o2o.demo import main as demo_main


@pytest.mark.slow
def test_demo_runs_offline_then_vanilla_and_samg(tmp_path, capsys):
    status = demo_main(
        [
            "--offline-steps",
            "1000",
            "--online-steps",
            "1000",
            "--seeds",
            "1",
            "--runs-dir",
            str(tmp_path),
        ]
    )
    assert status == 0
    (root,) = tmp_path.iterdir()
    assert (root / "learning_curves.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "IQL + SAMG" in out and "after online" in out and "per seed" in out
    for run in ("offline+vanilla", "samg"):
        rows = [
            json.loads(line) for line in (root / run / "metrics.jsonl").read_text().splitlines()
        ]
        online = [r for r in rows if r.get("phase") == "online"]
        assert online and online[-1]["step"] == 2000, run
    samg_rows = [json.loads(x) for x in (root / "samg" / "metrics.jsonl").read_text().splitlines()]
    assert 0.0 <= samg_rows[-1]["train/samg/p_mean"] <= 1.0
    # The report reads the demo's runs as finished runs with their methods (issue 20).
    from o2o.cli import main

    capsys.readouterr()
    assert main(["report", str(root), "--out", str(tmp_path / "report"), "--reps", "20"]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "2 finished runs (0 unfinished)" in text and "iql/samg" in text


def test_claims_line_reads_the_committed_analysis(tmp_path):
    from o2o.demo import claims_line

    path = tmp_path / "claims.json"
    assert "docs/claims.md" in claims_line(path)  # absent: a pointer only
    row = {
        "method": "samg",
        "reference": "vanilla",
        "metric": "score",
        "domain": "locomotion",
        "algo": "iql",
        "tasks": ["hopper-medium-lite"],
        "budget": "60k+20k ×5",
        "final": {"difference": {"point": 2.5, "low": -1.25, "high": 6.0}},
        "verdict": "not shown",
    }
    path.write_text(json.dumps({"rows": [{**row, "final": None}]}))
    assert "no finished" in claims_line(path)
    path.write_text(json.dumps({"rows": [row, {**row, "domain": "maze", "verdict": "holds"}]}))
    line = claims_line(path)
    assert "IQL on 1 task(s) at 60k+20k ×5: +2.5 [-1.2, +6.0] points, not shown" in line
    assert "holds" not in line  # the maze row is another claim
