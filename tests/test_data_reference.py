"""The shared reference lite files load through the registry and match their README."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from o2o.data import env_id_for, load, normalized_score, score_reference

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
pytestmark = pytest.mark.skipif(
    not (SHARED / "README.md").exists(), reason="../shared/datasets not present"
)


def readme_rows() -> list[dict]:
    """The README's per-file table rows (file, N, episodes, mean/min/max return, two
    normalized scores, terminals, timeouts)."""
    rows = []
    pattern = re.compile(r"^\| (\S+-lite-v0\.hdf5) \|(.+)\|\s*$")
    for line in (SHARED / "README.md").read_text().splitlines():
        match = pattern.match(line)
        if match:
            cells = [c.strip() for c in match.group(2).split("|")]
            rows.append(
                dict(
                    file=match.group(1),
                    n=int(cells[0]),
                    episodes=int(cells[1]),
                    mean=float(cells[2]),
                    min=float(cells[3]),
                    max=float(cells[4]),
                    norm_lite=float(cells[5]),
                    norm_d4rl=float(cells[6]),
                    terminals=int(cells[7]),
                    timeouts=int(cells[8]),
                )
            )
    return rows


ROWS = readme_rows() if (SHARED / "README.md").exists() else []


def test_readme_lists_all_ten_files():
    assert len(ROWS) == 10


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_reference_file_matches_readme(row):
    name = row["file"].removesuffix(".hdf5")  # e.g. hopper-medium-lite-v0, a registered alias
    data = load(name)
    assert Path(data.metadata["source"]).parent == SHARED
    assert data.metadata["env_checked"] is True
    returns = data.episode_returns()
    assert data.size == row["n"]
    assert data.num_episodes == row["episodes"]
    assert (
        int(data.terminals.sum()) == row["terminals"]
        and int(data.timeouts.sum()) == row["timeouts"]
    )
    for key, value in (("mean", returns.mean()), ("min", returns.min()), ("max", returns.max())):
        assert round(float(value), 1) == pytest.approx(row[key], abs=0.051), key
    lite = score_reference(data)
    assert lite.provenance == "dataset"
    assert round(lite.normalize(returns.mean()), 1) == pytest.approx(row["norm_lite"], abs=0.051)
    d4rl = normalized_score(data, returns.mean(), reference="d4rl")
    assert round(d4rl, 1) == pytest.approx(row["norm_d4rl"], abs=0.051)
    assert (
        env_id_for(data)
        == {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5"}[name.split("-")[0]]
    )


def test_names_with_and_without_version_resolve_to_the_same_file():
    a, b = load("hopper-expert-lite"), load("hopper-expert-lite-v0")
    assert a.metadata["source"] == b.metadata["source"]
    np.testing.assert_array_equal(a.rewards, b.rewards)


def test_score_by_name_reads_metadata_only():
    info = score_reference("halfcheetah-medium-lite")
    assert info.provenance == "dataset"
    assert info.ref_min == pytest.approx(-288.75, abs=0.01) and info.ref_max == pytest.approx(
        8048.15, abs=0.01
    )
    assert normalized_score("halfcheetah-medium-lite", info.ref_max) == pytest.approx(100.0)


def test_medium_replay_ends_mid_episode_and_mc_returns_are_finite():
    data = load("hopper-medium-replay-lite")
    assert not data.episode_complete[-1]
    batch = data.to_transition(discount=0.99)
    assert np.isfinite(batch.mc_returns).all()
    # an episode's last row has only its own reward; a first row is the discounted sum
    last_rows = data.episode_ends - 1
    np.testing.assert_allclose(batch.mc_returns[last_rows], data.rewards[last_rows], rtol=1e-6)
    start, end = data.episode_starts[5], data.episode_ends[5]
    direct = np.sum(data.rewards[start:end].astype(np.float64) * 0.99 ** np.arange(end - start))
    assert batch.mc_returns[start] == pytest.approx(direct, rel=1e-5)
