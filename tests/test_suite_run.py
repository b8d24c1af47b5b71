"""Running suites: an interrupted suite resumes only what is missing (and ends where an
uninterrupted one does); a local Ray instance with two workers writes the same result files
as the local runner; a paired method starts from the vanilla run's offline checkpoint."""

import json
from pathlib import Path

import pytest

from o2o.experiment import pipeline as pipeline_module
from o2o.experiment.runner import run_suite
from o2o.experiment.suite import suite_from_dict

pytestmark = pytest.mark.slow

TINY = {
    "name": "tiny",
    "datasets": ["hopper-medium-lite"],
    "algos": ["iql"],
    "methods": [
        "vanilla",
        {
            "samg": {
                "cvae_steps": 20,
                "encoder_hidden_dims": [32, 32],
                "decoder_hidden_dims": [32],
                "buffer_capacity": 1000,
                "seed_transitions": 100,
                "adaptive_every": 0,
            }
        },
    ],
    "seeds": 2,
    "offline_steps": 200,
    "online_steps": 200,
    "offline_eval_every": 100,
    "online_eval_every": 100,
    "eval_episodes": 1,
    "agent_overrides": {"iql": {"hidden_dims": [32, 32]}},
    "pipeline": {"batch_size": 64, "offline_chunk": 100, "update_every": 50},
}
RUN_FILES = {"config.yaml", "metrics.jsonl", "episodes.jsonl", "summary.json", "offline.msgpack"}
TIMING = {"wall_time", "seconds"}  # the only fields that may differ between two runs


def silent(line: str) -> None:
    pass


def untimed(value):
    """``value`` without its timing fields, at any depth (summaries embed final rows)."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMING}
    return value


def rows(path: Path) -> list[dict]:
    return [untimed(json.loads(line)) for line in path.read_text().splitlines()]


def same_results(a: Path, b: Path) -> None:
    """Every file of every run directory: same names, same contents but for timings."""
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for name in names:
        if name.suffix == ".jsonl":
            assert rows(a / name) == rows(b / name), name
        elif name.name == "summary.json":
            left, right = json.loads((a / name).read_text()), json.loads((b / name).read_text())
            assert untimed(left) == untimed(right), name
        elif name.suffix in (".yaml", ".json"):
            assert (a / name).read_text() == (b / name).read_text(), name


@pytest.fixture(scope="module")
def suite():
    return suite_from_dict(TINY)


@pytest.fixture(scope="module")
def reference(suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    outcomes = run_suite(suite, out, progress=False, echo=silent)
    assert [o.status for o in outcomes] == ["ran", "ran"]
    return out


def test_paired_method_starts_from_vanilla_offline_checkpoint(reference):
    vanilla = reference / "hopper-medium-lite" / "iql" / "vanilla"
    samg = reference / "hopper-medium-lite" / "iql" / "samg"
    assert {p.name for p in vanilla.iterdir()} >= RUN_FILES
    assert RUN_FILES | {"finetune.jsonl"} <= {p.name for p in samg.iterdir()}
    offline = [r for r in rows(samg / "metrics.jsonl") if r["phase"] == "offline"]
    assert offline == [r for r in rows(vanilla / "metrics.jsonl") if r["phase"] == "offline"]
    assert (samg / "offline.msgpack").read_bytes() == (vanilla / "offline.msgpack").read_bytes()
    summary = json.loads((samg / "summary.json").read_text())
    assert summary["method"] == "samg" and summary["data_policy"] == "online"
    assert (
        len(summary["online_scores"]) == 2
        and summary["offline_scores"]
        == json.loads((vanilla / "summary.json").read_text())["offline_scores"]
    )


def test_interrupted_suite_resumes_only_what_is_missing(suite, reference, tmp_path, monkeypatch):
    out = tmp_path / "results"
    original_run = pipeline_module.Pipeline.run

    def interrupted_run(
        self, run=None, resume=False, progress=True, offline_states=None, on_eval=None
    ):
        def stop_in_samg(row):
            if self.methods.label == "samg" and row.get("phase") == "online":
                raise KeyboardInterrupt  # a crash right after the first online checkpoint

        return original_run(self, run, resume, progress, offline_states, stop_in_samg)

    monkeypatch.setattr(pipeline_module.Pipeline, "run", interrupted_run)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, out, progress=False, echo=silent)
    monkeypatch.setattr(pipeline_module.Pipeline, "run", original_run)
    samg = out / "hopper-medium-lite" / "iql" / "samg"
    assert not (samg / "summary.json").exists() and (samg / "checkpoint.msgpack").exists()
    vanilla_metrics = out / "hopper-medium-lite" / "iql" / "vanilla" / "metrics.jsonl"
    before = vanilla_metrics.stat().st_mtime_ns

    outcomes = run_suite(suite, out, progress=False, echo=silent)
    assert [(o.config.method.label, o.status) for o in outcomes] == [
        ("vanilla", "skipped"),
        ("samg", "resumed"),
    ]
    assert vanilla_metrics.stat().st_mtime_ns == before  # the finished run was not touched
    same_results(reference, out)  # the resumed run ends where the uninterrupted one did
    again = run_suite(suite, out, progress=False, echo=silent)
    assert [o.status for o in again] == ["skipped", "skipped"]


@pytest.mark.serial  # a local Ray cluster beside the test workers would fight them for cores
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # Ray starts its processes
def test_ray_with_two_workers_writes_the_local_runners_files(suite, reference, tmp_path):
    pytest.importorskip("ray")
    from o2o.experiment.ray_runner import run_suite_on_ray

    out = tmp_path / "ray"
    lines = []
    outcomes = run_suite_on_ray(suite, out, address="local", num_cpus=2, echo=lines.append)
    assert [o.status for o in outcomes] == ["ran", "ran"], lines
    same_results(reference, out)


def test_a_missing_offline_checkpoint_is_trained_again_and_checked(reference, tmp_path):
    """A fresh clone has no checkpoints: the paired method's vanilla offline phase is trained
    again, kept only when its rows equal the recorded ones, and the method runs as before."""
    import shutil

    from o2o.errors import O2OError

    out = tmp_path / "clone"
    shutil.copytree(reference, out)
    vanilla = out / "hopper-medium-lite" / "iql" / "vanilla"
    for checkpoint in out.rglob("*.msgpack"):
        checkpoint.unlink()
    shutil.rmtree(out / "hopper-medium-lite" / "iql" / "samg")
    suite = suite_from_dict(TINY)
    outcomes = run_suite(suite, out, progress=False, echo=silent)
    assert [o.status for o in outcomes] == ["skipped", "ran"]
    assert not (vanilla / ".offline-recreate").exists()
    assert (vanilla / "offline.msgpack").read_bytes() == (
        reference / "hopper-medium-lite" / "iql" / "vanilla" / "offline.msgpack"
    ).read_bytes()
    samg = "hopper-medium-lite/iql/samg/metrics.jsonl"
    assert rows(out / samg) == rows(reference / samg)

    # Recorded rows that training does not reproduce: refused, nothing installed.
    (vanilla / "offline.msgpack").unlink()
    shutil.rmtree(out / "hopper-medium-lite" / "iql" / "samg")
    lines = (vanilla / "metrics.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["normalized_score"] += 1.0
    (vanilla / "metrics.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    with pytest.raises(O2OError, match="row 0: normalized_score"):
        from o2o.experiment.runner import run_configuration

        run_configuration(out, suite.configurations()[1])
    assert not (vanilla / "offline.msgpack").exists()
