"""Data-coverage analysis on a small synthetic pool whose coverage is known by construction."""

import json

import numpy as np
import pytest

from o2o.analysis.coverage import (
    CoverageConfig,
    coverage_analysis,
    level_coverage,
    subsample,
    write_coverage_report,
)
from o2o.cli import main
from o2o.errors import ConfigError

CENTRES = np.eye(6) * 40.0  # six well-separated blobs in 6-D


def blobs(which: list[int], per_blob: int, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([CENTRES[i] + rng.normal(size=(per_blob, 6)) for i in which])


@pytest.fixture(scope="module")
def pool():
    """'narrow' covers 2 state blobs and 3 action blobs, 'wide' all six of each."""
    rng = np.random.default_rng(0)
    return {
        "narrow": (blobs([0, 1], 75, rng), blobs([0, 1, 2], 50, rng)),
        "wide": (blobs(range(6), 50, rng), blobs(range(6), 50, rng)),
    }


def test_level_coverage_counts_clusters_over_threshold():
    labels = np.array([0, 0, 0, 1, 1, 2, 0, 1, 2, 2, 2])
    owner = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    # level 0 has 3 in cluster 0, 2 in 1, 1 in 2; level 1 has 1, 1, 3
    assert level_coverage(labels, owner, 2, 3, threshold=1) == [2 / 3, 1 / 3]
    assert level_coverage(labels, owner, 2, 3, threshold=0) == [1.0, 1.0]


def test_subsample_keeps_each_levels_share():
    rng = np.random.default_rng(0)
    rows = subsample([1000, 3000], fraction=0.1, max_points=10_000, rng=rng)
    assert [len(r) for r in rows] == [100, 300] and len(set(rows[1])) == 300
    rows = subsample([1000, 3000], fraction=0.5, max_points=400, rng=rng)
    assert [len(r) for r in rows] == [100, 300]


def test_coverage_of_synthetic_pool(pool):
    config = CoverageConfig(
        fraction=1.0,
        max_points=2000,
        clusters=6,
        min_samples=10,
        seeds=2,
        perplexity=20,
        iterations=300,
    )
    result = coverage_analysis(pool, config)
    assert result.points == 450  # the whole pool
    state_mean, state_std = result.summary("states")
    action_mean, _ = result.summary("actions")
    np.testing.assert_allclose(state_mean, [2 / 6, 1.0])
    np.testing.assert_allclose(state_std, [0.0, 0.0])
    np.testing.assert_allclose(action_mean, [3 / 6, 1.0])
    assert result.embedding["states"].shape == (450, 2)


def test_default_threshold_scales_with_subsample():
    assert CoverageConfig().threshold(50_000) == 50
    assert CoverageConfig().threshold(4_000) == 4
    assert CoverageConfig().threshold(100) == 3
    assert CoverageConfig(min_samples=7).threshold(100) == 7
    with pytest.raises(ConfigError, match="fraction"):
        CoverageConfig(fraction=0.0)


def test_coverage_report_files(pool, tmp_path, monkeypatch):
    import o2o.analysis.coverage as coverage

    monkeypatch.setattr(
        coverage, "load_pool", lambda names: {n: pool[n] for n in names if n in pool}
    )
    config = CoverageConfig(
        fraction=0.5, clusters=6, min_samples=5, seeds=1, perplexity=15, iterations=300
    )
    written = write_coverage_report(
        "toy", config, tmp_path, datasets=["narrow", "wide", "absent"], progress=False
    )
    text = (tmp_path / "coverage.md").read_text()
    assert "| narrow | 0.33 ± 0.00 |" in text and "not found: absent" in text
    data = json.loads((tmp_path / "coverage.json").read_text())
    assert data["levels"] == ["narrow", "wide"] and data["points_per_seed"] == 225
    assert (tmp_path / "coverage.png") in written and (
        tmp_path / "coverage.png"
    ).stat().st_size > 1000


def test_coverage_cli_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path))
    assert main(["analyze", "coverage", "walker2d", "--out", str(tmp_path / "c")]) == 2
    assert "no dataset of walker2d found" in capsys.readouterr().err
    assert main(["analyze", "coverage", "hopper", "--fraction", "2"]) == 2
    assert capsys.readouterr().err.strip() == "error: fraction must be in (0, 1], got 2.0"
