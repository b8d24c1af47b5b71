"""The paired bootstrap of o2o.analysis.statistics.paired_difference, against values derived
by hand."""

import numpy as np
import pytest

from o2o.analysis.statistics import paired_difference


def test_two_seed_bootstrap_has_the_enumerated_distribution():
    # One task, two seeds, differences d = (1, 5). Resampling two indices from {0, 1}: the mean
    # difference is 1 (p = 1/4), 3 (p = 1/2) or 5 (p = 1/4); the percentile interval is [1, 5].
    result = paired_difference({"t": np.array([11.0, 25.0])}, {"t": np.array([10.0, 20.0])})
    assert result.difference.point == pytest.approx(3.0)
    assert (result.difference.low, result.difference.high) == (1.0, 5.0)
    # relative: 100 · 3 / 15
    assert result.relative.point == pytest.approx(20.0)
    assert (result.wins, result.pairs, result.runs) == (2, 2, 2)
    assert (result.probability.point, result.probability.low) == (1.0, 1.0)


def test_pairing_cancels_the_spread_the_seeds_share():
    reference = np.array([0.0, 40.0, 80.0, 10.0, 60.0])
    result = paired_difference({"t": reference + 2.0}, {"t": reference}, reps=2000)
    # every pair differs by exactly 2: the paired interval is a point, though the scores spread
    assert result.difference.low == pytest.approx(2.0)
    assert result.difference.high == pytest.approx(2.0)
    assert result.wins == 5


def test_tasks_are_resampled_separately_and_averaged():
    method = {"a": np.array([1.0, 1.0, 1.0]), "b": np.array([3.0, 3.0, 3.0, 9.0])}
    reference = {"a": np.zeros(3), "b": np.zeros(3), "c": np.zeros(3)}
    result = paired_difference(method, reference)
    assert result.tasks == ("a", "b")
    assert result.runs == 3  # b's fourth seed has no pair
    assert result.relative is None  # the reference scores 0
    assert result.difference.point == pytest.approx(2.0)
    assert (result.difference.low, result.difference.high) == (pytest.approx(2.0),) * 2


def test_no_shared_task_gives_none():
    assert paired_difference({"a": np.ones(3)}, {"b": np.ones(3)}) is None


def test_interval_covers_the_true_mean_difference_at_about_95_percent():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(200):
        base = rng.normal(50, 20, size=10)
        result = paired_difference(
            {"t": base + 3.0 + rng.normal(0, 2, 10)}, {"t": base}, reps=1000, seed=trial
        )
        covered += result.difference.low <= 3.0 <= result.difference.high
    # percentile bootstrap with 10 pairs under-covers a little: 0.88-0.96 is its known range
    assert 0.85 <= covered / 200 <= 0.98


def test_probability_of_improvement_counts_paired_wins_and_half_ties():
    # Seeds: win, tie, loss, win -> P = (1 + 0.5 + 0 + 1) / 4. Resampling 4 of the 4 outcomes
    # {1, 0.5, 0, 1}: the smallest possible mean is 0 (all draws the loss), the largest 1.
    result = paired_difference(
        {"t": np.array([2.0, 5.0, 1.0, 9.0])}, {"t": np.array([1.0, 5.0, 3.0, 0.0])}, reps=4000
    )
    assert result.probability.point == pytest.approx(2.5 / 4)
    assert 0.0 <= result.probability.low < 2.5 / 4 < result.probability.high <= 1.0
    assert result.wins == 2


def test_probability_averages_tasks_not_pooled_seeds():
    # Task a: 1 of 1 wins; task b: 0 of 1 wins. Per-task average 0.5 (pooled would also be
    # 0.5), and with one seed per task no resampling can move it.
    result = paired_difference(
        {"a": np.array([1.0]), "b": np.array([0.0])}, {"a": np.array([0.0]), "b": np.array([1.0])}
    )
    assert (result.probability.low, result.probability.point, result.probability.high) == (
        0.5,
        0.5,
        0.5,
    )


def test_unpaired_arms_are_resampled_independently():
    # One task, seeds x = (2, 4), y = (0, 2): with independent draws each arm's resampled mean
    # takes its low / middle / high value with p = 1/4, 1/2, 1/4, so the difference ranges
    # over (3 - 1) ± 2: from 0 to 4; paired, every pair differs by 2 and the interval is a point.
    x, y = {"t": np.array([2.0, 4.0])}, {"t": np.array([0.0, 2.0])}
    paired = paired_difference(x, y, reps=4000)
    unpaired = paired_difference(x, y, reps=4000, paired=False)
    assert (paired.difference.low, paired.difference.high) == (2.0, 2.0)
    assert unpaired.difference.point == pytest.approx(2.0)
    assert (unpaired.difference.low, unpaired.difference.high) == (0.0, 4.0)
    assert not unpaired.paired


def test_unpaired_probability_compares_every_pair_of_seeds():
    # x = (1, 3), y = (0, 2, 3): of the 2 x 3 pairs (seeds cut to 2: y = (0, 2)) x wins
    # 1>0, 3>0, 3>2 and loses 1<2: P = 3/4, 3 wins of 4 pairs.
    result = paired_difference(
        {"t": np.array([1.0, 3.0])}, {"t": np.array([0.0, 2.0, 3.0])}, paired=False
    )
    assert result.probability.point == pytest.approx(0.75)
    assert (result.wins, result.pairs) == (3, 4)
    # a tie counts half: x = (1, 2) against y = (2, 2) -> (0 + 0 + 0.5 + 0.5) / 4
    tie = paired_difference({"t": np.array([1.0, 2.0])}, {"t": np.array([2.0, 2.0])}, paired=False)
    assert tie.probability.point == pytest.approx(0.25)
