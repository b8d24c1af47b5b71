"""The budget study's plateau rule and its Q-vs-Monte-Carlo reference (benchmarks/budget_study.py).
Expected values are worked out by hand in the comments, not by the code under test."""

import sys
from pathlib import Path

import numpy as np
import pytest

from o2o.data.dataset import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import budget_study  # noqa: E402

STEPS = np.arange(1, 11) * 1000  # ten evaluations, horizon 10k


def test_trailing_mean():
    # [0, 10, 20, 30] with a window of 3: 0, (0+10)/2, (0+10+20)/3, (10+20+30)/3
    np.testing.assert_allclose(budget_study.trailing_mean([0, 10, 20, 30], 3), [0, 5, 10, 20])


def test_plateau_rise_then_flat_without_smoothing():
    # final level: mean of the last max(1, ceil(0.2·10)) = 2 values = 50; tolerance 10%·50 = 5.
    # |v − 50| > 5 for 0..40 (indices 0-4), so the plateau starts at index 5 = step 6000,
    # which leaves 6000 ≤ 0.75·10000: reached.
    values = [0, 10, 20, 30, 40, 50, 50, 50, 50, 50]
    p = budget_study.plateau(STEPS, values, rel_tol=0.1, window=1)
    assert (p.step, p.final, p.tolerance, p.reached) == (6000, 50.0, 5.0, True)


def test_plateau_with_trailing_mean_of_three():
    # Same curve, window 3: final level over max(3, 2) = 3 values = 50, tolerance 5. Smoothed
    # values: 0, 5, 10, 20, 30, 40, 46.67, 50, 50, 50 -> index 5 (40) is the last outside,
    # the plateau starts at index 6 = step 7000 ≤ 7500: reached.
    values = [0, 10, 20, 30, 40, 50, 50, 50, 50, 50]
    p = budget_study.plateau(STEPS, values, rel_tol=0.1, window=3)
    assert p.step == 7000 and p.final == 50.0 and p.reached


def test_plateau_of_a_steady_rise_is_not_reached():
    # 10, 20, ..., 100: final level (90 + 100)/2 = 95, tolerance 9.5; 80 is 15 off, 90 is 5
    # off -> plateau at index 8 = step 9000 > 7500: the curve is still rising.
    values = 10.0 * np.arange(1, 11)
    p = budget_study.plateau(STEPS, values, rel_tol=0.1, window=1)
    assert p.step == 9000 and p.final == 95.0 and not p.reached


def test_plateau_absolute_tolerance_and_collapse():
    # A score that peaks at 60 and settles at 20: F = (20 + 20)/2 = 20, tolerance
    # max(3, 10%·20) = 3; 24 is 4 off, 22 is 2 off -> plateau from index 5 (step 6000).
    values = [10, 40, 60, 30, 24, 22, 20, 19, 20, 20]
    p = budget_study.plateau(STEPS, values, rel_tol=0.1, abs_tol=3.0, window=1)
    assert p.step == 6000 and p.final == 20.0 and p.tolerance == 3.0 and p.reached


def test_plateau_ignores_missing_values():
    values = [np.nan, 50, 50, 50]
    p = budget_study.plateau(np.arange(1, 5) * 1000, values, rel_tol=0.05, window=1)
    assert p.step == 2000 and p.final == 50.0  # tail of max(1, ceil(0.6)) = 1 value


def _toy_dataset() -> Dataset:
    # episode 1: rewards 1, 2, 3, ends in a terminal; episode 2: rewards 2, 2, cut by a timeout
    rewards = np.array([1, 2, 3, 2, 2], np.float32)
    terminals = np.array([0, 0, 1, 0, 0], bool)
    timeouts = np.array([0, 0, 0, 0, 1], bool)
    obs = np.zeros((5, 2), np.float32)
    return Dataset(obs, np.zeros((5, 1), np.float32), rewards, obs, terminals, timeouts)


def test_mc_reference_in_a_scaled_convention():
    # r' = 2r + 1: episode 1 -> 3, 5, 7; episode 2 -> 5, 5. Discount 0.5:
    # episode 1 returns-to-go 7.25, 8.5, 7; episode 2 (no bootstrap at the timeout) 7.5, 5.
    # Mean 35.25 / 5 = 7.05. Tail correction of episode 2 (mean reward 5, 5/(1 − 0.5) = 10):
    # row 3 adds 0.5² · 10 = 2.5 -> 10, row 4 adds 0.5 · 10 = 5 -> 10. Mean 42.75 / 5 = 8.55.
    ref = budget_study.mc_reference(_toy_dataset(), scale=2.0, shift=1.0, discount=0.5)
    assert ref["mc_mean"] == pytest.approx(7.05)
    assert ref["mc_mean_tail"] == pytest.approx(8.55)
    assert ref["rows_in_cut_episodes"] == pytest.approx(0.4)


def test_mc_reference_uses_iqls_return_scaling():
    # IQL on locomotion scales rewards by 1000 / (max − min episode return) = 1000 / (6 − 4).
    # Raw returns-to-go at discount 0.5: 2.75, 3.5, 3, 3, 2 -> mean 2.85 -> ×500 = 1425.
    dataset = _toy_dataset()
    scale, shift, convention = budget_study.reward_transform("iql", dataset)
    assert convention == "iql_locomotion" and (scale, shift) == (pytest.approx(500.0), 0.0)
    ref = budget_study.mc_reference(dataset, scale, shift, 0.5)
    assert ref["mc_mean"] == pytest.approx(1425.0)
    assert budget_study.reward_transform("td3bc", dataset) == (1.0, 0.0, "none")


def test_clean_rows_drops_a_restarts_duplicates():
    rows = [
        {"phase": "offline", "step": 1000, "v": "a"},
        {"phase": "offline", "step": 2000, "v": "a"},
        {"phase": "offline", "step": 1000, "v": "b"},  # a restart from step 0
        {"phase": "offline", "step": 2000, "v": "b"},
        {"phase": "online", "step": 3000, "v": "b"},
    ]
    kept = budget_study.clean_rows(rows)
    assert [(r["step"], r["v"]) for r in kept] == [(1000, "b"), (2000, "b")]


def test_clear_uncheckpointed_touches_only_the_stage_runs(tmp_path):
    def run(dataset, algo, *files):
        path = tmp_path / dataset / algo / "vanilla"
        path.mkdir(parents=True)
        for name in ("config.yaml", "metrics.jsonl", "phase.json", *files):
            (path / name).write_text("{}")
        return path

    stage = run("hopper-medium-lite", "td3bc")
    other_algo = run("hopper-medium-lite", "cql")  # another stage sharing the directory
    other_dataset = run("walker2d-medium-lite", "td3bc")
    resumable = run("halfcheetah-medium-lite", "td3bc", "checkpoint.msgpack")
    finished = run("halfcheetah-medium-lite", "iql", "summary.json")
    datasets = ["hopper-medium-lite", "halfcheetah-medium-lite"]
    cleared = budget_study.clear_uncheckpointed(tmp_path, datasets, ["td3bc", "iql"])
    assert cleared == [stage]
    assert not any(
        (stage / name).exists() for name in ("metrics.jsonl", "phase.json", "config.yaml")
    )
    for kept in (other_algo, other_dataset, resumable, finished):
        assert all(
            (kept / name).exists() for name in ("metrics.jsonl", "phase.json", "config.yaml")
        )
