"""Suite files: loading, validation (one-line errors), expansion into configurations, the
published suites, and the legacy results runner's configurations."""

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from o2o.cli import main
from o2o.errors import ConfigError
from o2o.experiment.runner import first_difference, scores_text
from o2o.experiment.suite import (
    load_suite,
    parse_agent_sets,
    suite_from_dict,
    with_agent_overrides,
)

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "name": "t",
    "datasets": ["hopper-medium-lite"],
    "algos": ["iql", "cql"],
    "methods": ["vanilla", {"samg": {"cvae_steps": 100, "label": "samg-short"}}],
    "seeds": 2,
    "offline_steps": 2000,
    "online_steps": 4000,
    "eval_episodes": 3,
    "agent_overrides": {"cql": {"cql_n_actions": 2, "critic_hidden_dims": [64, 64]}},
}


def test_expansion_paths_budgets_and_overrides():
    suite = suite_from_dict(BASE)
    configs = suite.configurations()
    assert [str(c.relpath) for c in configs] == [
        "hopper-medium-lite/iql/vanilla",
        "hopper-medium-lite/iql/samg-short",
        "hopper-medium-lite/cql/vanilla",
        "hopper-medium-lite/cql/samg-short",
    ]
    samg = configs[1]
    assert samg.paired and samg.vanilla().relpath == configs[0].relpath
    assert samg.method.options == {"cvae_steps": 100}
    p = samg.pipeline
    # Default schedule: one offline evaluation at its end, four online ones.
    assert (p.offline_eval_every, p.online_eval_every, p.seeds, p.eval_episodes) == (
        2000,
        1000,
        2,
        3,
    )
    cql = configs[2].agent_config()
    assert cql.cql_n_actions == 2 and cql.critic_hidden_dims == (64, 64)
    iql = configs[0].agent_config()
    assert iql.offline_steps == 2000  # budget-fitted cosine schedule
    stored = configs[3].stored_config()
    assert stored["finetune"] == {"name": "samg", "options": {"cvae_steps": 100}}
    assert (
        stored["agent"]["critic_hidden_dims"] == [64, 64]
        and stored["pipeline"]["online_steps"] == 4000
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"algos": ["iql", "nope"]}, "unknown algorithm 'nope'"),
        ({"methods": ["vanilla", "samg-nope"]}, "unknown fine-tuning method 'samg-nope'"),
        ({"methods": [{"samg": {"cvae_stepz": 1}}]}, "has no option 'cvae_stepz'"),
        ({"methods": [{"vanilla": {"x": 1}}]}, "takes no method options"),
        ({"datasets": ["hopper-nope-lite"]}, "unknown dataset"),
        ({"offline_steps": -5}, "offline_steps must be non-negative"),
        ({"online_steps": "lots"}, "'online_steps' must be an integer"),
        ({"seeds": 0}, "seeds must be positive"),
        ({"offline_eval_every": 1500}, "must be a multiple of offline_chunk"),
        ({"agent_overrides": {"cql": {"nope": 1}}}, "CQLConfig has no option 'nope'"),
        ({"agent_overrides": {"dqn": {}}}, "unknown algorithm 'dqn'"),
        ({"pipeline": {"seeds": 3}}, "at the top of the suite"),
        ({"pipeline": {"batch_sizes": 3}}, "PipelineConfig has no option 'batch_sizes'"),
        ({"budget": 3}, "unknown suite field(s) budget"),
        ({"datasets": []}, "'datasets' must be a non-empty list"),
    ],
)
def test_validation_errors(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        suite_from_dict({**BASE, **change})


def test_bad_suite_file_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, "algos": ["iql", "nope"]}))
    assert main(["bench", "run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown algorithm 'nope'") and "\n" not in err
    assert not (tmp_path / "out").exists()  # nothing written
    path.write_text("datasets: [a\n")
    assert main(["bench", "run", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["bench", "run", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "walk", str(path)])
    assert exit_.value.code == 2 and "invalid choice: 'walk'" in capsys.readouterr().err


def test_dry_run_lists_configurations_with_status(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    finished = tmp_path / "out" / "hopper-medium-lite" / "iql" / "vanilla"
    finished.mkdir(parents=True)
    (finished / "config.yaml").write_text("{}")
    (finished / "summary.json").write_text("{}")
    code = main(
        [
            "bench",
            "run",
            str(path),
            "--out",
            str(tmp_path / "out"),
            "--dry-run",
            "--only-algos",
            "iql",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "2 configurations" in out and "1 finished" in out and "1 to run" in out
    assert "hopper-medium-lite/iql/samg-short  [missing]" in out


def test_dry_run_tells_running_from_interrupted_runs(tmp_path, capsys):
    """A started run is ``running`` while a live process holds its lock (with the time since
    its last write) and ``interrupted`` once that process is gone; both name the phase and
    step of its last row. A finished run shows its scores."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    out = tmp_path / "out"
    finished = out / "hopper-medium-lite" / "iql" / "vanilla"
    finished.mkdir(parents=True)
    (finished / "config.yaml").write_text("{}")
    (finished / "summary.json").write_text(
        json.dumps({"offline_scores": [30.0, 40.0], "online_scores": [50.0, 70.0]})
    )
    started = out / "hopper-medium-lite" / "iql" / "samg-short"
    started.mkdir(parents=True)
    (started / "config.yaml").write_text("{}")
    rows = [{"phase": "offline", "step": 1000}, {"phase": "samg_cvae", "step": 2500}]
    (started / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lock = started.parent / ".samg-short.running"
    args = ["bench", "run", str(path), "--out", str(out), "--dry-run", "--only-algos", "iql"]

    lock.write_text(f"{socket.gethostname()} {os.getpid()}")
    assert main(args) == 0
    listed = capsys.readouterr().out
    assert "iql/vanilla  [finished: offline 35.0 -> online 60.0]" in listed
    assert (
        f"iql/samg-short  [running at samg_cvae step 2,500 (pid {os.getpid()} on "
        f"{socket.gethostname()}, last write 0 min ago)]" in listed
    )

    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    lock.write_text(f"{socket.gethostname()} {ended.stdout.strip()}")
    assert main(args) == 0
    assert "iql/samg-short  [interrupted at samg_cvae step 2,500]" in capsys.readouterr().out
    assert scores_text({"offline_scores": [30.0, 40.0], "online_scores": []}) == "offline 35.0"


def test_only_methods(tmp_path, capsys):
    suite = suite_from_dict(BASE)
    assert [
        c.relpath.as_posix() for c in suite.restricted(methods=["samg-short"]).configurations()
    ] == [
        "hopper-medium-lite/iql/samg-short",
        "hopper-medium-lite/cql/samg-short",
    ]
    with pytest.raises(ConfigError, match="no method samg .*its methods: vanilla, samg-short"):
        suite.restricted(methods=["samg"])
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    out = str(tmp_path / "out")
    code = main(["bench", "run", str(path), "--out", out, "--dry-run", "--only-methods", "vanilla"])
    listed = capsys.readouterr().out
    assert code == 0 and "2 configurations" in listed and "samg-short" not in listed


def test_agent_sets():
    assert parse_agent_sets(
        ["cql.cql_n_actions=2", "cql.actor_lr=0.0001", "iql.hidden_dims=[8,8]"]
    ) == {
        "cql": {"cql_n_actions": 2, "actor_lr": 1e-4},
        "iql": {"hidden_dims": [8, 8]},
    }
    assert suite_from_dict(
        {**BASE, "agent_overrides": {"cql": {"actor_lr": "3e-5"}}}
    ).configurations()[2].agent_config().actor_lr == pytest.approx(3e-5)
    for bad in ("cql_n_actions=2", "dqn.x=1", "cql.x"):
        with pytest.raises(ConfigError, match="ALGO.NAME=VALUE"):
            parse_agent_sets([bad])
    suite = with_agent_overrides(suite_from_dict(BASE), {"cql": {"cql_n_actions": 4}})
    assert suite.agent_overrides["cql"] == {"cql_n_actions": 4, "critic_hidden_dims": [64, 64]}


@pytest.mark.parametrize("name", ["quick-cpu", "base", "samg", "ablation", "claims-ocr-o2ppo"])
def test_published_suites_load(name):
    suite = load_suite(ROOT / "benchmarks" / "suites" / f"{name}.yaml")
    assert suite.name == name and suite.configurations()


def test_samg_suite_is_issue5_grid():
    suite = load_suite(ROOT / "benchmarks" / "suites" / "samg.yaml")
    assert set(suite.algos) == {"cql", "awac", "iql", "calql"}
    assert {m.label for m in suite.methods} == {"vanilla", "samg"}
    assert len(suite.configurations()) == 6 * 4 * 2


def test_legacy_runner_writes_the_same_configs(monkeypatch):
    """benchmarks/o2o_results.py's flags map onto the suite files: the configs of results
    made before it became a wrapper still match, so they stay resumable."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("o2o_results", None)
    import o2o_results

    args = argparse.Namespace(
        suite="samg",
        only_datasets=["hopper-medium-lite"],
        only_algos=["iql"],
        offline_steps=5000,
        online_steps=5000,
        seeds=3,
        eval_episodes=5,
        samg_cvae_steps=2000,
        agent_set=["iql.expectile=0.8", "cql.cql_n_actions=2"],
    )
    configs = {c.method.label: c for c in o2o_results.suite_from_args(args).configurations()}
    stored = configs["samg"].stored_config()
    assert stored["pipeline"]["offline_eval_every"] == 5000
    assert stored["pipeline"]["online_eval_every"] == 1250
    assert stored["finetune"] == {"name": "samg", "options": {"cvae_steps": 2000}}
    assert stored["agent"]["expectile"] == 0.8 and stored["agent"]["offline_steps"] == 5000
    legacy = {  # what the script wrote before (benchmarks/results/o2o/.../iql/samg/config.yaml)
        "offline_steps": 5000,
        "online_steps": 5000,
        "data_policy": None,
        "offline_eval_every": 5000,
        "online_eval_every": 1250,
        "eval_episodes": 5,
        "seeds": 3,
        "seed": 0,
        "batch_size": 256,
        "offline_chunk": 1000,
    }
    assert first_difference({k: stored["pipeline"][k] for k in legacy}, legacy) is None


COMMITTED_SUITES = sorted(
    (Path(__file__).resolve().parents[1] / "benchmarks" / "suites").glob("*.yaml")
)


@pytest.mark.parametrize("path", COMMITTED_SUITES, ids=lambda p: p.name)
def test_every_committed_suite_loads(path, monkeypatch):
    """The suite files results are produced from stay valid as the options evolve (the
    datasets themselves are made or found on the machine that runs them)."""
    from o2o.experiment import suite as suite_module

    monkeypatch.setattr(suite_module, "_check_dataset", lambda name: None)
    loaded = suite_module.load_suite(path)
    assert loaded.configurations()


def test_online_algos_pair_every_method_with_the_same_online_algorithm():
    raw = {
        **BASE,
        "algos": ["iql"],
        "methods": ["vanilla", "o2ppo"],
        "online_algos": {"iql": "ppo"},
        "agent_overrides": {"ppo": {"epochs": 3}},
    }
    configs = suite_from_dict(raw).configurations()
    assert [c.relpath.as_posix() for c in configs] == [
        "hopper-medium-lite/iql-ppo/vanilla",
        "hopper-medium-lite/iql-ppo/o2ppo",
    ]
    vanilla, o2ppo = (c.stored_config() for c in configs)
    for stored in (vanilla, o2ppo):
        assert stored["algo"] == "iql" and stored["online_agent"]["algo"] == "ppo"
        assert stored["online_agent"]["agent"]["epochs"] == 3
    assert o2ppo["finetune"]["name"] == "o2ppo" and configs[1].vanilla() == configs[0]
    assert "online_agent" not in suite_from_dict(BASE).configurations()[0].stored_config()
    with pytest.raises(ConfigError, match="online_algos: cql is not one of the suite's algos"):
        suite_from_dict({**raw, "online_algos": {"cql": "sac"}})
    with pytest.raises(ConfigError, match="online_algos: unknown algorithm 'dqn'"):
        suite_from_dict({**raw, "online_algos": {"iql": "dqn"}})


def test_results_label_an_algorithm_handed_to_another_online():
    from o2o.analysis.results import algo_label

    assert algo_label({"algo": "iql"}, {}) == "iql"
    assert (
        algo_label({"algo": "iql", "online_agent": {"algo": "ppo"}}, {"algo": "iql"}) == "iql-ppo"
    )


# Suites and the results directories their committed runs are in (the --out of their header).
COMMITTED_RESULTS = {
    "claims-samg-iql.yaml": "claims-samg",
    "claims-samg-awac.yaml": "claims-samg",
    "claims-samg-maze.yaml": "claims-samg",
    "claims-sera-iql.yaml": "claims-samg",
    "claims-famo2o-iql.yaml": "claims-famo2o",
    "claims-ocr-o2ppo.yaml": "claims-ocr",
    "claims-ocr-o2td3.yaml": "claims-ocr",
    "quick-cpu.yaml": "quick-cpu",
    "budget-study.yaml": "budget-study/curves",
}


@pytest.mark.parametrize("name", sorted(COMMITTED_RESULTS))
def test_committed_results_keep_their_configs(name, monkeypatch):
    """Every committed run of a suite has exactly the config.yaml the suite would write now,
    so ``bench run`` resumes or skips it instead of refusing it (defaults that changed since,
    such as SAMG's cvae_steps fitted to the budget, are pinned in the suite files)."""
    from o2o.experiment import suite as suite_module

    monkeypatch.setattr(suite_module, "_check_dataset", lambda name: None)
    out = ROOT / "benchmarks" / "results" / COMMITTED_RESULTS[name]
    checked = 0
    for config in load_suite(ROOT / "benchmarks" / "suites" / name).configurations():
        path = out / config.relpath / "config.yaml"
        if not path.exists():
            continue
        stored = yaml.safe_load(path.read_text())
        stored.pop("dataset_sha256", None)
        expected = yaml.safe_load(yaml.safe_dump(config.stored_config(), sort_keys=False))
        assert first_difference(stored, expected) is None, path
        checked += 1
    assert checked
