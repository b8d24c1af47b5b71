"""Budget study (issue 15, item 1): at which offline step do the score and the critic's Q plateau?

    taskset -c 1 .venv/bin/python benchmarks/budget_study.py run        # resumable; re-run after a kill
    .venv/bin/python benchmarks/budget_study.py analyze                 # table, JSON, figures

``run`` runs the study's stages in order, each a published suite run by ``o2o bench run``
(which skips finished configurations and resumes interrupted ones from their checkpoint):

1. ``cql-n2``, ``cql-n10``: ``budget-study-cql-actions.yaml`` with ``cql_n_actions`` 2 and 10
   (CQL, hopper-medium-lite, 3k steps): what the number of sampled actions changes;
2. ``curves``: ``budget-study.yaml`` (IQL, TD3+BC, AWAC, 100k offline steps);
3. ``curves-cql``: ``budget-study-cql.yaml`` (CQL, Cal-QL), when that file exists.

Datasets that are not made yet (walker2d-medium-lite: ``o2o datasets make
walker2d-medium-lite``) are left out of a stage with a note, and run once they exist.
``--code COMMIT`` runs o2o as it was at that commit (``git archive`` of its ``o2o/`` into
``~/.cache/o2o/budget-study-code/<commit>``, first on ``PYTHONPATH``) instead of the working
tree, so that work in progress on the library does not leak into a long study; every stage
launch is logged with its code version in ``benchmarks/results/budget-study/launches.jsonl``.

Checkpoints (``*.msgpack``) are not committed; a run directory committed mid-run (config and
metrics, no checkpoint) would restart from step 0 and append its rows again, so ``run`` first
clears the rows of such a directory (they are reproduced: training and evaluation are
seeded).

``analyze`` reads every run directory, and per (algorithm, dataset):

* **score plateau**: the seed-mean normalized score at each evaluation, smoothed with a
  trailing mean over ``WINDOW`` evaluations; its final level F is the mean of the raw
  seed-mean scores over the last ``FINAL_FRACTION`` of the evaluations (at least
  ``WINDOW``). The plateau step is the first evaluation step from which *every* smoothed value
  stays within ``max(SCORE_ABS_TOL, SCORE_REL_TOL·|F|)`` of F. It counts as *reached* only if
  the level then held for at least ``HOLD_FRACTION`` of the horizon (step ≤ (1 −
  HOLD_FRACTION) · horizon); otherwise the table says "> horizon".
* **Q plateau**: the same rule on ``train/q_mean`` (the critics' mean Q on the batch's data
  actions, averaged over the last fused chunk of updates before the evaluation and over
  seeds), tolerance ``Q_REL_TOL``·|F|.
* **Q against the data's Monte-Carlo returns**, both in the agent's reward convention
  (``preprocess_for``: IQL's 1000/(max − min) return scaling on locomotion) and discount:
  the mean over the data's rows of the discounted return-to-go (``Dataset.mc_returns``, no
  bootstrap at a timeout), and a *tail-corrected* mean in which every row of an episode cut by a
  timeout (or the end of the file) adds γ^(rows left) · r̄/(1 − γ), r̄ that episode's mean
  reward: what the behaviour policy would have collected past the cut, which the critic
  bootstraps. Q/MC is the critic's final level over that mean.
* **trained budget** = the later of the two plateau steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
SUITES = ROOT / "benchmarks" / "suites"
RESULTS = ROOT / "benchmarks" / "results" / "budget-study"
REPORT = ROOT / "benchmarks" / "reports" / "budget-study"

# The plateau rule (documented in the module docstring and in BENCHMARKS.md).
WINDOW = 3  # trailing mean over this many evaluations
FINAL_FRACTION = 0.2  # final level: mean over the last 20% of the evaluations
HOLD_FRACTION = 0.25  # a plateau must hold for at least the last 25% of the horizon
SCORE_ABS_TOL = 3.0  # normalized-score points
SCORE_REL_TOL = 0.10
Q_REL_TOL = 0.05


@dataclass(frozen=True)
class Stage:
    name: str
    suite: str  # file in benchmarks/suites
    out: str  # below RESULTS
    agent_set: tuple[str, ...] = ()


STAGES = (
    Stage("cql-n2", "budget-study-cql-actions.yaml", "cql-n-actions/n2", ("cql.cql_n_actions=2",)),
    Stage(
        "cql-n10", "budget-study-cql-actions.yaml", "cql-n-actions/n10", ("cql.cql_n_actions=10",)
    ),
    Stage("curves", "budget-study.yaml", "curves"),
    Stage("curves-cql", "budget-study-cql.yaml", "curves"),
)


# --- running ---------------------------------------------------------------------------------
def present(dataset: str) -> bool:
    from o2o.data import resolve_path
    from o2o.errors import O2OError

    try:
        path = resolve_path(dataset)
    except O2OError:
        return False
    return path is not None and path.exists()


def clear_uncheckpointed(out: Path, datasets: list[str], algos: list[str]) -> list[Path]:
    """The stage's run directories (``datasets`` × ``algos``) with rows but neither a summary
    nor a checkpoint (committed mid-run): clear their rows so the restart from step 0 does not
    append them a second time, and their config.yaml, so the restart runs under the current
    code's configuration (a field added since would otherwise refuse it). Other stages' runs
    in the same directory are left alone."""
    cleared = []
    for config in sorted(out.glob("*/*/*/config.yaml")):
        run = config.parent
        if run.parent.parent.name not in datasets or run.parent.name not in algos:
            continue
        if (run / "summary.json").exists():
            continue
        if (run / "checkpoint.msgpack").exists() or (run / "offline.msgpack").exists():
            continue
        for name in ("metrics.jsonl", "phase.json", "config.yaml"):
            (run / name).unlink(missing_ok=True)
        cleared.append(run)
    return cleared


def code_snapshot(commit: str) -> tuple[Path, str]:
    """``o2o/`` at ``commit``, extracted once; (directory, full commit hash)."""
    full = subprocess.check_output(["git", "rev-parse", commit], cwd=ROOT, text=True).strip()
    target = Path.home() / ".cache" / "o2o" / "budget-study-code" / full
    if not (target / "o2o" / "__init__.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.check_output(["git", "archive", full, "o2o"], cwd=ROOT)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target, full


_LEFT_OUT: dict[str, list[str]] = {}


def stage_missing(stage: Stage, now: bool = False) -> list[str]:
    """Datasets the stage left out at its launch (``now``: those still missing)."""
    left_out = _LEFT_OUT.get(stage.name, [])
    return [d for d in left_out if not present(d)] if now else left_out


def run_stage(
    stage: Stage,
    dry_run: bool = False,
    code: str | None = None,
    algos: list[str] | None = None,
) -> int:
    suite_path = SUITES / stage.suite
    if not suite_path.exists():
        print(f"[{stage.name}] {suite_path.relative_to(ROOT)} does not exist yet: skipped")
        return 0
    raw = yaml.safe_load(suite_path.read_text())
    if algos is not None:
        raw["algos"] = [a for a in raw["algos"] if a in algos]
        if not raw["algos"]:
            return 0
    missing = [d for d in raw["datasets"] if not present(d)]
    raw["datasets"] = [d for d in raw["datasets"] if d not in missing]
    _LEFT_OUT[stage.name] = missing
    for dataset in missing:
        print(f"[{stage.name}] {dataset} not made yet (o2o datasets make {dataset}): left out")
    if not raw["datasets"]:
        return 0
    out = RESULTS / stage.out
    if not dry_run:
        for run in clear_uncheckpointed(out, raw["datasets"], raw["algos"]):
            print(f"[{stage.name}] {run.relative_to(ROOT)}: no checkpoint, restarting from step 0")
    env, cwd = dict(os.environ), ROOT
    version = "working tree"
    if code is not None:
        cwd, version = code_snapshot(code)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH")]))
        # The shared reference files sit next to the repository, not next to the snapshot.
        env.setdefault("O2O_REFERENCE_DIR", str(ROOT.parent / "shared" / "datasets"))
    with tempfile.TemporaryDirectory() as tmp:
        filtered = Path(tmp) / stage.suite
        filtered.write_text(yaml.safe_dump(raw, sort_keys=False))
        command = [sys.executable, "-m", "o2o.cli", "bench", "run", str(filtered)]
        command += ["--out", str(out), "--quiet"]
        if stage.agent_set:
            command += ["--agent-set", *stage.agent_set]
        if dry_run:
            command.append("--dry-run")
        print(f"[{stage.name}] ({version}) {' '.join(command[1:])}", flush=True)
        if not dry_run:
            RESULTS.mkdir(parents=True, exist_ok=True)
            launch = {
                "stage": stage.name,
                "code": version,
                "datasets": raw["datasets"],
                "algos": raw["algos"],
                "agent_set": list(stage.agent_set),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "affinity": sorted(os.sched_getaffinity(0)),
            }
            with open(RESULTS / "launches.jsonl", "a") as log:
                log.write(json.dumps(launch) + "\n")
        return subprocess.call(command, cwd=cwd, env=env)


# --- analysis --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plateau:
    step: int | None  # first evaluation step of the plateau
    final: float  # final level F
    tolerance: float
    reached: bool  # held for at least HOLD_FRACTION of the horizon

    def cell(self, horizon: int) -> str:
        return f"{self.step / 1000:g}k" if self.reached else f"> {horizon / 1000:g}k"


def trailing_mean(values: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Mean of the last ``window`` values up to each index (fewer at the start)."""
    values = np.asarray(values, float)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    index = np.arange(1, values.size + 1)
    lo = np.maximum(index - window, 0)
    return (sums[index] - sums[lo]) / (index - lo)


def plateau(
    steps: np.ndarray,
    values: np.ndarray,
    rel_tol: float,
    abs_tol: float = 0.0,
    window: int = WINDOW,
    final_fraction: float = FINAL_FRACTION,
    hold_fraction: float = HOLD_FRACTION,
) -> Plateau:
    """The plateau rule of the module docstring."""
    steps, values = np.asarray(steps), np.asarray(values, float)
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if values.size == 0:
        return Plateau(None, float("nan"), float("nan"), False)
    tail = min(values.size, max(window, math.ceil(final_fraction * values.size)))
    final = float(values[-tail:].mean())
    tolerance = max(abs_tol, rel_tol * abs(final))
    outside = np.abs(trailing_mean(values, window) - final) > tolerance
    first = int(np.flatnonzero(outside)[-1]) + 1 if outside.any() else 0
    if first >= values.size:  # the last smoothed value is off the final level
        return Plateau(None, final, tolerance, False)
    step = int(steps[first])
    reached = step <= (1.0 - hold_fraction) * int(steps[-1])
    return Plateau(step, final, tolerance, reached)


def mc_reference(dataset: Any, scale: float, shift: float, discount: float) -> dict[str, float]:
    """Mean discounted Monte-Carlo return-to-go of the data's rows in the reward convention
    r' = scale·r + shift: as recorded (``mc_mean``) and tail-corrected past timeouts and an
    unfinished last episode (``mc_mean_tail``; see the module docstring)."""
    rewards = (dataset.rewards.astype(np.float64) * scale + shift).astype(np.float32)
    converted = dataclasses.replace(dataset, rewards=rewards)
    returns = converted.mc_returns(discount).astype(np.float64)
    corrected = returns.copy()
    cut_rows = 0
    for start, end in zip(converted.episode_starts, converted.episode_ends, strict=True):
        if converted.terminals[end - 1]:
            continue  # a true end: nothing past it
        left = end - np.arange(start, end)  # rows from each row to the cut
        corrected[start:end] += discount**left * rewards[start:end].mean() / (1.0 - discount)
        cut_rows += end - start
    return {
        "reward_scale": float(scale),
        "reward_shift": float(shift),
        "discount": float(discount),
        "mc_mean": float(returns.mean()),
        "mc_mean_tail": float(corrected.mean()),
        "rows_in_cut_episodes": float(cut_rows / converted.size),
    }


def reward_transform(
    algo: str, dataset: Any, reward_convention: str = "auto"
) -> tuple[float, float, str]:
    """(scale, shift, convention name) of the reward transform the pipeline applies for
    ``algo`` on ``dataset``: the library's own ``preprocess_for``, called with the algorithm
    name (o2o up to fa38307) or with its default agent config (later signature)."""
    from o2o.experiment.pipeline import preprocess_for

    settings = SimpleNamespace(reward_convention=reward_convention, normalize_states=False)
    first = next(iter(inspect.signature(preprocess_for).parameters))
    if first == "algo":
        preprocess, convention = preprocess_for(algo, dataset, settings)
    else:
        from o2o.agents import domain_config

        names = f"{dataset.name} {dataset.env_id or ''}".lower()
        agent = domain_config(algo, "maze" if "maze" in names else "locomotion")
        preprocess, convention = preprocess_for(agent, dataset, settings)
    return float(preprocess.reward_scale), float(preprocess.reward_shift), str(convention)


def dataset_reference(algo: str, config: dict[str, Any]) -> dict[str, Any]:
    from o2o import data

    pipeline = config["pipeline"]
    dataset = data.load(pipeline["dataset"])
    scale, shift, convention = reward_transform(
        algo, dataset, pipeline.get("reward_convention", "auto")
    )
    discount = float(config["agent"].get("discount", 0.99))
    return {"reward_convention": convention, **mc_reference(dataset, scale, shift, discount)}


def clean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Offline rows in step order; a restart's rows replace earlier ones at the same steps."""
    kept: list[dict[str, Any]] = []
    for row in rows:
        if row.get("phase", "online") != "offline":
            continue
        while kept and kept[-1]["step"] >= row["step"]:
            kept.pop()
        kept.append(row)
    return kept


def analyze_run(run: Any, reference_cache: dict) -> dict[str, Any]:
    rows = clean_rows(run.rows)
    steps = np.array([r["step"] for r in rows])
    seed_scores = np.array([r["seed_normalized_scores"] for r in rows], float)
    scores = seed_scores.mean(axis=1)
    q = np.array([r.get("train/q_mean", np.nan) for r in rows], float)
    horizon = int(run.pipeline["offline_steps"])
    key = (run.dataset, run.algo)
    if key not in reference_cache:
        reference_cache[key] = dataset_reference(run.algo, run.config)
    reference = reference_cache[key]
    score_plateau = plateau(steps, scores, SCORE_REL_TOL, SCORE_ABS_TOL)
    q_plateau = plateau(steps, q, Q_REL_TOL)
    tail = min(len(rows), max(WINDOW, math.ceil(FINAL_FRACTION * len(rows)))) if rows else 0
    final_seed_scores = seed_scores[-tail:].mean(axis=0) if tail else np.array([])
    peak = int(np.argmax(scores)) if rows else None
    finished = run.summary is not None
    trained = None
    if finished and score_plateau.reached and q_plateau.reached:
        trained = max(score_plateau.step, q_plateau.step)
    return {
        "dataset": run.dataset,
        "algo": run.algo,
        "path": str(run.path.relative_to(ROOT)) if run.path.is_relative_to(ROOT) else str(run.path),
        "finished": finished,
        "horizon": horizon,
        "last_step": int(steps[-1]) if rows else 0,
        "seeds": int(run.pipeline.get("seeds", 0)),
        "eval_episodes": int(run.pipeline.get("eval_episodes", 0)),
        "agent_changes": run.agent_changes(),
        "seconds": (run.summary or {}).get("seconds"),
        "steps": steps.tolist(),
        "score": scores.tolist(),
        "seed_scores": seed_scores.tolist(),
        "q_mean": q.tolist(),
        "final_score_per_seed": final_seed_scores.tolist(),
        "peak_score": float(scores[peak]) if peak is not None else None,
        "peak_step": int(steps[peak]) if peak is not None else None,
        "score_plateau": dataclasses.asdict(score_plateau),
        "q_plateau": dataclasses.asdict(q_plateau),
        "reference": reference,
        "q_over_mc": q_plateau.final / reference["mc_mean"],
        "q_over_mc_tail": q_plateau.final / reference["mc_mean_tail"],
        "trained_budget": trained,
    }


def _plateau_cell(entry: dict[str, Any], name: str) -> str:
    p = entry[name]
    if not entry["finished"]:  # provisional: the rule on the rows so far
        so_far = Plateau(**p).cell(entry["last_step"])
        return f"{so_far} so far (unfinished: {entry['last_step'] / 1000:g}k done)"
    return Plateau(**p).cell(entry["horizon"])


ALGO_NAMES = {
    "iql": "IQL",
    "td3bc": "TD3+BC",
    "awac": "AWAC",
    "cql": "CQL",
    "calql": "Cal-QL",
    "bc": "BC",
    "spot": "SPOT",
}


def markdown_table(entries: list[dict[str, Any]]) -> str:
    lines = [
        "| algorithm | dataset | horizon ×seeds | final score | peak (step) | score plateau "
        "| final Q | data MC (tail-corr.) | Q/MC | Q plateau | trained budget |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        seeds = np.asarray(e["final_score_per_seed"])
        changes = ", ".join(f"{k}={v}" for k, v in e["agent_changes"].items())
        algo = ALGO_NAMES.get(e["algo"], e["algo"]) + (f" ({changes})" if changes else "")
        ref = e["reference"]
        if not e["finished"]:
            trained = "—"
        elif e["trained_budget"] is not None:
            trained = f"**{e['trained_budget'] / 1000:g}k**"
        else:
            trained = f"> {e['horizon'] / 1000:g}k"
        lines.append(
            f"| {algo} | {e['dataset']} | {e['horizon'] / 1000:g}k ×{e['seeds']} "
            f"| {seeds.mean():.1f} ± {seeds.std():.1f} "
            f"| {e['peak_score']:.1f} ({e['peak_step'] / 1000:g}k) "
            f"| {_plateau_cell(e, 'score_plateau')} "
            f"| {e['q_plateau']['final']:.1f} "
            f"| {ref['mc_mean']:.1f} ({ref['mc_mean_tail']:.1f}) "
            f"| {e['q_over_mc']:.2f} ({e['q_over_mc_tail']:.2f}) "
            f"| {_plateau_cell(e, 'q_plateau')} | {trained} |"
        )
    return "\n".join(lines)


def plot_dataset(dataset: str, entries: list[dict[str, Any]], path: Path) -> Path:
    """Two panels: normalized score (mean ± std over seeds) and Q / tail-corrected MC return,
    with each algorithm's plateau steps marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), dpi=110)
    for e in entries:
        steps = np.asarray(e["steps"]) / 1000
        if steps.size == 0:
            continue
        seed_scores = np.asarray(e["seed_scores"])
        mean, std = seed_scores.mean(axis=1), seed_scores.std(axis=1)
        name = ALGO_NAMES.get(e["algo"], e["algo"])
        (line,) = left.plot(steps, mean, marker="o", markersize=2.5, label=name)
        color = line.get_color()
        left.fill_between(steps, mean - std, mean + std, color=color, alpha=0.15)
        ratio = np.asarray(e["q_mean"], float) / e["reference"]["mc_mean_tail"]
        right.plot(steps, ratio, marker="o", markersize=2.5, color=color, label=name)
        for axis, key in ((left, "score_plateau"), (right, "q_plateau")):
            p = e[key]
            if e["finished"] and p["reached"]:
                axis.axvline(p["step"] / 1000, color=color, linestyle=":", linewidth=1.2)
    right.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    right.text(
        0.01,
        1.0,
        "data's MC return (tail-corrected)",
        va="bottom",
        color="grey",
        fontsize=8,
        transform=right.get_yaxis_transform(),
    )
    left.set_ylabel("normalized score (mean ± std over seeds)")
    right.set_ylabel("critic Q on data / data MC return-to-go")
    for axis in (left, right):
        axis.set_xlabel("offline gradient steps (thousands)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    left.set_title(f"{dataset}: score (dotted: plateau step)", fontsize=10)
    right.set_title(f"{dataset}: critic Q on data ÷ data MC return", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def probe_table(probes: dict[str, Any]) -> str:
    """CQL with 2 vs 10 sampled actions: per seed and mean, at the probe's last evaluation."""
    lines = [
        "| cql_n_actions | steps ×seeds | score per seed (last eval) | mean | mean of last 3 evals "
        "| Q on data | cql_gap | CQL loss | steps/s (seeds vmapped, evals incl.) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, run in probes.items():
        rows = clean_rows(run.rows)
        if not rows:
            continue
        last = rows[-1]
        scores = np.asarray(last["seed_normalized_scores"])
        recent = np.mean([np.mean(r["seed_normalized_scores"]) for r in rows[-WINDOW:]])
        seeds = int(run.pipeline["seeds"])
        rate = last["step"] / last["wall_time"] if last["wall_time"] else float("nan")
        status = "" if run.summary is not None else " (running)"
        lines.append(
            f"| {label}{status} | {last['step'] / 1000:g}k ×{seeds} "
            f"| {' / '.join(f'{s:.1f}' for s in scores)} | {scores.mean():.1f} | {recent:.1f} "
            f"| {last.get('train/q_mean', float('nan')):.1f} "
            f"| {last.get('train/cql_gap', float('nan')):.2f} "
            f"| {last.get('train/cql_loss', float('nan')):.2f} | {rate:.2f} |"
        )
    return "\n".join(lines)


def plot_probe(probes: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for label, run in probes.items():
        rows = clean_rows(run.rows)
        steps = np.array([r["step"] for r in rows])
        scores = np.array([r["seed_normalized_scores"] for r in rows], float)
        (line,) = left.plot(steps, scores.mean(axis=1), marker="o", label=label)
        for seed in scores.T:
            left.plot(steps, seed, color=line.get_color(), alpha=0.35, linewidth=0.8)
        right.plot(
            steps,
            [r.get("train/q_mean") for r in rows],
            marker="o",
            color=line.get_color(),
            label=label,
        )
    left.set_ylabel("normalized score (thin: seeds)")
    right.set_ylabel("critic Q on data actions")
    for axis in (left, right):
        axis.set_xlabel("offline gradient steps")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle("CQL on hopper-medium-lite: sampled actions in the conservative term", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def analyze(results: Path = RESULTS, report: Path = REPORT) -> dict[str, Any]:
    from o2o.analysis.results import load_results

    cache: dict = {}
    entries = []
    if (results / "curves").is_dir():
        runs = load_results(results / "curves")
        entries = [analyze_run(run, cache) for run in runs if clean_rows(run.rows)]
    order = list(ALGO_NAMES)
    entries.sort(key=lambda e: (order.index(e["algo"]) if e["algo"] in order else 99, e["dataset"]))
    probes = {}
    for n in (2, 10):
        path = results / "cql-n-actions" / f"n{n}"
        if path.is_dir():
            for run in load_results(path):
                probes[f"n={n}"] = run
    report.mkdir(parents=True, exist_ok=True)
    figures = []
    for dataset in sorted({e["dataset"] for e in entries}):
        mine = [e for e in entries if e["dataset"] == dataset]
        figures.append(plot_dataset(dataset, mine, report / f"{dataset}.png"))
    if probes:
        figures.append(plot_probe(probes, report / "cql-n-actions.png"))
    rule = (
        f"Plateau rule: trailing mean over {WINDOW} evaluations; final level F = mean of the last "
        f"{FINAL_FRACTION:.0%} of the evaluations; plateau = first step from which every smoothed "
        f"value stays within max({SCORE_ABS_TOL:g}, {SCORE_REL_TOL:.0%}·|F|) points (score) or "
        f"{Q_REL_TOL:.0%}·|F| (Q) of F; reached only if held for ≥ {HOLD_FRACTION:.0%} of the "
        "horizon, else '> horizon'. Final score: per-seed mean over the final window, mean ± std "
        "over seeds. Q: the critics' mean Q on the batch's data actions (train/q_mean, final "
        "level F); data MC: mean discounted return-to-go of the data's rows in the agent's "
        "reward convention (tail-corrected past timeouts in parentheses). Trained budget = the "
        "later of the two plateau steps."
    )
    markdown = ["# Budget study (issue 15, item 1)", "", markdown_table(entries), "", rule, ""]
    if probes:
        markdown += ["## CQL: cql_n_actions 2 vs 10", "", probe_table(probes), ""]
    markdown += [f"![{f.stem}]({f.name})" for f in figures]
    (report / "budget.md").write_text("\n".join(markdown) + "\n")
    payload = {
        "rule": {
            "window": WINDOW,
            "final_fraction": FINAL_FRACTION,
            "hold_fraction": HOLD_FRACTION,
            "score_abs_tol": SCORE_ABS_TOL,
            "score_rel_tol": SCORE_REL_TOL,
            "q_rel_tol": Q_REL_TOL,
        },
        "entries": entries,
    }
    (report / "budget.json").write_text(json.dumps(payload, indent=1) + "\n")
    print("\n".join(markdown[: -len(figures)] if figures else markdown))
    print(f"wrote {report / 'budget.md'}, budget.json and {len(figures)} figure(s)")
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) the study's stages in order")
    run.add_argument("--stages", nargs="+", choices=[s.name for s in STAGES], default=None)
    run.add_argument(
        "--algos", nargs="+", default=None, help="only these algorithms (the claims' bases first)"
    )
    run.add_argument("--dry-run", action="store_true")
    run.add_argument(
        "--code",
        default=None,
        metavar="COMMIT",
        help="run o2o as of this commit (default: the tree)",
    )
    report = sub.add_parser("analyze", help="plateau table, JSON and figures")
    report.add_argument("--results", type=Path, default=RESULTS)
    report.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    if args.command == "analyze":
        analyze(args.results, args.out)
        return 0
    stages = [s for s in STAGES if args.stages is None or s.name in args.stages]
    status = 0
    for stage in stages:
        status = run_stage(stage, args.dry_run, args.code, args.algos) or status
    # A dataset made while the study ran (walker2d) joins its stages in a second pass.
    for stage in stages:
        if not args.dry_run and stage_missing(stage) and stage_missing(stage, now=True) == []:
            status = run_stage(stage, args.dry_run, args.code, args.algos) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
