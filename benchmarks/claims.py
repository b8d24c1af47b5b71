"""The claims page (issue 15, item 3): each seed paper's qualitative claim beside what o2o
measured, with a paired 95% CI, the budget, and a verdict.

    .venv/bin/python benchmarks/claims.py                  # table, JSON, figure; updates docs/claims.md

Every comparison is paired: in a claims suite every method of a (dataset, base algorithm)
starts from the vanilla run's offline checkpoint of the same seed and makes the same number of
gradient updates, so a seed's difference is the method's effect on one offline agent. Per claim
and base algorithm, ``o2o.analysis.statistics.paired_difference`` gives the mean difference
(normalized-score points; for regret, lower is better) over the tasks and seeds both arms
finished, with a stratified paired-bootstrap 95% interval. The verdict reads the interval of the
*final* score (the last online evaluation: what the papers' tables report); the mean over the
online evaluations (area under the curve) is given beside it, and the paired probability of
improvement: the chance the method beats the reference on a seed (ties half), averaged over
tasks, with its bootstrap interval from the same draws.

Verdicts: **holds** (the interval excludes 0 in the claimed direction), **does not hold** (it
excludes 0 the other way), **not shown** (the interval includes 0: no difference detected at
this budget and seed count), **not testable (ceiling)** (not shown, and the reference already
ends at a normalized score of 100, or a regret of 0, on every seed: nothing is left to improve), **pending** (the
runs have not finished).

A later method issue adds its claims to ``CLAIMS`` (and its suites to ``SUITES``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
REPORT = ROOT / "benchmarks" / "reports" / "claims"
PAGE = ROOT / "docs" / "claims.md"
STUDY = ROOT / "benchmarks" / "reports" / "budget-study" / "budget.json"
BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"

# Result directories of the claims suites, relative to benchmarks/results.
SUITES = ("claims-samg", "claims-famo2o", "claims-ocr", "claims-ocr-maze", "claims-cql")
# The start of fine-tuning OCR-CFT's "no initial drop" is about: this share of the online steps.
EARLY = 0.1


@dataclass(frozen=True)
class Claim:
    paper: str
    statement: str  # the paper's claim, one line
    paper_figure: str  # what the paper measured
    method: str  # the arm the claim favours (a method label)
    reference: str  # the arm it beats
    # "score" (higher is better), "regret" (lower is better) or "early_drop": the lowest
    # score over the evaluations in the first EARLY share of the online steps minus the score
    # after offline (higher is better: 0 or above is no drop).
    metric: str = "score"
    domain: str = "locomotion"  # "locomotion" or "maze": which datasets the claim is about
    suite: str = "claims-samg"  # the results directory (under benchmarks/results) it reads
    # False where the arms share no offline checkpoint (a method that trains from the first
    # offline step): the bootstrap then draws each arm's seeds independently.
    paired: bool = True


CLAIMS = (
    Claim(
        "SAMG",
        "SAMG improves every base algorithm's fine-tuning on average",
        "+10.0% over 15 tasks (Table 1; CQL, AWAC, IQL, Cal-QL; 1M offline + 500k online)",
        "samg",
        "vanilla",
    ),
    Claim(
        "SAMG",
        "the ablation order SAMG > vanilla: the C-VAE weight beats p ≡ 0.5",
        "SAMG +15.3% over SAMG-even (CQL, halfcheetah-medium)",
        "samg",
        "samg-even",
    ),
    Claim(
        "SAMG",
        "the ablation order: the C-VAE weight beats p ~ U(0, 1)",
        "SAMG above SAMG-random (CQL, halfcheetah-medium)",
        "samg",
        "samg-random",
    ),
    Claim(
        "SAMG",
        "the ablation order: vanilla beats p ≡ 0.5 (an uninformed weight hurts)",
        "vanilla above SAMG-even (SAMG +5.2% over vanilla, +15.3% over even)",
        "vanilla",
        "samg-even",
    ),
    Claim(
        "SAMG",
        "the gain comes from the guidance, not from the online-only buffer (control)",
        "implied: the paper attributes the gain to p(s,a)·Q_off",
        "samg",
        "samg-unguided",
    ),
    Claim(
        "SAMG",
        "fine-tuning on online samples only (the offline data dropped) beats offline ∪ online",
        'the paper\'s motivation: "100% online sample utilization" (Introduction)',
        "samg-unguided",
        "vanilla",
    ),
    Claim(
        "SAMG",
        "a C-VAE trained to convergence guides better than one fitted 2,000 steps (control)",
        "implied: the paper trains the C-VAE to a low reconstruction loss",
        "samg",
        "samg-cvae2k",
    ),
    Claim(
        "SAMG",
        "SAMG improves fine-tuning on a sparse-reward maze (IQL)",
        "AntMaze gains in Table 1 (e.g. AWAC umaze-diverse 16.0 → 65.0)",
        "samg",
        "vanilla",
        domain="maze",
    ),
    Claim(
        "SAMG",
        "SAMG lowers cumulative regret on a sparse-reward maze (IQL)",
        "faster, steadier fine-tuning on AntMaze",
        "samg",
        "vanilla",
        metric="regret",
        domain="maze",
    ),
    Claim(
        "SERA",
        "SERA improves the base algorithm's fine-tuning (IQL)",
        "CQL +13%, Cal-QL +8% on average over D4RL tasks; SERA also helps IQL and AWAC",
        "sera",
        "vanilla",
    ),
    Claim(
        "SERA",
        "SERA improves the conservative bases' fine-tuning (CQL, Cal-QL)",
        "CQL +13%, Cal-QL +8% on average over D4RL tasks (Table 1)",
        "sera",
        "vanilla",
        suite="claims-cql",
    ),
    Claim(
        "SERA",
        "conditioning the state entropy on Q(s, a) beats conditioning on V(s) (VCSE)",
        "SERA above VCSE when added to IQL and AWAC",
        "sera",
        "sera-v",
    ),
    Claim(
        "FamO2O",
        "FamO2O improves IQL's fine-tuning (own offline phase per arm)",
        "hopper-m 65.4 → 90.7; locomotion total 718.3 → 772.0 (IQL+FamO2O, 6 seeds, 1M + 1M)",
        "famo2o",
        "vanilla",
        suite="claims-famo2o",
        paired=False,
    ),
    Claim(
        "FamO2O",
        "FamO2O improves IQL's fine-tuning on a sparse-reward maze (own offline phase per arm)",
        "AntMaze gains for IQL+FamO2O (the paper's Table 1)",
        "famo2o",
        "vanilla",
        domain="maze",
        suite="claims-famo2o",
        paired=False,
    ),
    Claim(
        "FamO2O",
        "FamO2O lowers cumulative regret on a sparse-reward maze (IQL, own offline phase per arm)",
        "implied: a state-adaptive balance improves fine-tuning throughout, not only at the end",
        "famo2o",
        "vanilla",
        metric="regret",
        domain="maze",
        suite="claims-famo2o",
        paired=False,
    ),
    Claim(
        "FamO2O",
        "state-adaptive β beats a fixed β (the family acted with IQL's own β = 3)",
        "state-adaptive above fixed balance coefficients (the paper's ablation and its bound)",
        "famo2o",
        "famo2o-fixed",
        suite="claims-famo2o",  # paired: the variant starts from famo2o's offline checkpoint
    ),
    Claim(
        "FamO2O",
        "state-adaptive β beats a β drawn at random per state",
        "implied: the balance model's choice, not β diversity, gives the gain",
        "famo2o",
        "famo2o-random",
        suite="claims-famo2o",  # paired: the variant starts from famo2o's offline checkpoint
    ),
    Claim(
        "FamO2O",
        "state-adaptive β beats a fixed β on a sparse-reward maze (IQL's own maze β = 10)",
        "state-adaptive above fixed balance coefficients (the paper's ablation and its bound)",
        "famo2o",
        "famo2o-fixed",
        domain="maze",
        suite="claims-famo2o",
    ),
    Claim(
        "FamO2O",
        "state-adaptive β beats a β drawn at random per state on a sparse-reward maze",
        "implied: the balance model's choice, not β diversity, gives the gain",
        "famo2o",
        "famo2o-random",
        domain="maze",
        suite="claims-famo2o",
    ),
    *(
        claim
        # O2SAC's reference is its plain control over the cql run (claims-cql.yaml: one CQL
        # offline phase for SERA's and O2SAC's arms), the others' vanilla by online_algos.
        for name, base, pair, online, reference, suite in (
            ("O2PPO", "IQL", "PPO", "250k", "vanilla", "claims-ocr"),
            ("O2TD3", "TD3+BC", "TD3", "100k", "vanilla", "claims-ocr"),
            ("O2SAC", "CQL", "SAC", "100k", "o2sac-plain", "claims-cql"),
        )
        for claim in (
            Claim(
                "OCR-CFT",
                f"{name} beats plain {pair} fine-tuning of the same offline {base} actor",
                f"{name} above the offline-to-online baselines (5 seeds, {online} online steps)",
                name.lower(),
                reference,
                suite=suite,
            ),
            Claim(
                "OCR-CFT",
                f"no initial drop: {name}'s lowest score early in fine-tuning stays nearer the "
                f"offline score than plain {pair}'s",
                "no drop of the score when fine-tuning starts (the paper's curves)",
                name.lower(),
                reference,
                metric="early_drop",
                suite=suite,
            ),
        )
    ),
    # The maze rows at claims-ocr's shared 60k offline steps sit at the success ceiling; the
    # maze claims read claims-ocr-maze (IQL at 40k, below the ceiling).
    *(
        Claim(
            "OCR-CFT",
            statement,
            "AntMaze among the paper's tasks (IQL initialisation)",
            "o2ppo",
            "vanilla",
            metric=metric,
            domain="maze",
            suite="claims-ocr-maze",
        )
        for statement, metric in (
            (
                "O2PPO beats plain PPO fine-tuning of the same IQL actor on a sparse-reward maze",
                "score",
            ),
            (
                "no initial drop on a sparse-reward maze: O2PPO's lowest early success stays "
                "nearer the offline success than plain PPO's",
                "early_drop",
            ),
        )
    ),
    *(
        Claim(
            "OCR-CFT",
            f"each part matters: O2TD3 beats O2TD3 without {part}",
            "ablations: removing PR, VA or CF lowers the score (no per-task numbers)",
            "o2td3",
            f"o2td3-no-{label}",
            suite="claims-ocr",
        )
        for label, part in (
            ("pr", "policy re-evaluation"),
            ("va", "value alignment"),
            ("cf", "the constraint"),
        )
    ),
)


@dataclass
class Row:
    claim: Claim
    algo: str
    tasks: tuple[str, ...]
    budget: str
    runs: int
    final: Any  # PairedDifference of the final score (regret: of the cumulative regret)
    auc: Any  # PairedDifference of the mean over online evaluations (None for regret)
    verdict: str

    @property
    def verdict_text(self) -> str:
        """The verdict, marked indicative where a decided one rests on fewer seeds than a
        claim needs."""
        if self.verdict in ("holds", "does not hold") and self.runs < CLAIM_SEEDS:
            return f"**{self.verdict}** ({self.runs} seeds: indicative)"
        return f"**{self.verdict}**"


def per_seed_final(result) -> np.ndarray:
    return result.scores("online")


def per_seed_online_mean(result) -> np.ndarray:
    rows = result.phase_rows("online")
    return np.mean([r["seed_normalized_scores"] for r in rows], axis=0) if rows else np.array([])


def per_seed_early_drop(result) -> np.ndarray:
    """Per seed, the lowest score over the online evaluations within the first ``EARLY``
    share of the online steps, minus the score after offline (negative: a drop)."""
    pipeline = result.pipeline
    start, online = pipeline.get("offline_steps", 0), pipeline.get("online_steps", 0)
    rows = [r for r in result.phase_rows("online") if r["step"] - start <= EARLY * online]
    offline = result.scores("offline")
    if not rows or offline.size == 0:
        return np.array([])
    return np.min([r["seed_normalized_scores"] for r in rows], axis=0) - offline


def is_maze(dataset: str) -> bool:
    return "maze" in dataset


CEILING = 100.0  # normalized score of the reference returns' maximum (maze: 100% success)
CEILING_VERDICT = "not testable (ceiling)"
# Seeds per task a claim's verdict needs; with fewer, an interval that excludes 0 is reported
# as indicative: with 3 seeds the percentile bootstrap's bound is the worst seed's difference.
CLAIM_SEEDS = 5


def at_ceiling(runs: dict) -> bool:
    """Every seed of every task of the reference arm ends at the ceiling: no method can
    score higher, so a score claim cannot hold whatever the method does."""
    return all(np.all(per_seed_final(result) >= CEILING) for result in runs.values())


def verdict(difference, lower_is_better: bool = False, ceiling: bool = False) -> str:
    if difference is None:
        return "pending"
    low, high = difference.difference.low, difference.difference.high
    if lower_is_better:
        low, high = -high, -low
    if low > 0:
        return "holds"
    if high < 0:
        return "does not hold"
    # At the ceiling (regret: at its floor, 0) "no difference" is all a method can show: say
    # so instead of not shown.
    return CEILING_VERDICT if ceiling else "not shown"


def evaluate(results: list, claims: tuple[Claim, ...] = CLAIMS, reps: int = 10_000) -> list[Row]:
    from o2o.analysis.statistics import paired_difference
    from o2o.analysis.tables import seed_regret

    finished = [r for r in results if r.finished]
    rows = []
    for claim in claims:
        mine = [r for r in finished if is_maze(r.dataset) == (claim.domain == "maze")]
        algos = sorted({r.algo for r in mine})
        found = False
        for algo in algos:
            arms = {}
            for label in (claim.method, claim.reference):
                arms[label] = {r.dataset: r for r in mine if r.algo == algo and r.method == label}
            tasks = sorted(set(arms[claim.method]) & set(arms[claim.reference]))
            if not tasks:
                continue
            if claim.metric == "regret":
                values = {label: {t: seed_regret(arms[label][t]) for t in tasks} for label in arms}
                if any(len(v) == 0 for arm in values.values() for v in arm.values()):
                    continue  # runs without training episodes (no success flags) have no regret
                found = True
                final = paired_difference(
                    values[claim.method], values[claim.reference], reps, paired=claim.paired
                )
                auc = None
                bound = all(np.all(v <= 0) for v in values[claim.reference].values())
            elif claim.metric == "early_drop":
                values = {
                    label: {t: per_seed_early_drop(arms[label][t]) for t in tasks} for label in arms
                }
                if any(len(v) == 0 for arm in values.values() for v in arm.values()):
                    continue  # no evaluation early enough in a run
                found = True
                final = paired_difference(
                    values[claim.method], values[claim.reference], reps, paired=claim.paired
                )
                auc, bound = None, False
            else:
                found = True
                final, auc = (
                    paired_difference(
                        {t: fn(arms[claim.method][t]) for t in tasks},
                        {t: fn(arms[claim.reference][t]) for t in tasks},
                        reps,
                        paired=claim.paired,
                    )
                    for fn in (per_seed_final, per_seed_online_mean)
                )
                bound = at_ceiling({t: arms[claim.reference][t] for t in tasks})
            budgets = sorted({arms[claim.method][t].short_budget for t in tasks})
            rows.append(
                Row(
                    claim,
                    algo,
                    tuple(tasks),
                    ", ".join(budgets),
                    final.runs,
                    final,
                    auc,
                    verdict(final, claim.metric == "regret", bound),
                )
            )
        if not found:
            rows.append(Row(claim, "—", (), "—", 0, None, None, "pending"))
    return rows


def budget_checks(results: list, study: Path = STUDY) -> list[dict[str, Any]]:
    """Per (dataset, algorithm) of the claims runs: the offline budget used against the budget
    study's trained budget, and against the plateau rule applied to the vanilla run's own
    offline curve (``budget_study.plateau``; its horizon is the run's offline budget)."""
    import budget_study

    trained = {}
    if study.exists():
        for entry in json.loads(study.read_text())["entries"]:
            trained[(entry["algo"], entry["dataset"])] = entry["trained_budget"]
    checks = []
    for run in results:
        if run.method != "vanilla":
            continue
        rows = run.phase_rows("offline")
        used = int(run.pipeline.get("offline_steps", 0))
        steps = [r["step"] for r in rows]
        scores = [float(np.mean(r["seed_normalized_scores"])) for r in rows]
        q = [r.get("train/q_mean", float("nan")) for r in rows]
        own = {}
        if len(rows) >= 4 and steps[-1] == used:
            score_p = budget_study.plateau(
                steps, scores, budget_study.SCORE_REL_TOL, budget_study.SCORE_ABS_TOL
            )
            q_p = budget_study.plateau(steps, q, budget_study.Q_REL_TOL)
            own = {
                "score_plateau": score_p.step if score_p.reached else None,
                "q_plateau": q_p.step if q_p.reached else None,
            }
        # The offline algorithm's budget (an iql-ppo run pre-trains IQL).
        offline_algo = str(run.config.get("algo") or run.algo)
        study_budget = trained.get((offline_algo, run.dataset))
        if study_budget is not None:
            status = "trained" if used >= study_budget else "below the trained budget"
        elif own:
            ok = own["score_plateau"] is not None and own["q_plateau"] is not None
            status = "trained (own curve)" if ok else "not shown trained (own curve)"
        elif run.finished:
            status = f"not checked ({len(rows)} offline evaluations)"
        else:
            status = "pending"
        checks.append(
            {
                "dataset": run.dataset,
                "algo": run.algo,
                "offline_steps": used,
                "evaluated_to": steps[-1] if steps else 0,
                "study_trained_budget": study_budget,
                **own,
                "score_after_offline": scores[-1] if scores else None,
                "status": status,
            }
        )
    return checks


def budget_markdown(checks: list[dict[str, Any]]) -> str:
    def k(step):
        return "—" if step is None else f"{step / 1000:g}k"

    lines = [
        "| dataset | base | offline steps used | trained budget (budget study) "
        "| own curve: score / Q plateau | score after offline | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        own = f"{k(c.get('score_plateau'))} / {k(c.get('q_plateau'))}" if "q_plateau" in c else "—"
        score = "—" if c["score_after_offline"] is None else f"{c['score_after_offline']:.1f}"
        lines.append(
            f"| {c['dataset']} | {c['algo']} | {k(c['offline_steps'])} "
            f"| {k(c['study_trained_budget'])} | {own} | {score} | {c['status']} |"
        )
    return "\n".join(lines)


def memory_row() -> dict[str, Any] | None:
    """SAMG's flat-memory claim from ``benchmarks/results/memory.json`` (benchmarks/memory.py):
    the online phase's peak resident memory at 100k and 1M offline transitions."""
    path = RESULTS / "memory.json"
    if not path.exists():
        return None
    rows = json.loads(path.read_text())["rows"]
    peak = {(r["method"], r["rows"]): r["online_peak_mib"] for r in rows}
    device = {(r["method"], r["rows"]): r["live_device_mib_at_online_start"] for r in rows}
    small, large = 100_000, 1_000_000
    growth = {m: peak[(m, large)] - peak[(m, small)] for m in ("samg", "vanilla")}
    flat = growth["samg"] < 0.05 * peak[("samg", small)] and growth["vanilla"] > growth["samg"]
    return {
        "statement": "SAMG keeps no offline data online: memory flat in the dataset size",
        "paper_figure": "the offline dataset is dropped for fine-tuning (100% online samples)",
        "measured": (
            f"online-phase peak 100k → 1M offline rows: SAMG {peak[('samg', small)]:.0f} → "
            f"{peak[('samg', large)]:.0f} MiB ({growth['samg']:+.0f}), vanilla "
            f"{peak[('vanilla', small)]:.0f} → {peak[('vanilla', large)]:.0f} MiB "
            f"({growth['vanilla']:+.0f}); device arrays at online start SAMG "
            f"{device[('samg', small)]:.0f} / {device[('samg', large)]:.0f} MiB"
        ),
        "interval": "one measurement per size (resident memory, not a sampled score)",
        "budget": "IQL, 100 offline + 2k online steps (memory, not score)",
        "verdict": "holds" if flat else "does not hold",
    }


KINDS = {"medium": "m", "medium-replay": "mr", "medium-expert": "me", "expert": "e", "random": "r"}


def short_tasks(tasks: tuple[str, ...]) -> str:
    """``hopper-medium-lite, hopper-medium-replay-lite`` -> ``hopper m/mr (lite)``."""
    groups: dict[str, list[str]] = {}
    lite = all(t.endswith("-lite") for t in tasks)
    for task in tasks:
        name = task.removesuffix("-lite")
        env, _, kind = name.partition("-")
        groups.setdefault(env, []).append(KINDS.get(kind, kind or name))
    text = ", ".join(f"{env} {'/'.join(kinds)}" for env, kinds in groups.items())
    return text + (" (lite)" if lite else "")


def format_difference(d, unit: str = "", relative: bool = True) -> str:
    if d is None:
        return "—"
    text = f"{d.difference.point:+.1f} [{d.difference.low:+.1f}, {d.difference.high:+.1f}]{unit}"
    if relative and d.relative is not None:
        text += f" ({d.relative.point:+.0f}% [{d.relative.low:+.0f}, {d.relative.high:+.0f}])"
    return text


def better(d, lower_is_better: bool) -> str:
    """P(the method beats the reference on a seed) with its CI, and the paired wins."""
    if d is None:
        return "—"
    p = d.probability
    if lower_is_better:  # the method's seeds with lower regret (ties half)
        point, low, high = 1.0 - p.point, 1.0 - p.high, 1.0 - p.low
        wins = f"{d.pairs - d.wins}/{d.pairs} lower or tied"
    else:
        point, low, high = p.point, p.low, p.high
        wins = f"{d.wins}/{d.pairs}" + ("" if d.paired else " seed pairs (unpaired arms)")
    return f"{point:.2f} [{low:.2f}, {high:.2f}], {wins}"


UNITS = {"regret": " regret", "early_drop": " early min − offline"}


def markdown(rows: list[Row], memory: dict[str, Any] | None) -> str:
    lines = [
        "| paper | claim | paper's figure | o2o: base, tasks | budget (offline+online ×seeds)"
        " | final score, method − reference [95% CI] | mean over online evals"
        " | P(method better) [95% CI], wins | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        c = row.claim
        unit = UNITS.get(c.metric, "")
        claim = f"{c.statement} (`{c.method}` vs `{c.reference}`)"
        where = f"{row.algo}: {short_tasks(row.tasks)}" if row.tasks else "—"
        wins = better(row.final, c.metric == "regret")
        lines.append(
            f"| {c.paper} | {claim} | {c.paper_figure} | {where} | {row.budget} "
            f"| {format_difference(row.final, unit, c.metric != 'early_drop')} | {format_difference(row.auc)} | {wins} "
            f"| {row.verdict_text} |"
        )
    if memory is not None:
        lines.append(
            f"| SAMG | {memory['statement']} | {memory['paper_figure']} | IQL, hopper shapes "
            f"| {memory['budget']} | {memory['measured']} | {memory['interval']} | — "
            f"| **{memory['verdict']}** |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> Path | None:
    shown = [r for r in rows if r.final is not None]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.55 * len(shown) + 1.4), dpi=120)
    colours = {
        "holds": "tab:green",
        "does not hold": "tab:red",
        "not shown": "tab:grey",
        CEILING_VERDICT: "tab:grey",
    }
    for i, row in enumerate(shown):
        d = row.final.difference
        sign = -1.0 if row.claim.metric == "regret" else 1.0  # right = in the claim's favour
        low, high = sorted((sign * d.low, sign * d.high))
        faint = 0.45 if row.runs < CLAIM_SEEDS else 1.0  # indicative: too few seeds
        ax.plot([low, high], [i, i], color=colours[row.verdict], linewidth=3, alpha=faint)
        ax.plot(sign * d.point, i, "o", color=colours[row.verdict], alpha=faint)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(
        range(len(shown)),
        [
            f"{r.claim.method} vs {r.claim.reference} ({r.algo}"
            f"{', maze' if r.claim.domain == 'maze' else ''}"
            f"{', ' + r.claim.metric.replace('_', ' ') if r.claim.metric != 'score' else ''}"
            f"{', unpaired' if not r.claim.paired else ''}"
            f"{f', {r.runs} seeds' if r.runs < CLAIM_SEEDS else ''})"
            for r in shown
        ],
        fontsize=8,
    )
    ax.invert_yaxis()
    ax.set_xlabel(
        "difference in the claim's favour, final evaluation\n(points, 95% CI; paired unless marked)"
    )
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(
        "Claims: green holds, grey not shown, red does not hold (faint: < 5 seeds, indicative)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def to_json(rows: list[Row], memory: dict[str, Any] | None) -> dict[str, Any]:
    def diff(d):
        if d is None:
            return None
        out = asdict(d)
        out["tasks"] = list(d.tasks)
        return out

    return {
        "rows": [
            {
                **asdict(r.claim),
                "algo": r.algo,
                "tasks": list(r.tasks),
                "budget": r.budget,
                "runs": r.runs,
                "final": diff(r.final),
                "online_mean": diff(r.auc),
                "verdict": r.verdict,
                "indicative": "indicative" in r.verdict_text,
            }
            for r in rows
        ],
        "memory": memory,
    }


def update_page(table: str, page: Path = PAGE) -> None:
    """Replace the generated block of the claims page (between the markers)."""
    text = page.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"error: {page} lacks the {BEGIN} ... {END} markers")
    block = f"{BEGIN}\n<!-- generated by benchmarks/claims.py; do not edit -->\n{table}\n{END}"
    page.write_text(
        re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--results", type=Path, nargs="+", default=[RESULTS / s for s in SUITES])
    parser.add_argument("--out", type=Path, default=REPORT)
    parser.add_argument("--page", type=Path, default=PAGE)
    parser.add_argument("--reps", type=int, default=10_000)
    args = parser.parse_args(argv)
    from o2o.analysis.results import load_results

    # Each claim reads its own suite's results: two suites may hold arms of the same name
    # (claims-famo2o's vanilla keeps IQL's actor rate constant, claims-samg's does not).
    # A suite without a finished run yet leaves its claims pending.
    by_suite = {
        root.name: load_results(root)
        for root in args.results
        if root.is_dir() and next(root.rglob("summary.json"), None) is not None
    }
    results = [r for suite in by_suite.values() for r in suite]
    rows = [row for c in CLAIMS for row in evaluate(by_suite.get(c.suite, []), (c,), args.reps)]
    memory = memory_row()
    checks = budget_checks(results)
    table = markdown(rows, memory)
    if checks:
        table += (
            "\n\nOffline budgets of these runs (a claim about a frozen offline critic needs a "
            "trained one; the plateau rule of the budget study, BENCHMARKS.md):\n\n"
            + budget_markdown(checks)
        )
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {**to_json(rows, memory), "offline_budgets": checks}
    (args.out / "claims.json").write_text(json.dumps(payload, indent=1) + "\n")
    figure = plot(rows, args.out / "claims.png")
    (args.out / "claims.md").write_text(
        "# Claims\n\n" + table + ("\n\n![claims](claims.png)\n" if figure else "\n")
    )
    if args.page.exists():
        update_page(table, args.page)
    print(table)
    print(f"wrote {args.out / 'claims.md'}, claims.json" + (", claims.png" if figure else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
