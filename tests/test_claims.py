"""The claims page (benchmarks/claims.py): pairing by seed, verdicts, the generated block."""

import sys
from pathlib import Path

import numpy as np
import pytest

from o2o.analysis.results import RunResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import claims  # noqa: E402

PIPELINE = {"offline_steps": 60000, "online_steps": 20000, "seeds": 5}


def run(dataset, method, online_curve, algo="iql", success=None):
    """A finished run whose online evaluations give ``online_curve`` (evals × seeds)."""
    curve = np.asarray(online_curve, float)
    rows = [
        {"phase": "online", "step": 1000 * (i + 1), "seed_normalized_scores": list(scores)}
        for i, scores in enumerate(curve)
    ]
    episodes = []
    if success is not None:
        for seed, outcomes in enumerate(success):
            episodes += [{"seed": seed, "success": s} for s in outcomes]
    return RunResult(
        path=Path("/nowhere"),
        dataset=dataset,
        algo=algo,
        method=method,
        config={"pipeline": PIPELINE},
        summary={"online_scores": list(curve[-1])},
        rows=rows,
        episodes=episodes,
        finetune=[],
    )


def only(rows, method, reference, domain="locomotion"):
    (row,) = [
        r
        for r in rows
        if (r.claim.method, r.claim.reference, r.claim.domain) == (method, reference, domain)
        and r.claim.metric == "score"
    ]
    return row


def test_a_consistent_paired_gain_holds_and_is_computed_per_seed():
    vanilla = [[10, 40, 70], [20, 50, 80]]
    samg = [[12, 42, 72], [23, 53, 83]]  # +3 at the final evaluation on every seed
    rows = claims.evaluate(
        [run("hopper-medium-lite", "vanilla", vanilla), run("hopper-medium-lite", "samg", samg)],
        reps=500,
    )
    row = only(rows, "samg", "vanilla")
    assert row.final.difference.point == pytest.approx(3.0)
    assert (row.final.difference.low, row.final.difference.high) == (
        pytest.approx(3.0),
        pytest.approx(3.0),
    )
    # mean over online evaluations: (2 + 3) / 2 = 2.5 on every seed
    assert row.auc.difference.point == pytest.approx(2.5)
    assert row.verdict == "holds" and row.budget == "60k+20k ×5"
    assert row.final.wins == 3


def test_verdicts_follow_the_interval():
    same = [[10, 40, 70, 20]]
    mixed = [[13, 37, 74, 16]]  # +3, -3, +4, -4: the interval spans 0
    worse = [[5, 35, 65, 15]]
    results = [
        run("hopper-medium-lite", "vanilla", same),
        run("hopper-medium-lite", "samg", mixed),
        run("hopper-medium-lite", "samg-even", worse),
    ]
    rows = claims.evaluate(results, reps=500)
    assert only(rows, "samg", "vanilla").verdict == "not shown"
    assert only(rows, "vanilla", "samg-even").verdict == "holds"
    assert only(rows, "samg", "samg-unguided").verdict == "pending"


def test_regret_is_lower_is_better_and_maze_claims_only_see_mazes():
    vanilla = run("pointmaze-medium", "vanilla", [[50, 50]], success=[[0, 0, 1, 1], [0, 1, 1, 1]])
    samg = run("pointmaze-medium", "samg", [[60, 60]], success=[[1, 1, 1, 1], [0, 1, 1, 1]])
    rows = claims.evaluate([vanilla, samg], reps=500)
    regret = [r for r in rows if r.claim.metric == "regret"][0]
    # regret per seed: vanilla (0.5, 0.25), samg (0.0, 0.25): difference (-0.5, 0)
    assert regret.final.difference.point == pytest.approx(-0.25)
    assert regret.verdict == "not shown"  # a resample of seed 1 twice gives 0
    assert only(rows, "samg", "vanilla", "maze").verdict == "holds"
    assert only(rows, "samg", "vanilla").verdict == "pending"  # no locomotion runs


def test_short_task_names():
    tasks = ("halfcheetah-medium-lite", "hopper-medium-lite", "hopper-medium-replay-lite")
    assert claims.short_tasks(tasks) == "halfcheetah m, hopper m/mr (lite)"


def test_the_page_block_is_replaced_and_the_rest_kept(tmp_path):
    page = tmp_path / "claims.md"
    page.write_text(f"intro\n{claims.BEGIN}\nold\n{claims.END}\nafter\n")
    claims.update_page("| new |", page)
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n")
    assert "| new |" in text and "old" not in text


def test_budget_check_reads_the_study_and_the_runs_own_curve(tmp_path):
    study = tmp_path / "budget.json"
    study.write_text(
        '{"entries": [{"algo": "iql", "dataset": "hopper-medium-lite", "trained_budget": 57500}]}'
    )

    def offline_run(dataset, used, curve):
        result = run(dataset, "vanilla", [[1.0]])
        result.config = {"pipeline": {**PIPELINE, "offline_steps": used}}
        result.rows = [
            {"phase": "offline", "step": step, "seed_normalized_scores": [v], "train/q_mean": v}
            for step, v in curve
        ] + result.rows
        return result

    flat = [(s * 1000, 50.0) for s in range(5, 31, 5)]  # flat from the first evaluation
    rising = [(s * 1000, float(s)) for s in range(5, 31, 5)]  # never settles
    checks = claims.budget_checks(
        [
            offline_run("hopper-medium-lite", 60000, flat[:1]),
            offline_run("hopper-medium-lite", 50000, flat[:1]),
            offline_run("pointmaze-medium-diverse", 30000, flat),
            offline_run("pointmaze-large-diverse", 30000, rising),
        ],
        study,
    )
    assert [c["status"] for c in checks] == [
        "trained",
        "below the trained budget",
        "trained (own curve)",
        "not shown trained (own curve)",
    ]
    # flat curve: the plateau starts at the first evaluation, 5k
    assert (checks[2]["score_plateau"], checks[2]["q_plateau"]) == (5000, 5000)


def test_probability_column_reads_in_the_claims_favour():
    from o2o.analysis.statistics import paired_difference

    # Regret, lower is better: the method is lower on 3 of 4 seeds and tied on one.
    d = paired_difference(
        {"t": np.array([0.1, 0.2, 0.3, 0.5])}, {"t": np.array([0.4, 0.4, 0.4, 0.5])}
    )
    assert claims.better(d, lower_is_better=True).startswith("0.88 [")  # (3 + 0.5) / 4
    assert claims.better(d, lower_is_better=True).endswith("4/4 lower or tied")
    assert claims.better(d, lower_is_better=False).startswith("0.12 [")
    assert claims.better(None, lower_is_better=False) == "—"


def test_a_reference_at_the_ceiling_makes_a_score_claim_not_testable():
    """Both arms at 100% success: "no difference" is all a method could show (verdict says
    so); a method that falls below the ceiling still does not hold; regret is still judged."""
    full = [[100, 100, 100]]
    rows = claims.evaluate(
        [
            run("pointmaze-medium", "vanilla", full, success=[[0, 1], [1, 1], [1, 1]]),
            run("pointmaze-medium", "samg", full, success=[[1, 1], [1, 1], [1, 1]]),
        ],
        reps=500,
    )
    assert only(rows, "samg", "vanilla", "maze").verdict == "not testable (ceiling)"
    regret = [r for r in rows if r.claim.metric == "regret"][0]
    assert regret.verdict == "not shown"  # vanilla's regret is not 0: samg could be lower
    perfect = claims.evaluate(
        [
            run("pointmaze-medium", "vanilla", full, success=[[1, 1], [1, 1], [1, 1]]),
            run("pointmaze-medium", "samg", full, success=[[1, 1], [1, 1], [1, 1]]),
        ],
        reps=500,
    )
    regret = [r for r in perfect if r.claim.metric == "regret"][0]
    assert regret.verdict == "not testable (ceiling)"  # no regret left to lower
    worse = claims.evaluate(
        [
            run("pointmaze-medium", "vanilla", full),
            run("pointmaze-medium", "samg", [[40, 50, 60]]),
        ],
        reps=500,
    )
    assert only(worse, "samg", "vanilla", "maze").verdict == "does not hold"
    below = claims.evaluate(
        [
            run("pointmaze-medium", "vanilla", [[100, 90, 100]]),
            run("pointmaze-medium", "samg", [[100, 90, 100]]),
        ],
        reps=500,
    )
    assert only(below, "samg", "vanilla", "maze").verdict == "not shown"


def test_unpaired_claims_resample_each_arm_and_read_their_own_suite():
    """FamO2O's arms each pre-train: the same +3 on every seed index is not a paired gain, so
    the interval widens to the seeds' spread (3 seeds at 10/40/70) and the claim is not shown."""
    famo2o_claims = [c for c in claims.CLAIMS if c.method == "famo2o" and c.reference == "vanilla"]
    assert {c.domain for c in famo2o_claims} == {"locomotion", "maze"}
    assert all(c.suite == "claims-famo2o" and not c.paired for c in famo2o_claims)
    (famo2o_claim,) = [c for c in famo2o_claims if c.domain == "locomotion"]
    vanilla = [[10, 40, 70]]
    famo2o = [[13, 43, 73]]
    (row,) = claims.evaluate(
        [
            run("hopper-medium-lite", "vanilla", vanilla),
            run("hopper-medium-lite", "famo2o", famo2o),
        ],
        (famo2o_claim,),
        reps=2000,
    )
    assert row.final.difference.point == pytest.approx(3.0)
    assert row.final.difference.low < -20 and row.final.difference.high > 25
    assert row.verdict == "not shown"
    # of the 9 (famo2o seed, vanilla seed) pairs famo2o wins 13>10, 43>10, 43>40, 73>all three
    assert (row.final.wins, row.final.pairs) == (6, 9)
    assert "seed pairs (unpaired arms)" in claims.better(row.final, False)


def test_early_drop_is_the_lowest_early_score_minus_offline_per_seed():
    """OCR-CFT's "no initial drop": evaluations in the first 10% of the online steps only."""
    pipeline = {"offline_steps": 1000, "online_steps": 20000, "seeds": 2}

    def ocr_run(method, offline, online):
        rows = [{"phase": "offline", "step": 1000, "seed_normalized_scores": offline}]
        rows += [
            {"phase": "online", "step": 1000 + step, "seed_normalized_scores": scores}
            for step, scores in online
        ]
        return RunResult(
            path=Path("/nowhere"),
            dataset="hopper-medium-lite",
            algo="iql-ppo",
            method=method,
            config={"pipeline": pipeline},
            summary={"offline_scores": offline, "online_scores": online[-1][1]},
            rows=rows,
            episodes=[],
            finetune=[],
        )

    # Early window: env steps <= 2,000. By hand: vanilla min(40, 30) - 50 = -20 and
    # min(60, 58) - 60 = -2; o2ppo min(49, 52) - 50 = -1 and min(61, 60) - 60 = 0; the
    # evaluation at 3,000 (a deeper dip) is outside the window.
    vanilla = ocr_run("vanilla", [50.0, 60.0], [(1000, [40, 60]), (2000, [30, 58]), (3000, [0, 0])])
    o2ppo = ocr_run("o2ppo", [50.0, 60.0], [(1000, [49, 61]), (2000, [52, 60]), (3000, [0, 0])])
    np.testing.assert_allclose(claims.per_seed_early_drop(vanilla), [-20.0, -2.0])
    np.testing.assert_allclose(claims.per_seed_early_drop(o2ppo), [-1.0, 0.0])
    rows = claims.evaluate([vanilla, o2ppo], reps=500)
    (row,) = [
        r
        for r in rows
        if r.claim.metric == "early_drop"
        and r.claim.method == "o2ppo"
        and r.claim.domain == "locomotion"
    ]
    # Paired per seed: (-1 - -20, 0 - -2) = (19, 2), mean 10.5.
    assert row.final.difference.point == pytest.approx(10.5)
    assert row.verdict == "holds" and row.algo == "iql-ppo"
    assert "early min − offline" in claims.markdown([row], None)


def test_fewer_than_five_seeds_make_a_verdict_indicative():
    three = [[10, 40, 70]]
    rows = claims.evaluate(
        [
            run("hopper-medium-lite", "vanilla", three),
            run("hopper-medium-lite", "samg", [[13, 43, 73]]),
            run("hopper-medium-lite", "samg-even", [[10, 41, 69]]),
        ],
        reps=500,
    )
    for reference in ("vanilla", "samg-even"):
        row = only(rows, "samg", reference)
        assert row.verdict == "holds"
        assert row.verdict_text == "**holds** (3 seeds: indicative)"
        assert "(3 seeds: indicative)" in claims.markdown([row], None)
    five = [[10, 40, 70, 20, 30]]
    rows = claims.evaluate(
        [
            run("hopper-medium-lite", "vanilla", five),
            run("hopper-medium-lite", "samg", [[13, 43, 73, 23, 33]]),
        ],
        reps=500,
    )
    assert only(rows, "samg", "vanilla").verdict_text == "**holds**"
