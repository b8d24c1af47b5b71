"""o2o vs d3rlpy: gradient updates/s per algorithm on the same data, batch and network sizes,
with o2o's XLA-counted FLOPs per update and the ratio to this machine's dense matmul.

    bash benchmarks/setup_speed_env.sh      # .venv-speed: o2o + CPU torch 2.13.0 + d3rlpy 2.8.1
    .venv-speed/bin/python benchmarks/speed.py [--reps 5] [--seconds 3] [--seeds 1 5 10]

Both libraries run in the same process, alternated (which goes first flips every repetition),
for ``--reps`` repetitions of about ``--seconds`` each; every figure is the median with the
min–max spread. o2o: ``--fused`` updates per jitted call, batches sampled inside the call from
the device-resident dataset. d3rlpy: ``algo.update(batch)`` on batches sampled before the clock
starts (so d3rlpy's sampling and its ``fit`` loop's logging are not counted; its numpy→torch
conversion per batch is), PyTorch limited to ``--torch-threads`` threads. Without d3rlpy
installed the o2o side still runs and the d3rlpy columns are empty. ``--seeds 1 5 10`` adds
the cost of N seeds on o2o's vmapped seed axis (``--seed-algos``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import (
    BATCH,
    FusedUpdateTimer,
    corl_config,
    machine_info,
    matmul_flops,
    network_sizes,
    spread,
    write_results,
)

from o2o import data as datasets
from o2o.core import buffers as buf
from o2o.data import Dataset

ALGOS = ["bc", "td3bc", "awac", "iql", "cql", "calql", "sac", "td3"]
NAMES = {
    "bc": "BC",
    "td3bc": "TD3+BC",
    "awac": "AWAC",
    "iql": "IQL",
    "cql": "CQL",
    "calql": "Cal-QL",
    "sac": "SAC",
    "td3": "TD3",
}
# Updates above this many FLOPs (CQL, Cal-QL: ~13.5 GFLOP) get a tenth of --fused per call, so
# one call stays ~1-2 s and a repetition still holds several calls.
HEAVY_UPDATE_FLOPS = 5e9
D3RLPY_POOL = 32  # distinct pre-sampled batches cycled through by the d3rlpy timer


def d3rlpy_available() -> bool:
    try:
        import d3rlpy  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def d3rlpy_config(algo: str, sizes: dict[str, list[int]], batch_size: int) -> Any:
    """d3rlpy's config for ``algo`` with o2o's network sizes and CORL's loss settings where
    d3rlpy has the same knob (they change the work per update: critics, sampled actions,
    actor interval)."""
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory

    def encoder(network: str) -> VectorEncoderFactory:
        return VectorEncoderFactory(hidden_units=sizes[network])

    algos = d3rlpy.algos
    if algo == "bc":
        return algos.BCConfig(
            batch_size=batch_size, encoder_factory=encoder("actor"), policy_type="deterministic"
        )
    common = {
        "batch_size": batch_size,
        "actor_encoder_factory": encoder("actor"),
        "critic_encoder_factory": encoder("critic"),
        "n_critics": 2,
    }
    if algo == "td3bc":
        return algos.TD3PlusBCConfig(**common, alpha=2.5, update_actor_interval=2)
    if algo == "td3":
        return algos.TD3Config(**common, update_actor_interval=2)
    if algo == "sac":
        return algos.SACConfig(**common)
    if algo == "awac":
        return algos.AWACConfig(**common, lam=1.0 / 3.0, n_action_samples=1)
    if algo == "iql":
        return algos.IQLConfig(
            **common, value_encoder_factory=encoder("value"), expectile=0.7, weight_temp=3.0
        )
    # CORL's locomotion CQL: fixed conservative weight 10 (no Lagrange multiplier), 10 sampled
    # actions per state for the logsumexp.
    cql = {
        **common,
        "conservative_weight": 10.0,
        "n_action_samples": 10,
        "alpha_learning_rate": 0.0,
    }
    if algo == "cql":
        return algos.CQLConfig(**cql)
    if algo == "calql":
        return algos.CalQLConfig(**cql)
    raise ValueError(f"no d3rlpy counterpart for {algo!r}")


def mdp_dataset(dataset: Dataset) -> Any:
    """The same transitions as a d3rlpy MDPDataset (episodes split at terminals/timeouts)."""
    import d3rlpy

    timeouts = np.asarray(dataset.timeouts, bool).copy()
    terminals = np.asarray(dataset.terminals, bool)
    timeouts[-1] = not terminals[-1]  # d3rlpy needs the last episode closed
    return d3rlpy.dataset.MDPDataset(
        observations=np.asarray(dataset.observations, np.float32),
        actions=np.asarray(dataset.actions, np.float32),
        rewards=np.asarray(dataset.rewards, np.float32),
        terminals=terminals.astype(np.float32),
        timeouts=timeouts.astype(np.float32),
    )


class D3rlpyTimer:
    """d3rlpy's gradient update, ``algo.update(batch)``, on pre-sampled batches."""

    def __init__(self, algo: str, sizes: dict[str, list[int]], mdp: Any, batch_size: int):
        self.algo = d3rlpy_config(algo, sizes, batch_size).create(device="cpu:0")
        self.algo.build_with_dataset(mdp)
        self.batches = [mdp.sample_transition_batch(batch_size) for _ in range(D3RLPY_POOL)]
        self.done = 0
        self.rate(3)  # warm up (first-call allocations)

    def update(self) -> None:
        self.algo.update(self.batches[self.done % D3RLPY_POOL])
        self.done += 1

    def seconds_per_update(self) -> float:
        t0 = time.perf_counter()
        self.update()
        return time.perf_counter() - t0

    def rate(self, updates: int) -> float:
        t0 = time.perf_counter()
        for _ in range(updates):
            self.update()
        return updates / (time.perf_counter() - t0)


def o2o_buffers(dataset: Dataset) -> dict[str, buf.ReplayBuffer]:
    # Discounted returns-to-go included: Cal-QL's lower bound reads them.
    return {"replay": buf.buffer_from_transitions(dataset.to_transition(discount=0.99))}


def o2o_timer_for(
    algo: str, dataset: Dataset, buffers: dict, fused: int, seeds: int = 1
) -> FusedUpdateTimer:
    agent = corl_config(algo).create()
    timer = FusedUpdateTimer(agent, dataset.obs_dim, dataset.act_dim, buffers, 1, seeds)
    if timer.flops_per_update > HEAVY_UPDATE_FLOPS:
        fused = max(1, fused // 10)
    if fused == 1:
        return timer
    return FusedUpdateTimer(agent, dataset.obs_dim, dataset.act_dim, buffers, fused, seeds)


def calls_for(seconds_per_call: float, seconds: float) -> int:
    return max(1, round(seconds / max(seconds_per_call, 1e-9)))


def measure(args: argparse.Namespace, dataset: Dataset) -> dict[str, Any]:
    with_d3rlpy = not args.no_d3rlpy and d3rlpy_available()
    if with_d3rlpy:
        import d3rlpy
        import torch

        torch.set_num_threads(args.torch_threads)
        mdp = mdp_dataset(dataset)
    buffers = o2o_buffers(dataset)
    o2o: dict[str, FusedUpdateTimer] = {}
    peer: dict[str, D3rlpyTimer] = {}
    sizes: dict[str, dict[str, list[int]]] = {}
    for algo in args.algos:
        sizes[algo] = network_sizes(corl_config(algo))
        o2o[algo] = o2o_timer_for(algo, dataset, buffers, args.fused)
        if with_d3rlpy:
            peer[algo] = D3rlpyTimer(algo, sizes[algo], mdp, BATCH)
        print(f"built {algo}", file=sys.stderr, flush=True)
    o2o_calls = {a: calls_for(t.seconds_per_call(), args.seconds) for a, t in o2o.items()}
    peer_updates = {
        a: max(3, calls_for(t.seconds_per_update(), args.seconds)) for a, t in peer.items()
    }
    o2o_rates: dict[str, list[float]] = {a: [] for a in args.algos}
    peer_rates: dict[str, list[float]] = {a: [] for a in peer}
    matmul: list[float] = []
    for rep in range(args.reps):
        matmul += matmul_flops(2048, 1)
        for algo in args.algos:
            # Flip the order every repetition so neither library always runs right after the other.
            order = ["o2o", "d3rlpy"] if rep % 2 == 0 else ["d3rlpy", "o2o"]
            for library in order:
                if library == "o2o":
                    o2o_rates[algo].append(o2o[algo].rate(o2o_calls[algo]))
                elif algo in peer:
                    peer_rates[algo].append(peer[algo].rate(peer_updates[algo]))
        print(f"repetition {rep + 1}/{args.reps} done", file=sys.stderr, flush=True)
    peak = float(np.median(matmul))
    rows = []
    for algo in args.algos:
        timer = o2o[algo]
        o2o_stats = spread(o2o_rates[algo])
        achieved = o2o_stats["median"] * timer.flops_per_update
        row: dict[str, Any] = {
            "algo": algo,
            "name": NAMES[algo],
            "hidden_units": sizes[algo],
            "fused": timer.fused,
            "o2o_updates_per_s": o2o_stats,
            "o2o_updates_per_s_all": o2o_rates[algo],
            "flops_per_update": timer.flops_per_update,
            "achieved_flops_per_s": achieved,
            "fraction_of_matmul": achieved / peak,
        }
        if algo in peer_rates:
            ratios = [a / b for a, b in zip(o2o_rates[algo], peer_rates[algo], strict=True)]
            row.update(
                d3rlpy_updates_per_s=spread(peer_rates[algo]),
                d3rlpy_updates_per_s_all=peer_rates[algo],
                speedup=spread(ratios),
            )
        rows.append(row)
    result: dict[str, Any] = {
        "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "dataset": dataset.name,
        "dataset_transitions": int(dataset.size),
        "batch_size": BATCH,
        "reps": args.reps,
        "seconds_per_measurement": args.seconds,
        "matmul_2048_flops_per_s_median": peak,
        "matmul_2048_flops_per_s_all": matmul,
        "rows": rows,
    }
    if with_d3rlpy:
        result["d3rlpy"] = {
            "version": d3rlpy.__version__,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "measured": "algo.update(batch) on pre-sampled TransitionMiniBatch (numpy->torch "
            "conversion counted; sampling and fit()'s logging not)",
        }
    else:
        result["d3rlpy"] = None
    if any(n > 1 for n in args.seeds):
        result["seeds"] = measure_seeds(args, dataset, buffers)
    return result


def measure_seeds(args: argparse.Namespace, dataset: Dataset, buffers: dict) -> list[dict]:
    """Cost of N seeds on o2o's vmapped axis: per-seed updates/s and time per fused call
    relative to one seed, alternated over the seed counts."""
    rows = []
    for algo in args.seed_algos:
        timers = {n: o2o_timer_for(algo, dataset, buffers, args.fused, n) for n in args.seeds}
        calls = {n: calls_for(t.seconds_per_call(), args.seconds) for n, t in timers.items()}
        rates: dict[int, list[float]] = {n: [] for n in args.seeds}
        for _ in range(args.reps):
            for n, timer in timers.items():
                rates[n].append(timer.rate(calls[n]))
        base_rate = float(np.median(rates[min(args.seeds)]))
        for n in args.seeds:
            per_seed = spread(rates[n])
            rows.append(
                {
                    "algo": algo,
                    "seeds": n,
                    "fused": timers[n].fused,
                    "updates_per_s_per_seed": per_seed,
                    "seed_updates_per_s": per_seed["median"] * n,
                    # wall time of the same updates per seed, relative to the fewest seeds
                    "relative_cost": base_rate / per_seed["median"],
                }
            )
    return rows


def markdown(result: dict[str, Any]) -> str:
    def fmt(stats: dict[str, float] | None, digits: int = 0) -> str:
        if stats is None:
            return "—"
        return f"{stats['median']:.{digits}f} ({stats['min']:.{digits}f}–{stats['max']:.{digits}f})"

    def sizes(hidden: dict[str, list[int]]) -> str:
        return "; ".join(f"{k} {'×'.join(map(str, v))}" for k, v in hidden.items())

    lines = [
        "| algorithm | hidden units | K | o2o updates/s | d3rlpy updates/s | o2o ÷ d3rlpy "
        "| MFLOP/update (XLA) | achieved GFLOP/s | of matmul |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['name']} | {sizes(row['hidden_units'])} | {row['fused']} "
            f"| {fmt(row['o2o_updates_per_s'])} | {fmt(row.get('d3rlpy_updates_per_s'))} "
            f"| {fmt(row.get('speedup'), 1)} | {row['flops_per_update'] / 1e6:.0f} "
            f"| {row['achieved_flops_per_s'] / 1e9:.1f} | {100 * row['fraction_of_matmul']:.0f}% |"
        )
    lines.append("")
    lines.append(
        f"Dense f32 matmul 2048³ in the same run: {result['matmul_2048_flops_per_s_median'] / 1e9:.1f}"
        f" GFLOP/s (median of {len(result['matmul_2048_flops_per_s_all'])})."
    )
    if result.get("seeds"):
        lines += [
            "",
            "| algorithm | seeds | K | updates/s per seed | seed-updates/s | wall time vs fewest seeds |",
            "|---|---|---|---|---|---|",
        ]
        for row in result["seeds"]:
            lines.append(
                f"| {NAMES[row['algo']]} | {row['seeds']} | {row['fused']} "
                f"| {fmt(row['updates_per_s_per_seed'])} | {row['seed_updates_per_s']:.0f} "
                f"| {row['relative_cost']:.2f}× |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", nargs="+", default=ALGOS, choices=ALGOS)
    parser.add_argument("--dataset", default="hopper-medium-lite")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--fused", type=int, default=100, help="o2o updates per jitted call")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--no-d3rlpy", action="store_true", help="o2o side only")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="e.g. 1 5 10")
    parser.add_argument("--seed-algos", nargs="+", default=["sac", "iql"], choices=ALGOS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed_vs_d3rlpy.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, dataset: Dataset | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    dataset = dataset if dataset is not None else datasets.load(args.dataset)
    result = measure(args, dataset)
    write_results(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
