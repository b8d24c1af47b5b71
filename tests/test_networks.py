import jax
import jax.numpy as jnp
import numpy as np

from o2o.core.networks import TanhGaussian, TanhGaussianPolicy, critic_ensemble


def test_critic_ensemble_shapes_and_independent_members():
    critic = critic_ensemble((32, 32), num=5)
    obs, act = jnp.ones((7, 4)), jnp.ones((7, 2))
    params = critic.init(jax.random.PRNGKey(0), obs, act)["params"]
    q = critic.apply({"params": params}, obs, act)
    assert q.shape == (5, 7)
    kernels = jax.tree.leaves(params)
    assert all(k.shape[0] == 5 for k in kernels)
    # Members are initialised independently, so they disagree on the same input.
    assert len(np.unique(np.round(np.asarray(q[:, 0]), 5))) == 5


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    mean = jnp.array([[0.3, -1.2]])
    log_std = jnp.array([[-0.5, 0.2]])
    dist = TanhGaussian(mean, log_std)
    actions, log_prob = dist.sample_and_log_prob(jax.random.PRNGKey(1))
    u = np.arctanh(np.asarray(actions, np.float64))
    std = np.exp(np.asarray(log_std, np.float64))
    gaussian = -0.5 * ((u - np.asarray(mean)) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    expected = np.sum(gaussian - np.log(1 - np.tanh(u) ** 2), axis=-1)
    np.testing.assert_allclose(log_prob, expected, rtol=1e-4)
    np.testing.assert_allclose(dist.log_prob(actions), expected, rtol=1e-3)


def test_policy_actions_are_bounded():
    policy = TanhGaussianPolicy((16,), 3)
    obs = 100 * jnp.ones((4, 5))
    params = policy.init(jax.random.PRNGKey(0), obs)["params"]
    actions, _ = policy.apply({"params": params}, obs).sample_and_log_prob(jax.random.PRNGKey(2))
    assert actions.shape == (4, 3) and bool(jnp.all(jnp.abs(actions) <= 1.0))
