"""Adroit hand tasks (pen, door, hammer, relocate) with D4RL's evaluation conventions.

The dynamics are gymnasium-robotics' ``AdroitHand{Pen,Door,Hammer,Relocate}-v1`` (the port of
D4RL's ``hand_manipulation_suite``, same observation and action spaces: obs 45/39/46/39,
actions 24/28/26/30 in [-1, 1]); on top of them o2o registers ``O2OAdroit{Task}-v0`` with:

* D4RL's time limits (``d4rl/hand_manipulation_suite/__init__.py``): 100 steps for pen,
  200 for door, hammer and relocate. Gymnasium registers 200 for pen.
* D4RL's success rule (``evaluate_success`` in ``d4rl/hand_manipulation_suite/*_v0.py``): an
  episode succeeds when ``goal_achieved`` held on more than 20 of its steps (pen) or more than
  25 (door, hammer, relocate). ``info["success"]`` is that episode-level flag so far (it turns
  on at the qualifying step and stays on); ``info["goal_achieved"]`` is the per-step flag.
  CORL counts an episode as a success when ``goal_achieved`` held once; that is
  ``min_goal_steps=0`` (``gymnasium.make(id, min_goal_steps=0)``).
* ``O2OAdroit{Task}Binary-v0``: the same task with Cal-QL's binary reward, goal_achieved − 1
  (AWAC's and Cal-QL's ``pen-binary-v0`` ...; Cal-QL's ``ENV_CONFIG["adroit-binary"]``:
  reward_pos 0, reward_neg −1), for the ``adroit_binary`` reward convention.

Rewards are gymnasium-robotics 1.4.2's dense v1 rewards. gymnasium-robotics 1.2.1 changed the
door, hammer and relocate rewards without a version bump (Gymnasium-Robotics PR 220), so their
returns (and normalized scores against D4RL's constants, computed on the original mj_envs
rewards) are not directly comparable with published D4RL numbers; pen's reward is unchanged
and success rates are comparable on every task. See docs/datasets.md.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from o2o.envs.factory import quiet_robotics_notice

TASKS = ("pen", "door", "hammer", "relocate")
# D4RL's max_episode_steps per task.
MAX_EPISODE_STEPS = {"pen": 100, "door": 200, "hammer": 200, "relocate": 200}
# D4RL's evaluate_success: success when goal_achieved on more than this many steps.
MIN_GOAL_STEPS = {"pen": 20, "door": 25, "hammer": 25, "relocate": 25}
ROBOTICS_IDS = {task: f"AdroitHand{task.capitalize()}-v1" for task in TASKS}
GYM_NAMES = {task: f"O2OAdroit{task.capitalize()}-v0" for task in TASKS}
BINARY_GYM_NAMES = {task: f"O2OAdroit{task.capitalize()}Binary-v0" for task in TASKS}


def adroit_env_id(task: str) -> str:
    """``gymnasium.make``-able id of a task's evaluation env (module-prefixed)."""
    return f"{__name__}:{GYM_NAMES[task]}"


def adroit_task_of(env_id: str) -> str | None:
    """'AdroitHandPen-v1' (Minari's env spec) or o2o's own id -> 'pen'; None otherwise."""
    name = env_id.split(":")[-1].split("-")[0]
    for task in TASKS:
        ids = (ROBOTICS_IDS[task], GYM_NAMES[task], BINARY_GYM_NAMES[task])
        if name in (i.split("-")[0] for i in ids):
            return task
    return None


def is_adroit(env_id: str | None) -> bool:
    return env_id is not None and adroit_task_of(env_id) is not None


class D4RLAdroit(gym.Wrapper):
    """gymnasium-robotics' Adroit task reporting D4RL's episode-level success; with ``binary``
    the reward is Cal-QL's binary one (``pen-binary-v0`` ...): goal_achieved − 1."""

    def __init__(self, env: gym.Env, min_goal_steps: int, binary: bool = False) -> None:
        super().__init__(env)
        self.min_goal_steps = min_goal_steps
        self.binary = binary
        self.goal_steps = 0

    def reset(self, **kwargs: Any):
        self.goal_steps = 0
        observation, info = self.env.reset(**kwargs)
        return observation, {**info, "success": False}

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        goal_achieved = bool(info.get("success", False))
        self.goal_steps += goal_achieved
        info = {
            **info,
            "goal_achieved": goal_achieved,
            "success": self.goal_steps > self.min_goal_steps,
        }
        if self.binary:
            reward = float(goal_achieved) - 1.0
        return observation, reward, terminated, truncated, info


def make_adroit(task: str, min_goal_steps: int | None = None, binary: bool = False) -> D4RLAdroit:
    """The gymnasium-robotics env of ``task`` (no time limit of its own; the registered id
    carries D4RL's) with D4RL's success rule."""
    quiet_robotics_notice()
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    inner = gym.make(ROBOTICS_IDS[task], max_episode_steps=None).unwrapped
    threshold = MIN_GOAL_STEPS[task] if min_goal_steps is None else min_goal_steps
    return D4RLAdroit(inner, threshold, binary)


def adroit_binary_env_id(task: str) -> str:
    """The task with Cal-QL's binary reward (the ``adroit_binary`` reward convention)."""
    return f"{__name__}:{BINARY_GYM_NAMES[task]}"


for _task in TASKS:
    for _name, _binary in ((GYM_NAMES[_task], False), (BINARY_GYM_NAMES[_task], True)):
        if _name not in gym.registry:
            gym.register(
                id=_name,
                entry_point=f"{__name__}:make_adroit",
                kwargs={"task": _task, "binary": _binary},
                max_episode_steps=MAX_EPISODE_STEPS[_task],
            )
