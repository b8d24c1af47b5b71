"""Plain-numpy forward passes of o2o's networks, for checking losses by hand."""

import numpy as np


def mlp_forward(mlp_params: dict, x: np.ndarray) -> np.ndarray:
    """ReLU MLP over Dense_0..Dense_n (no layer norm); the last layer is linear."""
    x = np.asarray(x, np.float64)
    names = sorted(mlp_params, key=lambda n: int(n.split("_")[1]))
    for i, name in enumerate(names):
        x = x @ np.asarray(mlp_params[name]["kernel"], np.float64) + np.asarray(
            mlp_params[name]["bias"], np.float64
        )
        if i < len(names) - 1:
            x = np.maximum(x, 0.0)
    return x


def critic_member(ensemble_params: dict, i: int) -> dict:
    inner = ensemble_params["VmapStateActionValue_0"]["MLP_0"]
    return {name: {k: np.asarray(v)[i] for k, v in layer.items()} for name, layer in inner.items()}


def q_values(ensemble_params: dict, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
    """(members, batch) Q-values computed in float64 numpy."""
    n = np.asarray(ensemble_params["VmapStateActionValue_0"]["MLP_0"]["Dense_0"]["bias"]).shape[0]
    x = np.concatenate([obs, act], axis=-1)
    return np.stack([mlp_forward(critic_member(ensemble_params, i), x)[..., 0] for i in range(n)])


def tiny_batch(rng: np.random.Generator, n: int, obs_dim: int, act_dim: int):
    from o2o.core.types import Transition

    return Transition(
        observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
        terminals=np.array([0, 1, 0, 0][:n] + [0] * max(0, n - 4), np.float32),
        mc_returns=np.zeros(n, np.float32),
    )


class BanditTask:
    """A contextual bandit with terminal transitions: reward = -||a - f(s)||^2, f(s) = tanh(s W).

    The offline data mixes near-optimal actions f(s) + noise with uniform-random ones, so an
    algorithm that learns from rewards beats the data's average action. ``score(actions, obs)`` is
    the analytic mean reward of given actions; MC returns equal rewards (every step terminates)."""

    def __init__(self, obs_dim: int = 3, act_dim: int = 2, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.weights = rng.normal(size=(obs_dim, act_dim)) / np.sqrt(obs_dim)

    def best_actions(self, obs: np.ndarray) -> np.ndarray:
        return np.tanh(np.asarray(obs, np.float64) @ self.weights)

    def score(self, actions, obs: np.ndarray) -> float:
        errors = np.asarray(actions, np.float64) - self.best_actions(obs)
        return float(-np.mean(np.sum(errors**2, axis=-1)))

    def observations(self, n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).normal(size=(n, self.obs_dim)).astype(np.float32)

    def dataset(self, n: int = 2000, good_fraction: float = 0.5, noise: float = 0.2, seed: int = 1):
        from o2o.core.types import Transition

        rng = np.random.default_rng(seed)
        obs = self.observations(n, seed + 1000)
        good = np.clip(self.best_actions(obs) + noise * rng.normal(size=(n, self.act_dim)), -1, 1)
        random = rng.uniform(-1, 1, (n, self.act_dim))
        is_good = rng.uniform(size=(n, 1)) < good_fraction
        actions = np.where(is_good, good, random).astype(np.float32)
        rewards = -np.sum((actions - self.best_actions(obs)) ** 2, axis=-1).astype(np.float32)
        return Transition(
            observations=obs,
            actions=actions,
            rewards=rewards,
            next_observations=self.observations(n, seed + 2000),
            terminals=np.ones(n, np.float32),
            mc_returns=rewards.copy(),
        )


def train_fused(
    agent, state, transitions, steps: int, batch_size: int = 256, chunk: int = 100, seed: int = 0
):
    """``steps`` updates of ``agent.update`` (or any update fn with its signature, passed as
    ``agent``) on ``transitions`` through the engine's fused, jitted loop (no seed axis)."""
    import jax

    from o2o.core.buffers import Sampler, buffer_from_transitions
    from o2o.core.engine import compile_fused

    update = agent.update if hasattr(agent, "update") else agent
    run = compile_fused(update, Sampler(batch_size), chunk, seed_axis=False)
    buffers = {"replay": buffer_from_transitions(transitions)}
    key = jax.random.PRNGKey(seed)
    metrics = {}
    for _ in range(steps // chunk):
        state, key, metrics = run(state, buffers, key)
    return state, metrics


def gaussian_log_prob(actions: np.ndarray, mean: np.ndarray, log_std: np.ndarray) -> np.ndarray:
    """log N(actions; mean, diag(exp(log_std)^2)) summed over the last axis, in float64."""
    actions, mean, log_std = (np.asarray(x, np.float64) for x in (actions, mean, log_std))
    z = (actions - mean) / np.exp(log_std)
    return np.sum(-0.5 * z**2 - log_std - 0.5 * np.log(2 * np.pi), axis=-1)


def bandit_scores_before_after(agent, steps: int, task: BanditTask | None = None, seed: int = 0):
    """(score before, score after, last metrics) of ``agent``'s deterministic actions on held-out
    states of a BanditTask, around ``steps`` fused offline updates on its dataset."""
    import jax

    task = task or BanditTask()
    state = agent.init(jax.random.PRNGKey(seed), task.obs_dim, task.act_dim)
    obs = task.observations(1000, seed=7)
    key = jax.random.PRNGKey(0)
    before = task.score(agent.act(state, obs, key, True), obs)
    state, metrics = train_fused(agent, state, task.dataset(), steps=steps, seed=seed)
    return before, task.score(agent.act(state, obs, key, True), obs), metrics


class OfflineArrayProbe:
    """Called at points of a run (e.g. ``on_online_start``), records which of the given host
    arrays are still referenced and the shapes of live device arrays with a dimension equal
    to one of ``sizes`` (pick row counts no other array in the process has)."""

    def __init__(self, arrays, sizes: tuple[int, ...]):
        import weakref

        self.refs = [weakref.ref(a) for a in arrays]
        self.sizes = sizes
        self.checks: list[tuple[list[bool], list[tuple[int, ...]]]] = []

    def __call__(self) -> None:
        import gc

        import jax

        gc.collect()
        alive = [r() is not None for r in self.refs]
        device = [a.shape for a in jax.live_arrays() if set(self.sizes) & set(a.shape)]
        self.checks.append((alive, device))


def tiny_pipeline(dataset, methods="samg-even", options=None, **config):
    """A TD3 pipeline at a budget of a few hundred updates with ``methods`` composed."""
    from o2o.agents import TD3Config
    from o2o.experiment.pipeline import Pipeline, PipelineConfig
    from o2o.finetune import make_methods

    base = dict(
        offline_steps=100,
        online_steps=300,
        offline_chunk=100,
        offline_eval_every=100,
        online_eval_every=300,
        update_every=50,
        eval_episodes=1,
        batch_size=32,
    )
    built = make_methods(methods, options or {}, dataset.obs_dim, dataset.act_dim)
    return Pipeline(
        "td3", TD3Config(hidden_dims=(16,)), PipelineConfig(**{**base, **config}), dataset, built
    )


def numpy_gae(rewards, values, next_values, terminals, truncations, discount, lam):
    """The textbook backward recursion in float64, one env, written without vector tricks."""
    n = len(rewards)
    advantages = np.zeros(n)
    running = 0.0
    for t in reversed(range(n)):
        episode_goes_on = t < n - 1 and not terminals[t] and not truncations[t]
        if not episode_goes_on:
            running = 0.0
        bootstrap = 0.0 if terminals[t] else discount * next_values[t]
        delta = rewards[t] + bootstrap - values[t]
        running = delta + discount * lam * running
        advantages[t] = running
    return advantages, advantages + values


OCR_OFFLINE = {"o2sac": "cql", "o2td3": "td3bc"}


def tiny_ocr_spec(dataset, method: str = "o2sac", options=None, online=None, **pipeline):
    """A RunSpec of OCR-CFT's O2SAC / O2TD3 (or a variant) at a test's size: 16-wide
    networks, a 100-step offline phase, 50-step re-evaluation and alignment (rows at 25 and
    50, so a run can be killed inside each), 100 online steps."""
    from o2o.experiment.builder import RunSpec
    from o2o.experiment.pipeline import PipelineConfig

    base = method.split("-")[0]
    algo = OCR_OFFLINE[base]
    config = PipelineConfig(
        **{
            "offline_steps": 100,
            "online_steps": 100,
            "offline_chunk": 25,
            "offline_eval_every": 100,
            "online_eval_every": 50,
            "eval_episodes": 1,
            "batch_size": 32,
            "update_every": 10,
            **pipeline,
        }
    )
    if algo == "cql":
        agent = {"actor_hidden_dims": (16, 16, 16), "critic_hidden_dims": (16, 16)}
        online_agent = {"actor_hidden_dims": (16, 16, 16), "critic_hidden_dims": (16, 16)}
    else:
        agent = {"hidden_dims": (16, 16)}
        online_agent = {"hidden_dims": (16, 16)}
    options = {"reevaluation_steps": 50, "alignment_steps": 50, **(options or {})}
    return RunSpec.create(
        algo,
        config,
        method,
        options,
        agent,
        "locomotion",
        dataset,
        online_overrides={**online_agent, **(online or {})},
    )


def phase_start_states(pipeline, seeds: int = 1):
    """The seed-stacked states where the phases before online start: the online agent from
    the freshly initialised offline one, the methods' state on (``seeds``: the pipeline's)."""
    import jax

    offline, _ = pipeline.initial_states()
    return pipeline.methods.init_states(
        pipeline.finetune_agent,
        pipeline.online_start(offline),
        jax.random.split(jax.random.PRNGKey(0), seeds),
        pipeline.online_preprocess,
        False,
    )


def ocr_started(dataset, method: str, **options):
    """The pipeline, one seed's state at the start of the phases (method state on, critics
    without LayerNorm for the NumPy forward passes) and a batch of its offline data."""
    import jax
    import jax.numpy as jnp

    from o2o.core.engine import unstack_seeds

    spec = tiny_ocr_spec(dataset, method, options=options, online={"critic_layer_norm": False})
    pipeline = spec.build(dataset)
    states = phase_start_states(pipeline)
    batch = jax.tree.map(
        lambda x: None if x is None else jnp.asarray(x[:16]), pipeline.finetune_offline
    )
    return pipeline, unstack_seeds(states)[0], batch


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


def ocr_resume_check(tmp_path, dataset, method, monkeypatch, kills):
    """Kill the run after the n-th checkpoint save of each attempt (``kills``), resume it
    each time, and compare with an uninterrupted run."""
    import jax
    import pytest

    from o2o.experiment import online as online_module
    from o2o.experiment import pipeline as pipeline_module
    from o2o.experiment.runs import RunDir

    build = lambda: tiny_ocr_spec(dataset, method).build(dataset)  # noqa: E731
    full = build().run(RunDir.create(tmp_path / "full", {}), progress=False)
    originals = {module: module.save_checkpoint for module in (pipeline_module, online_module)}
    run = RunDir.create(tmp_path / "killed", {})
    where = []
    for attempt, kill_at in enumerate(kills):
        saved: list[str] = []
        for module, original in originals.items():

            def save(path, tree, original=original, saved=saved, kill_at=kill_at, **options):
                original(path, tree, **options)
                saved.append(options.get("phase"))
                if len(saved) == kill_at:
                    raise KeyboardInterrupt

            monkeypatch.setattr(module, "save_checkpoint", save)
        with pytest.raises(KeyboardInterrupt):
            build().run(run, resume=attempt > 0, progress=False)
        where.append(saved[-1])
    for module, original in originals.items():
        monkeypatch.setattr(module, "save_checkpoint", original)
    resumed = build().run(run, resume=True, progress=False)
    assert _strip(resumed.rows) == _strip(full.rows)
    for x, y in zip(jax.tree.leaves(full.states), jax.tree.leaves(resumed.states), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert run.rows("finetune.jsonl") == RunDir(tmp_path / "full").rows("finetune.jsonl")
    return full, where
