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


def adroit_env_id(task: str) -> str:
    """``gymnasium.make``-able id of a task's evaluation env (module-prefixed)."""
    return f"{__name__}:{GYM_NAMES[task]}"


def adroit_task_of(env_id: str) -> str | None:
    """'AdroitHandPen-v1' (Minari's env spec) or o2o's own id -> 'pen'; None otherwise."""
    name = env_id.split(":")[-1].split("-")[0]
    for task in TASKS:
        if name in (ROBOTICS_IDS[task].split("-")[0], GYM_NAMES[task].split("-")[0]):
            return task
    return None


def is_adroit(env_id: str | None) -> bool:
    return env_id is not None and adroit_task_of(env_id) is not None


class D4RLAdroit(gym.Wrapper):
    """gymnasium-robotics' Adroit task reporting D4RL's episode-level success."""

    def __init__(self, env: gym.Env, min_goal_steps: int) -> None:
        super().__init__(env)
        self.min_goal_steps = min_goal_steps
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
        return observation, reward, terminated, truncated, info


def make_adroit(task: str, min_goal_steps: int | None = None) -> D4RLAdroit:
    """The gymnasium-robotics env of ``task`` (no time limit of its own; the registered id
    carries D4RL's) with D4RL's success rule."""
    quiet_robotics_notice()
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    inner = gym.make(ROBOTICS_IDS[task], max_episode_steps=None).unwrapped
    threshold = MIN_GOAL_STEPS[task] if min_goal_steps is None else min_goal_steps
    return D4RLAdroit(inner, threshold)


for _task in TASKS:
    if GYM_NAMES[_task] not in gym.registry:
        gym.register(
            id=GYM_NAMES[_task],
            entry_point=f"{__name__}:make_adroit",
            kwargs={"task": _task},
            max_episode_steps=MAX_EPISODE_STEPS[_task],
        )
