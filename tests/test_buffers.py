import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.core import buffers as buf
from o2o.core.types import Transition
from o2o.errors import ConfigError


def chunk(values, obs_dim=2, act_dim=1) -> Transition:
    """Transitions whose every column carries ``values`` so rows are identifiable."""
    v = np.asarray(values, np.float32)
    return Transition(
        observations=np.repeat(v[:, None], obs_dim, 1),
        actions=np.repeat(v[:, None], act_dim, 1),
        rewards=v,
        next_observations=np.repeat(v[:, None] + 0.5, obs_dim, 1),
        terminals=np.zeros_like(v),
        mc_returns=np.zeros_like(v),
    )


def test_add_fills_in_order_and_tracks_size():
    b = buf.create_buffer(5, 2, 1)
    b = buf.add(b, chunk([1, 2, 3]))
    assert int(b.size) == 3 and int(b.pointer) == 3
    np.testing.assert_array_equal(b.data.rewards, [1, 2, 3, 0, 0])
    np.testing.assert_array_equal(b.data.next_observations[:3, 0], [1.5, 2.5, 3.5])


def test_add_wraps_around_and_overwrites_oldest():
    b = buf.create_buffer(5, 2, 1)
    b = buf.add(b, chunk([1, 2, 3, 4]))
    b = buf.add(b, chunk([5, 6, 7]))
    assert int(b.size) == 5 and int(b.pointer) == 2
    np.testing.assert_array_equal(b.data.rewards, [6, 7, 3, 4, 5])


def test_sample_only_returns_valid_rows():
    b = buf.add(buf.create_buffer(100, 2, 1), chunk([7, 8, 9]))
    batch = buf.sample(b, jax.random.PRNGKey(0), 1000)
    assert set(np.unique(batch.rewards).tolist()) == {7.0, 8.0, 9.0}
    # Columns stay aligned within a sampled row.
    np.testing.assert_array_equal(batch.observations[:, 0], batch.rewards)
    np.testing.assert_array_equal(batch.next_observations[:, 0], batch.rewards + 0.5)


def test_buffer_from_transitions_with_room_to_append():
    b = buf.buffer_from_transitions(chunk([1, 2]), capacity=4)
    b = buf.add(b, chunk([3]))
    np.testing.assert_array_equal(b.data.rewards, [1, 2, 3, 0])
    assert int(b.size) == 3
    with pytest.raises(ConfigError):
        buf.buffer_from_transitions(chunk([1, 2, 3]), capacity=2)


def test_split_batch_is_exact_and_proportional():
    assert buf.split_batch(256, {"offline": 0.5, "online": 0.5}) == {"offline": 128, "online": 128}
    counts = buf.split_batch(10, {"a": 1, "b": 1, "c": 1})
    assert sum(counts.values()) == 10 and sorted(counts.values()) == [3, 3, 4]
    assert buf.split_batch(7, {"online": 1.0, "offline": 0.0}) == {"online": 7, "offline": 0}
    with pytest.raises(ConfigError):
        buf.split_batch(0, {"a": 1})
    with pytest.raises(ConfigError):
        buf.split_batch(8, {"a": -1, "b": 2})


def test_mixed_sampler_draws_each_source_in_its_ratio():
    offline = buf.buffer_from_transitions(chunk(np.ones(50)))
    online = buf.add(buf.create_buffer(50, 2, 1), chunk(2 * np.ones(10)))
    sampler = buf.Sampler.from_fractions(100, offline=0.25, online=0.75)
    batch = jax.jit(sampler)({"offline": offline, "online": online}, jax.random.PRNGKey(3))
    assert batch.rewards.shape == (100,)
    assert int(jnp.sum(batch.rewards == 1.0)) == 25
    assert int(jnp.sum(batch.rewards == 2.0)) == 75


def test_sampler_names_missing_buffers():
    sampler = buf.Sampler.from_fractions(8, offline=0.5, online=0.5)
    with pytest.raises(ConfigError, match="offline"):
        sampler({"online": buf.create_buffer(4, 2, 1)}, jax.random.PRNGKey(0))


def test_vmapped_add_keeps_seeds_apart():
    one = buf.create_buffer(4, 2, 1)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), one)
    chunks = jax.tree.map(lambda a, b: jnp.stack([a, b]), chunk([1, 2]), chunk([3, 4]))
    out = jax.vmap(buf.add)(stacked, chunks)
    np.testing.assert_array_equal(out.data.rewards, [[1, 2, 0, 0], [3, 4, 0, 0]])
