"""SAMG's C-VAE on a dataset: final KL, posterior-collapse flag, and mean p on the offline
pairs vs the same states with uniform-random actions, for several KL weights.

    .venv/bin/python benchmarks/samg_cvae_kl.py --dataset hopper-medium-lite --kl-weights 1.0 0.01
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from o2o import data as datasets
from o2o.agents import IQLConfig
from o2o.experiment.online import Preprocess
from o2o.finetune.samg import SAMG, SAMGConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="hopper-medium-lite")
    parser.add_argument("--kl-weights", type=float, nargs="+", default=[1.0, 0.01])
    parser.add_argument("--cvae-steps", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/samg_cvae_kl.json"))
    args = parser.parse_args()
    dataset = datasets.load(args.dataset)
    offline = dataset.to_transition()
    rows = []
    for kl_weight in args.kl_weights:
        method = SAMG(
            SAMGConfig(cvae_steps=args.cvae_steps, kl_weight=kl_weight),
            dataset.obs_dim,
            dataset.act_dim,
        )
        agent = IQLConfig(hidden_dims=(8,)).create(hooks=method.hooks("iql"))
        states = jax.vmap(lambda k, a=agent: a.init(k, dataset.obs_dim, dataset.act_dim))(
            jax.random.split(jax.random.PRNGKey(0), 1)
        )
        prepared = method.prepare(agent, states, offline, Preprocess(), seed=0, progress=False)
        extras = jax.tree.map(lambda x: x[0], prepared.states.extras)
        hooks = method.model.hooks()
        batch = jax.tree.map(lambda x: jnp.asarray(x[:4000]), offline)
        random_actions = jnp.asarray(
            np.random.default_rng(0).uniform(-1, 1, batch.actions.shape), jnp.float32
        )
        fits = [r for r in prepared.diagnostics if r["phase"] == "samg_fit"]
        stats = [r for r in prepared.diagnostics if r["phase"] == "samg_stats"][0]
        row = {
            "kl_weight": kl_weight,
            "final_kl": fits[-1]["kl"],
            "final_reconstruction": fits[-1]["reconstruction"],
            "posterior_collapse": stats["posterior_collapse"],
            "p_offline_pairs": float(hooks.raw_weight(extras, batch).mean()),
            "p_random_actions": float(
                hooks.raw_weight(extras, batch._replace(actions=random_actions)).mean()
            ),
        }
        rows.append(row)
        print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": f"benchmarks/samg_cvae_kl.py --dataset {args.dataset} --cvae-steps {args.cvae_steps}",
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
