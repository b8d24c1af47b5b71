"""Coverage of the visited states (o2o.experiment.visited) against brute-force loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from o2o.experiment.visited import coverage_metrics, grid_cells, knn_radius, recent_rows


def brute_knn_radius(points: np.ndarray, k: int) -> float:
    radii = []
    for i, p in enumerate(points):
        d = sorted(math.dist(p, q) for j, q in enumerate(points) if j != i)
        radii.append(d[k - 1])
    return float(np.mean(radii))


def test_knn_radius_matches_a_loop_including_duplicated_points():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 3))
    points[5] = points[6]  # a duplicate: distance 0 counts as a neighbour
    assert knn_radius(points, k=3) == pytest.approx(brute_knn_radius(points, 3), rel=1e-9)


def test_knn_radius_on_a_hand_made_line():
    # Points 0, 1, 2, 3 on a line: 2nd neighbours at distances 2, 1, 1, 2.
    points = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert knn_radius(points, k=2) == pytest.approx(1.5)
    assert knn_radius(points, k=4) is None


def test_knn_radius_subsamples_evenly_and_grows_with_spread():
    rng = np.random.default_rng(1)
    narrow = rng.normal(scale=0.1, size=(5000, 4))
    wide = narrow * 10
    assert knn_radius(wide) == pytest.approx(10 * knn_radius(narrow), rel=1e-9)
    every_other = narrow[np.linspace(0, 4999, 2048).round().astype(int)]
    assert knn_radius(narrow) == pytest.approx(knn_radius(every_other, subsample=10**6))


def test_grid_cells_counts_distinct_cells_by_hand():
    points = np.array([[0.1, 0.2], [0.9, 0.9], [1.1, 0.0], [-0.1, 0.5], [-0.5, 0.6]])
    # cells (0,0), (0,0), (1,0), (-1,0), (-1,0)
    assert grid_cells(points) == 3
    assert grid_cells(points, cell=10.0) == 2  # (0,0) and (-1,0)
    assert grid_cells(np.zeros((0, 2))) == 0


def test_recent_rows_of_a_ring_buffer():
    # Offline rows 0..5 first, then 3 online rows: the newest 3 are 6, 7, 8.
    assert recent_rows(size=9, pointer=9 % 10, capacity=10, count=3).tolist() == [6, 7, 8]
    # A wrapped ring: pointer 2 after 12 writes into capacity 10.
    assert recent_rows(size=10, pointer=2, capacity=10, count=4).tolist() == [8, 9, 0, 1]
    assert recent_rows(size=10, pointer=2, capacity=10, count=50).tolist() == [
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        0,
        1,
    ]


def test_coverage_metrics_average_over_seeds():
    grid = np.array(list(itertools.product(range(4), range(4))), float)
    row = coverage_metrics([grid, grid[:12] * 0.1])
    assert row["seed_coverage/cells"] == [16, 1]
    assert row["coverage/cells"] == 8.5
    assert row["seed_coverage/knn_radius"][0] == pytest.approx(brute_knn_radius(grid, 10))
    assert "coverage/knn_radius" not in coverage_metrics([grid[:5]])


def test_the_online_loop_measures_only_the_states_visited_online():
    from types import SimpleNamespace

    import jax.numpy as jnp

    from o2o.core import buffers as buf
    from o2o.experiment.online import OnlineTrainer

    # A union buffer per seed: 20 offline rows far away, then 3 warm-up + 12 budget steps.
    capacity, offline, visited = 40, 20, 15
    observations = np.full((2, capacity, 2), 100.0)
    online = np.stack([np.arange(visited) * 0.0, np.arange(visited) * 1.0], axis=1)
    observations[:, offline : offline + visited] = online
    data = buf.create_buffer(capacity, 2, 1).data._replace(observations=jnp.asarray(observations))
    buffer = buf.ReplayBuffer(
        data=data,
        size=jnp.full(2, offline + visited, jnp.int32),
        pointer=jnp.full(2, offline + visited, jnp.int32),
    )
    loop = SimpleNamespace(write_to="replay", config=SimpleNamespace(warmup_steps=3))
    row = OnlineTrainer.coverage(loop, {"buffers": {"replay": buffer}, "step": visited - 3})
    assert row["seed_coverage/cells"] == [visited, visited]
    assert row["coverage/knn_radius"] == pytest.approx(brute_knn_radius(online, 10))
