"""The speed, online-overhead and memory benchmark scripts (tiny budgets; d3rlpy optional)."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from o2o import data as datasets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import memory  # noqa: E402
import online_overhead  # noqa: E402
import speed  # noqa: E402


@pytest.fixture(scope="module")
def small_hopper():
    return datasets.load("hopper-medium-lite").select(slice(0, 3000))


def test_speed_o2o_side_writes_json_without_d3rlpy(tmp_path, monkeypatch, small_hopper):
    monkeypatch.setitem(sys.modules, "d3rlpy", None)  # as in CI: d3rlpy is not installed
    out = tmp_path / "speed.json"
    argv = ["--algos", "bc", "--reps", "2", "--seconds", "0.05", "--fused", "5"]
    argv += ["--seeds", "1", "2", "--seed-algos", "bc", "--out", str(out)]
    speed.main(argv, dataset=small_hopper)
    result = json.loads(out.read_text())
    assert result["d3rlpy"] is None and result["batch_size"] == 256
    (row,) = result["rows"]
    assert row["algo"] == "bc" and row["fused"] == 5 and "d3rlpy_updates_per_s" not in row
    assert row["hidden_units"] == {"actor": [256, 256]}
    assert len(row["o2o_updates_per_s_all"]) == 2 and row["o2o_updates_per_s"]["min"] > 0
    # BC's MSE update on an 11-256-256-3 MLP: forward + backward ~ 6 * batch * weights
    weights = 11 * 256 + 256 * 256 + 256 * 3
    assert 0.9 < row["flops_per_update"] / (6 * 256 * weights) < 1.5
    assert row["achieved_flops_per_s"] == pytest.approx(
        row["o2o_updates_per_s"]["median"] * row["flops_per_update"]
    )
    assert [r["seeds"] for r in result["seeds"]] == [1, 2]
    assert result["seeds"][0]["relative_cost"] == 1.0 and result["seeds"][1]["relative_cost"] > 0
    assert "| BC | actor 256×256 | 5 |" in out.with_suffix(".md").read_text()


def test_d3rlpy_side_runs_with_o2o_network_sizes(small_hopper):
    pytest.importorskip("d3rlpy")
    import torch

    sizes = speed.network_sizes(speed.corl_config("awac"))
    assert sizes == {"actor": [256, 256, 256], "critic": [256, 256, 256]}
    timer = speed.D3rlpyTimer("awac", sizes, speed.mdp_dataset(small_hopper), 64)
    assert timer.rate(2) > 0
    policy = timer.algo.impl.modules.policy
    widths = [m.out_features for m in policy.modules() if isinstance(m, torch.nn.Linear)]
    assert widths[:3] == [256, 256, 256]


def test_online_overhead_share_of_a_real_run():
    assert online_overhead.overhead_share({"updates": 3.0, "env": 1.0}) == 0.25
    args = online_overhead.parse_args(
        ["--offline-steps", "50", "--online-steps", "100", "--online-eval-every", "100"]
        + ["--eval-episodes", "1"]
    )
    run = online_overhead.run_once(args, "bc")
    seconds = run["section_seconds"]
    assert {"updates", "act", "env", "buffer", "eval"} <= set(seconds)
    assert 0.0 < run["overhead_share"] < 1.0
    assert run["online_seconds"] == pytest.approx(sum(seconds.values()))


def test_memory_helpers_read_and_reset_the_peak():
    assert memory.status_kib("VmRSS") > 0
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    high = memory.status_kib("VmHWM")
    assert high >= memory.status_kib("VmRSS")
    del block
    if not memory.reset_peak():
        pytest.skip("/proc/self/clear_refs not writable here")
    assert memory.status_kib("VmHWM") < high - 32 * 1024


def test_memory_run_reports_each_phase(small_hopper):
    assert memory.hopper_shaped(small_hopper, 4500).size == 4500
    args = SimpleNamespace(
        dataset="hopper-medium-lite", algo="bc", offline_steps=50, online_steps=100
    )
    row = memory.run_once(args, "vanilla", 5000)
    assert row["dataset_transitions"] == 5000 and row["method"] == "vanilla"
    assert row["peak_before_online_mib"] >= row["rss_at_online_start_mib"] > 0
    assert row["process_peak_mib"] >= row["online_peak_mib"] > 0
