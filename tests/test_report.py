"""`o2o report` on synthetic results directories: the numbers in the tables, rliable's
statistics, regret, figures, HTML, and errors."""

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from rliable import metrics

from o2o.analysis.report import write_report
from o2o.analysis.results import load_results
from o2o.analysis.statistics import aggregate_statistics, probability_of_improvement
from o2o.analysis.tables import paired_tables, regret_table, score_rows, score_table
from o2o.cli import main

OFFLINE, ONLINE = 1000, 1000


def write_run(
    root: Path,
    dataset: str,
    algo: str,
    method: str,
    offline: list[float],
    online: list[float],
    success: list[list[float]] | None = None,
    samg: bool = False,
    finished: bool = True,
    agent: dict | None = None,
) -> Path:
    """A run directory as the suite runner writes it; the online curve ends at ``online``."""
    path = root / dataset / algo / method
    path.mkdir(parents=True)
    config = {
        "algo": algo,
        "agent": agent or {},
        "pipeline": {
            "dataset": dataset,
            "offline_steps": OFFLINE,
            "online_steps": ONLINE,
            "seeds": len(offline),
            "eval_episodes": 2,
        },
        "finetune": {
            "name": method.split("-")[0] if method != "vanilla" else "vanilla",
            "options": {},
        },
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [
        {
            "phase": "offline",
            "step": OFFLINE,
            "normalized_score": float(np.mean(offline)),
            "seed_normalized_scores": offline,
        }
    ]
    for fraction in (0.5, 1.0):
        scores = [o + fraction * (n - o) for o, n in zip(offline, online, strict=True)]
        row = {
            "phase": "online",
            "step": OFFLINE + int(fraction * ONLINE),
            "normalized_score": float(np.mean(scores)),
            "seed_normalized_scores": scores,
        }
        if samg:
            row["train/samg/p_mean"] = 0.6 - 0.1 * fraction
            row["train/samg/p_positive"] = 0.8 - 0.1 * fraction
        rows.append(row)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if success is not None:
        episodes = [
            {"step": OFFLINE + 10 * i, "seed": seed, "return": 0.0, "success": s}
            for seed, outcomes in enumerate(success)
            for i, s in enumerate(outcomes)
        ]
        (path / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    if samg:
        fit = [
            {
                "phase": "samg_fit",
                "seed": seed,
                "cvae_step": step,
                "kl": kl + 0.01 * seed,
                "step": OFFLINE,
            }
            for seed in range(len(offline))
            for step, kl in ((1000, 0.3), (2000, 0.05))
        ]
        (path / "finetune.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fit))
    if finished:
        summary = {
            "dataset": dataset,
            "algo": algo,
            "method": method,
            "seconds": 1.0,
            "offline_scores": offline,
            "online_scores": online,
            "score_reference": "test reference",
        }
        (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.fixture()
def results(tmp_path):
    root = tmp_path / "results"
    write_run(root, "hopper-medium-lite", "iql", "vanilla", [40.0, 50.0, 60.0], [50.0, 60.0, 70.0])
    write_run(
        root, "hopper-medium-lite", "iql", "samg", [40.0, 50.0, 60.0], [60.0, 75.0, 90.0], samg=True
    )
    write_run(
        root, "halfcheetah-medium-lite", "iql", "vanilla", [30.0, 30.0, 30.0], [40.0, 44.0, 48.0]
    )
    write_run(
        root,
        "halfcheetah-medium-lite",
        "iql",
        "samg",
        [30.0, 30.0, 30.0],
        [38.0, 42.0, 46.0],
        samg=True,
        # one changed and one default setting: only the change is listed
        agent={"expectile": 0.9, "beta": 3.0},
    )
    write_run(
        root,
        "pointmaze-umaze-play",
        "cql",
        "vanilla",
        [10.0, 20.0],
        [30.0, 40.0],
        success=[[0, 0, 1, 1], [0, 1, 1, 1]],
    )
    write_run(root, "hopper-medium-lite", "cql", "vanilla", [1.0], [2.0], finished=False)
    return root


def test_score_table_numbers(results):
    table = score_table(load_results(results))
    rows = {(r[0], r[1], r[2]): r for r in table.rows}
    assert len(rows) == 5  # the unfinished run is not in the table
    vanilla = rows[("hopper-medium-lite", "iql", "vanilla")]
    # mean ± population std over seeds: 50 ± 8.165, 60 ± 8.165
    assert vanilla[3:] == ("50.0 ± 8.2", "60.0 ± 8.2", "+10.0", "", "1k+1k ×3", "")
    samg = rows[("hopper-medium-lite", "iql", "samg")]
    # 75 vs 60 -> +25%
    assert samg[3:7] == ("50.0 ± 8.2", "75.0 ± 12.2", "+25.0", "+25.0%")
    cheetah = rows[("halfcheetah-medium-lite", "iql", "samg")]
    assert cheetah[4:] == (
        "42.0 ± 3.3",
        "+12.0",
        "-4.5%",
        "1k+1k ×3",
        "expectile=0.9",
    )  # (42 - 44) / 44
    assert [
        r.method for r in score_rows(load_results(results)) if r.dataset == "hopper-medium-lite"
    ] == ["vanilla", "samg"]


def test_regret_only_where_success_is_logged(results):
    table = regret_table(load_results(results))
    assert table is not None and len(table.rows) == 1
    # seed 0: 1 - mean(0,0,1,1) = 0.5; seed 1: 0.25 -> 0.375 ± 0.125
    assert table.rows[0] == ("pointmaze-umaze-play", "cql", "vanilla", "0.375 ± 0.125", "8")


def test_rliable_statistics_match_direct_computation(results):
    loaded = load_results(results)
    aggregates = {a.label: a for a in aggregate_statistics(loaded, reps=200)}
    samg = aggregates["iql/samg"]
    # (runs, tasks): halfcheetah then hopper
    scores = np.array([[38.0, 60.0], [42.0, 75.0], [46.0, 90.0]])
    assert samg.tasks == ("halfcheetah-medium-lite", "hopper-medium-lite") and samg.runs == 3
    assert samg.mean.point == pytest.approx(scores.mean())
    assert samg.iqm.point == pytest.approx(metrics.aggregate_iqm(scores))
    assert samg.optimality_gap.point == pytest.approx(100 - scores.mean())
    assert samg.mean.low <= samg.mean.point <= samg.mean.high
    assert aggregates["cql/vanilla"].runs == 2  # the unfinished cql run on hopper is left out
    (improvement,) = probability_of_improvement(loaded, reps=200)
    vanilla = np.array([[40.0, 50.0], [44.0, 60.0], [48.0, 70.0]])
    assert (improvement.algo, improvement.method) == ("iql", "samg")
    assert improvement.probability.point == pytest.approx(
        metrics.probability_of_improvement(scores, vanilla)
    )
    # by hand, P(X > Y) + ½P(X = Y) over all seed pairs: halfcheetah 3/9, hopper 7.5/9
    assert improvement.probability.point == pytest.approx((3 / 9 + 7.5 / 9) / 2)


def test_report_files_markdown_and_html(results, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(results), "--out", str(out), "--html", "--reps", "200"]) == 0
    text = (out / "report.md").read_text()
    assert "| hopper-medium-lite | iql | samg | 50.0 ± 8.2 | 75.0 ± 12.2 | +25.0 | +25.0% |" in text
    assert "Average improvement over vanilla: samg +10.2%." in text  # (25 - 4.545) / 2
    assert "## samg vs vanilla, paired" in text
    assert "| pointmaze-umaze-play | cql | vanilla | 0.375 ± 0.125 | 8 |" in text
    assert "`hopper-medium-lite/cql/vanilla`" in text  # listed as unfinished
    for name in (
        "curves-hopper-medium-lite.png",
        "curves-pointmaze-umaze-play.png",
        "samg-hopper-medium-lite.png",
        "samg-halfcheetah-medium-lite.png",
    ):
        assert (out / "figures" / name).stat().st_size > 1000
        assert f"figures/{name}" in text
    assert not (out / "figures" / "samg-pointmaze-umaze-play.png").exists()
    page = (out / "report.html").read_text()
    assert "<td>75.0 ± 12.2</td>" in page and "figures/" not in page  # nothing linked
    figure = (out / "figures" / "curves-hopper-medium-lite.png").read_bytes()
    assert f'src="data:image/png;base64,{base64.b64encode(figure).decode()}"' in page
    # Titled by the results' name, not wherever they were read from.
    assert f"<title>o2o report: {results.name}</title>" in page and str(results.parent) not in page


def test_bootstrap_interval_of_the_mean():
    from o2o.analysis.curves import bootstrap_interval

    assert bootstrap_interval(np.array([5.0, 5.0, 5.0])) == (5.0, 5.0)
    assert bootstrap_interval(np.array([7.0])) == (7.0, 7.0)
    values = np.array([0.0, 10.0, 20.0])
    low, high = bootstrap_interval(values)
    # By hand: 27 equally likely resamples of 3 seeds; P(mean = 0) = P(mean = 20) = 1/27
    # = 3.7% > 2.5%, so the exact 2.5th and 97.5th percentiles are 0 and 20 (2000 resamples
    # give 3.7% ± 0.4% of each, far from 2.5%).
    assert (low, high) == (pytest.approx(0.0), pytest.approx(20.0))
    # Never wider than the seeds' range, unlike the t-interval (10 ± 24.8 for these 3 seeds).
    # Many seeds: close to the normal interval of the mean, mean ± 1.96·σ/√n.
    rng = np.random.default_rng(1)
    many = rng.normal(50.0, 10.0, 400)
    low, high = bootstrap_interval(many, reps=4000)
    half = 1.96 * many.std() / np.sqrt(many.size)
    assert low == pytest.approx(many.mean() - half, abs=0.15) and high == pytest.approx(
        many.mean() + half, abs=0.15
    )


@pytest.mark.parametrize("n", [3, 10, 13, 20, 25, 90])
def test_curve_styles_are_distinct_for_any_number_of_series(n):
    """Up to 20 series no two colours alike (tab10, then tab20); past 20 the colours repeat
    and the line style (past 80 the marker) tells the series apart."""
    from o2o.analysis.curves import series_styles

    styles = series_styles(n)
    assert len(styles) == n and len({(c[:3], ls, m) for c, ls, m in styles}) == n
    if n <= 20:
        colours = np.array([c[:3] for c, _, _ in styles])
        gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1) + np.eye(n) * 9
        assert gaps.min() > 0.03 and {ls for _, ls, _ in styles} == {"-"}


def test_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: results directory {tmp_path / 'nothing'} not found"
    )
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no offline→online runs" in capsys.readouterr().err


def test_default_report_directory(results):
    written = write_report(results, reps=50)
    assert written == [results / "report" / "report.md"]
    # a second report re-reads the results and ignores its own report directory
    assert write_report(results, reps=50) == written


def test_mixed_budgets_align_curves_at_the_start_of_fine_tuning(tmp_path, monkeypatch):
    import o2o.analysis.report as report

    root = tmp_path / "results"
    write_run(root, "hopper-medium-lite", "iql", "vanilla", [40.0, 50.0], [50.0, 60.0])
    cql = write_run(root, "hopper-medium-lite", "cql", "vanilla", [30.0, 30.0], [35.0, 35.0])
    config = yaml.safe_load((cql / "config.yaml").read_text())
    config["pipeline"]["offline_steps"] = 500  # rows keep their steps 1000, 1500, 2000
    (cql / "config.yaml").write_text(yaml.safe_dump(config))
    seen = {}

    def capture(curves, path, title, **kw):
        seen.update(curves=curves, title=title, boundary=kw["boundary"])
        return Path(path)

    monkeypatch.setattr(report, "plot_learning_curves", capture)
    report.build_report(load_results(root), tmp_path / "out", "t", reps=10)
    steps = {label: [row["step"] for row in rows] for label, rows in seen["curves"].items()}
    assert steps == {
        "cql/vanilla (500+1k ×2)": [500, 1000, 1500],
        "iql/vanilla (1k+1k ×2)": [0, 500, 1000],
    }
    assert seen["boundary"] == 0 and "budgets differ" in seen["title"]


def test_paired_table_sets_each_method_beside_vanilla(results):
    tables = paired_tables(load_results(results))
    assert list(tables) == ["samg"]
    rows = {(r[0], r[1]): r for r in tables["samg"].rows}
    # the vanilla-only maze run and the unfinished CQL run have no pair
    assert set(rows) == {("hopper-medium-lite", "iql"), ("halfcheetah-medium-lite", "iql")}
    # SAMG 60/75/90 vs vanilla mean 60: two seeds above (60 is not above)
    assert rows[("hopper-medium-lite", "iql")][2:] == (
        "1k+1k ×3",
        "50.0 ± 8.2",
        "60.0 ± 8.2",
        "75.0 ± 12.2",
        "+25.0%",
        "2/3",
    )
    # SAMG 38/42/46 vs vanilla mean 44: one seed above
    assert rows[("halfcheetah-medium-lite", "iql")][-2:] == ("-4.5%", "1/3")


def test_a_method_with_its_own_offline_phase_is_matched_by_seed_not_paired(tmp_path):
    """FamO2O trains from the first offline step, so its runs share no offline checkpoint
    with vanilla: the report's heading says it is matched by seed only."""
    root = tmp_path / "results"
    write_run(root, "hopper-medium-lite", "iql", "vanilla", [40.0, 50.0], [50.0, 60.0])
    write_run(root, "hopper-medium-lite", "iql", "famo2o", [35.0, 45.0], [55.0, 65.0])
    write_run(root, "hopper-medium-lite", "iql", "samg", [40.0, 50.0], [52.0, 58.0], samg=True)
    out = tmp_path / "report"
    assert main(["report", str(root), "--out", str(out), "--reps", "50"]) == 0
    text = (out / "report.md").read_text()
    assert "## famo2o vs vanilla, by seed (own offline phase)" in text
    assert "## samg vs vanilla, paired" in text


# --- figures fit for a paper: their data, not their pixels ------------------------------------


def test_single_point_series_are_not_drawn(tmp_path):
    from o2o.analysis.curves import drawable, plot_learning_curves

    one = [{"phase": "offline", "step": 1000, "normalized_score": 5.0}]
    two = one + [{"phase": "online", "step": 2000, "normalized_score": 7.0}]
    assert list(drawable({"a": one, "b": two})) == ["b"]
    assert plot_learning_curves({"a": one}, tmp_path / "x.png", "t") is None
    assert not (tmp_path / "x.png").exists()
    assert plot_learning_curves({"a": one, "b": two}, tmp_path / "y.png", "t").exists()


def from_run(root: Path) -> Path:
    """A run fine-tuned from ``vanilla``'s offline checkpoint with --offline-steps 0: the
    offline rows are copied from the source, the online rows count env steps from 0."""
    path = write_run(root, "hopper-medium-lite", "iql", "samg-from", [40.0, 50.0], [45.0, 65.0])
    config = yaml.safe_load((path / "config.yaml").read_text())
    config["pipeline"]["offline_steps"] = 0
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        if row["phase"] == "online":
            row["step"] -= OFFLINE
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_from_run_is_drawn_on_its_real_offline_budget(tmp_path, monkeypatch):
    import o2o.analysis.report as report
    from o2o.analysis.curves import offline_budget, timeline

    root = tmp_path / "results"
    write_run(root, "hopper-medium-lite", "iql", "vanilla", [40.0, 50.0], [50.0, 60.0])
    from_run(root)
    rows = [
        {"phase": "offline", "step": 1000},
        {"phase": "offline", "step": 2000},
        {"phase": "online", "step": 500},
        {"phase": "online", "step": 1000},
    ]
    assert offline_budget(rows, 0) == 2000 and offline_budget(rows, 3000) == 3000
    assert [r["step"] for r in timeline(rows, 0)] == [1000, 2000, 2500, 3000]
    assert [r["step"] for r in timeline(rows, 2000)] == [1000, 2000, 500, 1000]  # as logged

    results = {r.method: r for r in load_results(root)}
    assert results["samg-from"].offline_steps == OFFLINE
    assert results["samg-from"].budget == results["vanilla"].budget  # one figure, one axis
    seen = {}

    def capture(curves, path, title, **kw):
        seen.update(curves=curves, boundary=kw["boundary"], band=kw["band"])
        return Path(path)

    monkeypatch.setattr(report, "plot_learning_curves", capture)
    report.build_report(load_results(root), tmp_path / "out", "t", reps=10)
    steps = {label: [row["step"] for row in rows] for label, rows in seen["curves"].items()}
    assert steps == {"iql/vanilla": [1000, 1500, 2000], "iql/samg-from": [1000, 1500, 2000]}
    assert seen["boundary"] == OFFLINE and seen["band"] == "bootstrap"


def test_diagnostic_panels_of_one_point_are_hidden(tmp_path):
    from o2o.analysis.diagnostics import diagnostic_panels
    from o2o.finetune.base import Diagnostic

    root = tmp_path / "results"
    write_run(root, "hopper-medium-lite", "iql", "samg", [40.0], [50.0], samg=True)
    path = root / "hopper-medium-lite" / "iql" / "samg" / "metrics.jsonl"
    with path.open("a") as f:  # a KL logged once, at the end of a short fit
        f.write(json.dumps({"phase": "samg_cvae", "step": 100, "train/samg/cvae_kl": 0.1}) + "\n")
    (root / "hopper-medium-lite" / "iql" / "samg" / "finetune.jsonl").unlink()
    wanted = (
        Diagnostic("online", "train/samg/p_mean", "mean p"),
        Diagnostic("samg_cvae", "train/samg/cvae_kl", "KL"),
    )
    panels = diagnostic_panels(load_results(root), wanted)
    assert [d.title for d, _ in panels] == ["mean p"]
    steps, mean, _ = panels[0][1]["iql/samg"]
    assert list(steps) == [1500, 2000] and mean == pytest.approx([0.55, 0.5])


def add_coverage(path: Path, radii: list[list[float]], cells: list[list[float]]) -> None:
    """Visited-state coverage (o2o.experiment.visited's keys) in a run's online rows, one
    list of per-seed values per online row."""
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    online = [r for r in rows if r["phase"] == "online"]
    for row, radius, cell in zip(online, radii, cells, strict=True):
        row.update(
            {"coverage/knn_radius": float(np.mean(radius)), "seed_coverage/knn_radius": radius}
        )
        row.update({"coverage/cells": float(np.mean(cell)), "seed_coverage/cells": cell})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_visited_coverage_panel_per_method(tmp_path):
    from o2o.analysis.diagnostics import visited_series

    root = tmp_path / "results"
    vanilla = write_run(
        root, "hopper-medium-lite", "iql", "vanilla", [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]
    )
    sera = write_run(root, "hopper-medium-lite", "iql", "sera", [1.0, 2.0, 3.0], [2.0, 3.0, 5.0])
    add_coverage(vanilla, [[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]], [[3, 4, 5], [6, 6, 9]])
    add_coverage(sera, [[0.0, 10.0, 20.0], [2.0, 2.0, 2.0]], [[5, 5, 5], [9, 9, 9]])
    results = {r.method: r for r in load_results(root)}
    # Against the online env step; mean over seeds; ±1 std by numpy (ddof 0).
    steps, mean, low, high = visited_series(results["vanilla"], "coverage/knn_radius", "std")
    assert list(steps) == [500, 1000] and mean == pytest.approx([1.0, 2.0])
    assert high - mean == pytest.approx([0.0, np.std([1.0, 2.0, 3.0])])
    # The bootstrap interval of the mean of (0, 10, 20) is (0, 20) (see the test above).
    _, mean, low, high = visited_series(results["sera"], "coverage/knn_radius")
    assert (mean[0], low[0], high[0]) == (
        pytest.approx(10.0),
        pytest.approx(0.0),
        pytest.approx(20.0),
    )
    assert visited_series(results["sera"], "coverage/missing")[0].size == 0

    out = tmp_path / "report"
    write_report(root, out, reps=20)
    text = (out / "report.md").read_text()
    assert "## Visited-state coverage online" in text
    assert (out / "figures" / "visited-hopper-medium-lite.png").stat().st_size > 1000


def test_no_coverage_section_without_coverage_rows(results, tmp_path):
    write_report(results, tmp_path / "report", reps=20)
    assert "Visited-state coverage" not in (tmp_path / "report" / "report.md").read_text()


def test_report_band_is_an_option(results, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["report", str(results), "--out", str(out), "--band", "ci95", "--reps", "20"]) == 0
    assert "Student-t interval of the mean" in (out / "report.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(results), "--band", "wide"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_step_ticks_are_short():
    from o2o.analysis.curves import step_label

    assert [step_label(v) for v in (-60000, 0, 500, 1500, 20000)] == [
        "-60k", "0", "500", "1.5k", "20k"
    ]  # fmt: skip


def test_diagnostic_figures_wrap_after_three_panels():
    import matplotlib.pyplot as plt

    from o2o.analysis.diagnostics import _figure

    for panels, rows in ((1, 1), (3, 1), (5, 2), (7, 3)):
        fig, axes = _figure(panels, "t")
        assert len(axes) == panels == len(fig.axes)
        assert len({round(ax.get_position().y0, 3) for ax in axes}) == rows
        plt.close(fig)
