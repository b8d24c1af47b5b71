"""A toy fine-tuning method in one file, using four slots of the seam (docs/methods.md):
a reward change, a network of its own trained inside the fused update, an extra policy
input, and a phase between offline and online. Registered by the one line at the end."""

from dataclasses import dataclass

import jax.numpy as jnp
import optax

from o2o.core.engine import Phase
from o2o.core.networks import MLP
from o2o.core.train_state import TrainState
from o2o.finetune import Method, register


@dataclass(frozen=True)
class ToyConfig:
    bonus: float = 0.1  # r' = r + bonus · tanh(f(s, a)), f a learned reward model
    phase_steps: int = 40  # fits f on the offline data before fine-tuning
    lr: float = 1e-3


class Toy(Method):
    name = "toy"
    config_class = ToyConfig
    slots = frozenset({"reward", "policy_inputs", "state_update", "phases"})
    trains_offline = True  # its policy input exists from the first offline step
    policy_input_dim = 2

    def init_state(self, agent, agent_state, key, preprocess):
        x = jnp.zeros((1, self.obs_dim + self.act_dim))
        model = TrainState.create(MLP((16,), 1), key, (x,), optax.adam(self.config.lr))
        return {"model": model, "steps": jnp.int32(0)}

    def predicted(self, state, observations, actions, params=None):
        x = jnp.concatenate([observations, actions], axis=-1)
        return state["model"](x, params=params)[..., 0]

    def reward(self, state, inputs):
        batch = inputs.batch
        bonus = jnp.tanh(self.predicted(state, batch.observations, batch.actions))
        return batch.rewards + self.config.bonus * bonus

    def features(self, state, observations):
        value = jnp.tanh(
            self.predicted(state, observations, jnp.zeros((*observations.shape[:-1], self.act_dim)))
        )
        return jnp.stack([value, jnp.ones_like(value)], axis=-1)

    def policy_inputs(self, state, batch, key):
        return self.features(state, batch.observations)

    def acting_inputs(self, state, observations, key, deterministic):
        return self.features(state, observations)

    def fit(self, state, batch):
        def loss(params):
            error = self.predicted(state, batch.observations, batch.actions, params) - batch.rewards
            return jnp.mean(error**2), {"toy/model_loss": jnp.mean(error**2)}

        model, metrics = state["model"].minimize(loss)
        return {"model": model, "steps": state["steps"] + 1}, metrics

    def update(self, state, agent, agent_state, batch, key):
        return self.fit(state, batch)

    def phases(self, agent):
        def update(agent_state, batch, key):
            own, metrics = self.fit(agent_state.extras[self.name], batch)
            return agent_state.replace(extras={**agent_state.extras, self.name: own}), metrics

        return (Phase("toy_fit", self.config.phase_steps, update, "before_online"),)


register(Toy)
