"""SAMG's C-VAE on a dataset: final KL, posterior-collapse flag, and mean p on the offline
pairs vs the same states with uniform-random actions, for several KL weights.

    .venv/bin/python benchmarks/samg_cvae_kl.py --dataset hopper-medium-lite --kl-weights 1.0 0.01
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from o2o import data as datasets
from o2o.agents import IQLConfig
from o2o.experiment.pipeline import Pipeline, PipelineConfig
from o2o.experiment.runs import FINETUNE, RunDir
from o2o.finetune import make_methods


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="hopper-medium-lite")
    parser.add_argument("--kl-weights", type=float, nargs="+", default=[1.0, 0.01])
    parser.add_argument("--cvae-steps", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/samg_cvae_kl.json"))
    args = parser.parse_args()
    dataset = datasets.load(args.dataset)
    rows = []
    for kl_weight in args.kl_weights:
        options = {"cvae_steps": args.cvae_steps, "kl_weight": kl_weight}
        methods = make_methods("samg", options, dataset.obs_dim, dataset.act_dim)
        config = PipelineConfig(dataset=args.dataset, offline_steps=0, online_steps=1)
        pipeline = Pipeline("iql", IQLConfig(hidden_dims=(8,)), config, dataset, methods)
        offline = pipeline.offline
        with tempfile.TemporaryDirectory() as tmp:
            run = RunDir.create(Path(tmp) / "run", {})
            states = pipeline.prepare_finetuning(
                pipeline.initial_states()[0], run, resume=False, progress=False
            )
            fits = [r for r in run.rows() if r["phase"] == "samg_cvae"]
            stats = [r for r in run.rows(FINETUNE) if r["phase"] == "samg_stats"][0]
        method = next(iter(methods))
        own = jax.tree.map(lambda x: x[0], states.extras[method.name])
        batch = jax.tree.map(lambda x: jnp.asarray(x[:4000]), offline)
        random_actions = jnp.asarray(
            np.random.default_rng(0).uniform(-1, 1, batch.actions.shape), jnp.float32
        )
        key = jax.random.PRNGKey(0)
        row = {
            "kl_weight": kl_weight,
            "final_kl": fits[-1]["train/samg/cvae_kl"],
            "final_reconstruction": fits[-1]["train/samg/cvae_reconstruction"],
            "posterior_collapse": stats["posterior_collapse"],
            "latent_snr_max": max(stats["latent_snr"]),
            "p_offline_pairs": float(method.raw_weight(own, batch, key).mean()),
            "p_random_actions": float(
                method.raw_weight(own, batch._replace(actions=random_actions), key).mean()
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
