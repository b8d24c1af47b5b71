"""Adroit and AntMaze: D4RL/Minari resolution, D4RL's evaluation conventions, local stand-ins."""

from __future__ import annotations

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest

from o2o.data import env_id_for, load, score_reference
from o2o.data.registry import lookup, resolve_path
from o2o.data.standin import parse_target, write_d4rl_standin, write_minari_standin
from o2o.envs.adroit import D4RLAdroit, adroit_binary_env_id, adroit_env_id
from o2o.envs.evaluation import EnvGrid, evaluate
from o2o.envs.maze import antmaze_d4rl_env_id, antmaze_env_id
from o2o.errors import ConfigError, DatasetError

pytest.importorskip("gymnasium_robotics")

# The real envs' spaces (gymnasium-robotics AdroitHand*-v1 = D4RL's hand_manipulation_suite).
ADROIT_DIMS = {"pen": (45, 24), "door": (39, 28), "hammer": (46, 26), "relocate": (39, 30)}
# d4rl/hand_manipulation_suite/__init__.py: max_episode_steps and *_RANDOM/EXPERT_SCORE.
D4RL_LIMITS = {"pen": 100, "door": 200, "hammer": 200, "relocate": 200}
D4RL_ADROIT_REFS = {
    "pen": (96.262799, 3076.8331017826877),
    "door": (-56.512833, 2880.5693087298737),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
}


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path


# --- registry and normalization -------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(D4RL_ADROIT_REFS))
def test_adroit_names_resolve_to_d4rl_task_and_constants(task):
    for level in ("human", "cloned", "expert"):
        assert lookup(f"{task}-{level}-v1").env_id == adroit_env_id(task)
        assert lookup(f"D4RL/{task}/{level}-v2").env_id == adroit_env_id(task)
        info = score_reference(f"{task}-{level}-v1")
        assert info.provenance == "d4rl"
        assert (info.ref_min, info.ref_max) == D4RL_ADROIT_REFS[task]
    ref_min, ref_max = D4RL_ADROIT_REFS[task]
    returns = np.array([ref_min, ref_max, 0.5 * (ref_min + ref_max)])
    np.testing.assert_allclose(score_reference(f"{task}-human-v1").normalize(returns), [0, 100, 50])


def test_antmaze_names_resolve_and_score_is_success_percent():
    for variant, maze in (
        ("umaze", "umaze"),
        ("medium-play", "medium"),
        ("large-diverse", "large"),
    ):
        assert lookup(f"antmaze-{variant}-v2").env_id == antmaze_d4rl_env_id(maze)
        assert lookup(f"D4RL/antmaze/{variant}-v1").env_id == antmaze_env_id(maze)
    info = score_reference("antmaze-large-diverse-v2")
    assert (info.ref_min, info.ref_max) == (0.0, 1.0)
    assert info.normalize(np.array([0.0, 1.0, 0.25])).tolist() == [0.0, 100.0, 25.0]


def test_absent_files_say_where_and_how(dirs):
    with pytest.raises(DatasetError, match=r"minari download D4RL/pen/human-v2"):
        resolve_path("D4RL/pen/human-v2")
    with pytest.raises(DatasetError, match=r"antmaze-umaze-v2\.hdf5 not found.*D4RL_DATASET_DIR"):
        resolve_path("antmaze-umaze-v2")


# --- envs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(ADROIT_DIMS))
def test_adroit_env_has_real_spaces_and_d4rl_time_limit(task):
    env = gym.make(adroit_env_id(task))
    assert env.spec.max_episode_steps == D4RL_LIMITS[task]
    assert env.observation_space.shape == (ADROIT_DIMS[task][0],)
    assert env.action_space.shape == (ADROIT_DIMS[task][1],)
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    _, info = env.reset(seed=0)
    assert info["success"] is False
    env.close()


class GoalSteps(gym.Env):
    """goal_achieved (gymnasium-robotics' ``success``) on steps ``first`` .. ``first + n - 1``."""

    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.Box(-1, 1, (1,))

    def __init__(self, first: int, n: int, length: int = 40):
        self.first, self.n, self.length = first, n, length

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        goal = self.first <= self.t < self.first + self.n
        self.t += 1
        return np.zeros(2, np.float32), 1.0, False, self.t >= self.length, {"success": goal}


@pytest.mark.parametrize(("goal_steps", "success"), [(21, True), (20, False), (0, False)])
def test_d4rl_success_rule_counts_goal_steps(goal_steps, success):
    """D4RL pen: success iff goal_achieved on more than 20 steps (evaluate_success)."""
    env = D4RLAdroit(GoalSteps(first=5, n=goal_steps), min_goal_steps=20)
    env.reset()
    flags = []
    for _ in range(40):
        info = env.step(np.zeros(1))[4]
        flags.append(info["success"])
    assert flags[-1] is success
    if success:  # on from the 21st goal step (step index 5 + 20) to the end
        assert flags.index(True) == 25 and all(flags[25:])


def test_binary_reward_is_goal_achieved_minus_one():
    env = D4RLAdroit(GoalSteps(first=1, n=2), min_goal_steps=20, binary=True)
    env.reset()
    rewards = [env.step(np.zeros(1))[1] for _ in range(4)]
    assert rewards == [-1.0, 0.0, 0.0, -1.0]
    assert gym.make(adroit_binary_env_id("door")).spec.max_episode_steps == 200


def test_evaluation_reports_d4rl_success_rate():
    for goal_steps in (26, 25):
        name = f"O2OTestGoalSteps{goal_steps}-v0"
        if name not in gym.registry:
            gym.register(
                name,
                entry_point=lambda n=goal_steps: D4RLAdroit(GoalSteps(3, n), min_goal_steps=25),
                max_episode_steps=40,
            )
    passing = evaluate(EnvGrid("O2OTestGoalSteps26-v0", 1, 2), lambda o: np.zeros((1, 2, 1)), 0)
    failing = evaluate(EnvGrid("O2OTestGoalSteps25-v0", 1, 2), lambda o: np.zeros((1, 2, 1)), 0)
    assert passing.success_rate.tolist() == [1.0] and failing.success_rate.tolist() == [0.0]


# D4RL's U_MAZE and LARGE_MAZE (d4rl/locomotion/maze_env.py) as D4RL writes them (rows top to
# bottom, start R at (1, 1)), with D4RL's goal G in (x, y): ((col - 1) * 4, (row - 1) * 4).
D4RL_MAZES = {
    "umaze": ([[1] * 5, [1, 0, 0, 0, 1], [1, 1, 1, 0, 1], [1, 0, 0, 0, 1], [1] * 5], (0.0, 8.0)),
    "large": (
        [
            [1] * 12,
            [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
            [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
            [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
            [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
            [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
            [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
            [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1],
            [1] * 12,
        ],
        (32.0, 24.0),
    ),
}


@pytest.mark.parametrize("maze_name", sorted(D4RL_MAZES))
def test_d4rl_frame_antmaze_matches_d4rl_geometry(maze_name):
    """Walls where D4RL has them, D4RL's coordinates, D4RL's goal, start near the origin."""
    d4rl_map, d4rl_goal = D4RL_MAZES[maze_name]
    env = gym.make(antmaze_d4rl_env_id(maze_name))
    observation, _ = env.reset(seed=0)
    maze = env.unwrapped
    assert observation.shape == (29,)
    assert env.spec.max_episode_steps == {"umaze": 700, "large": 1000}[maze_name]
    assert np.abs(observation[:2]).max() <= 1.0  # start cell ± gymnasium-robotics' noise
    np.testing.assert_allclose(maze.goal_xy - maze.origin, d4rl_goal)
    rows = len(d4rl_map)
    for r, row in enumerate(d4rl_map):
        for c, wall in enumerate(row):
            cell = np.array([rows - 1 - r, c])  # gymnasium-robotics lays rows along -y
            assert maze.maze_map[cell[0]][c] == wall
            xy = maze._env.maze.cell_rowcol_to_xy(cell) - maze.origin
            np.testing.assert_allclose(xy, [(c - 1) * 4.0, (r - 1) * 4.0])
            if not wall:  # D4RL's free cell is free in the simulated maze at that point
                assert maze._env.maze.maze_map[cell[0]][c] == 0
    # The ant put on the goal: reward 1, success, termination (D4RL's eval task).
    data = maze._env.ant_env.data
    data.qpos[:2] = maze.goal_xy
    _, reward, terminated, _, info = env.step(np.zeros(8, np.float32))
    assert reward == 1.0 and terminated and info["success"]
    env.close()


# --- stand-ins in the real layouts ----------------------------------------------------------


def test_d4rl_adroit_standin_layout_and_load(dirs):
    path = write_d4rl_standin(parse_target("door-cloned-v1"), dirs / "data", 2, 30)
    assert path.name == "door-cloned-standin.hdf5"
    with h5py.File(path) as handle:
        assert {"observations", "actions", "rewards", "terminals", "timeouts"} <= set(handle)
        assert "next_observations" not in handle  # D4RL's Adroit v1 files have none
        assert {"goal_achieved", "qpos", "qvel"} <= set(handle["infos"])
        assert "env_id" not in handle["metadata"].attrs  # like D4RL: the name says the env
    data = load(path)
    assert env_id_for(data) == adroit_env_id("door")
    assert data.metadata["env_checked"] is True
    assert (data.obs_dim, data.act_dim) == ADROIT_DIMS["door"]
    # next_observations derived within episodes; each episode's timeout row is dropped.
    assert data.size == 2 * 29 and data.num_episodes == 2
    assert data.infos["goal_achieved"].shape == (data.size,)
    assert score_reference(data).provenance == "d4rl"


def test_d4rl_antmaze_standin_layout_and_load(dirs):
    path = write_d4rl_standin(parse_target("antmaze-umaze-diverse-v2"), dirs / "data", 2, 25)
    with h5py.File(path) as handle:
        goal = handle["infos/goal"][()]
        assert handle["observations"].shape[1] == 29 and handle["infos/qpos"].shape[1] == 15
    np.testing.assert_allclose(goal, np.broadcast_to([0.0, 8.0], goal.shape))
    data = load(path)
    assert env_id_for(data) == antmaze_d4rl_env_id("umaze") and data.metadata["env_checked"]
    assert set(np.unique(data.rewards)) <= {0.0, 1.0}
    # The first episode starts in the goal cell: D4RL's torso (x, y) near (0, 8).
    assert np.linalg.norm(data.observations[0, :2] - [0.0, 8.0]) <= 1.5


def test_d4rl_files_resolve_by_name_under_d4rl_download_names(dirs, monkeypatch):
    """A user's ~/.d4rl/datasets as D4RL leaves it: AntMaze under its download name."""
    import shutil

    d4rl_dir = dirs / "d4rl"
    d4rl_dir.mkdir()
    monkeypatch.setenv("D4RL_DATASET_DIR", str(d4rl_dir))
    made = write_d4rl_standin(parse_target("antmaze-large-play-v2"), dirs / "data", 1, 5)
    original = "Ant_maze_hardest-maze_noisy_multistart_True_multigoal_False_sparse_fixed.hdf5"
    shutil.copy(made, d4rl_dir / original)
    shutil.copy(
        write_d4rl_standin(parse_target("relocate-human-v1"), dirs, 1, 5),
        d4rl_dir / "relocate-human-v1.hdf5",
    )
    assert resolve_path("antmaze-large-play-v2") == d4rl_dir / original
    assert env_id_for(load("antmaze-large-play-v2")) == antmaze_d4rl_env_id("large")
    data = load("relocate-human-v1")
    assert env_id_for(data) == adroit_env_id("relocate") and data.metadata["env_checked"]


def test_minari_standins_resolve_from_the_env_spec(dirs):
    pen = write_minari_standin(parse_target("D4RL/pen/expert-v2"), episodes=2, max_steps=15)
    spec = json.loads((pen / "data" / "metadata.json").read_text())["env_spec"]
    assert json.loads(spec)["id"] == "AdroitHand" + "Pen-v1"
    data = load("o2o-standin/pen/expert-v2")
    assert env_id_for(data) == adroit_env_id("pen") and data.metadata["env_checked"]
    assert data.metadata["minari_env_id"] == "AdroitHandPen-v1"
    assert data.infos["goal_achieved"].shape == (30,)
    assert (data.obs_dim, data.act_dim) == ADROIT_DIMS["pen"]

    write_minari_standin(parse_target("D4RL/antmaze/medium-diverse-v1"), episodes=1, max_steps=10)
    maze = load("o2o-standin/antmaze/medium-diverse-v1")
    assert env_id_for(maze) == antmaze_env_id("medium") and maze.obs_dim == 29


def test_dims_and_bounds_are_checked_against_the_real_env(dirs):
    path = write_d4rl_standin(parse_target("pen-human-v1"), dirs / "data", 1, 10)
    with pytest.raises(DatasetError, match="dimension 45 does not match"):
        load(path, env=adroit_env_id("door"))
    with h5py.File(path, "r+") as handle:
        handle["actions"][0] = 3.0
    with pytest.raises(DatasetError, match="action"):
        load(path)


def test_standin_names_and_overwrites_are_checked(dirs):
    for bad in ("pen-random-v1", "D4RL/kitchen/mixed-v2", "antmaze-huge-v2", "pen"):
        with pytest.raises(ConfigError, match="cannot make a stand-in"):
            parse_target(bad)
    target = parse_target("hammer-human-v1")
    write_d4rl_standin(target, dirs / "data", 1, 5)
    with pytest.raises(ConfigError, match="exists"):
        write_d4rl_standin(target, dirs / "data", 1, 5)


# --- domains, presets, reward conventions ---------------------------------------------------


def test_domain_presets_and_binary_convention(dirs):
    from o2o.agents import domain_config
    from o2o.experiment.pipeline import (
        PipelineConfig,
        adroit_binary,
        dataset_domain,
        domain_of,
        preprocess_for,
    )

    assert domain_of("D4RL/pen/human-v2") == "adroit" and domain_of("antmaze-umaze-v2") == "maze"
    assert domain_of("/x/relocate-expert-standin.hdf5") == "adroit"
    assert domain_of("hopper-medium-v2") == "locomotion"
    iql = domain_config("iql", "adroit")
    assert (iql.beta, iql.expectile) == (3.0, 0.8)
    cal_ql = domain_config("calql", "adroit")
    assert (cal_ql.cql_alpha, cal_ql.cql_lagrange, cal_ql.critic_hidden_dims) == (
        1.0,
        False,
        (256, 256, 256),
    )
    assert domain_config("awac", "adroit").awac_lambda == 0.1
    spot = domain_config("spot", "adroit")
    assert (spot.lambd, spot.lambd_end, spot.lambd_cool) == (0.25, 0.2, True)
    with pytest.raises(ConfigError, match="domain must be one of"):
        domain_config("iql", "kitchen")

    data = load(write_d4rl_standin(parse_target("pen-cloned-v1"), dirs / "data", 2, 20))
    assert dataset_domain(data) == "adroit"
    goal = np.zeros(data.size, bool)
    goal[[3, 4, 30]] = True
    data = data.replace(infos={**data.infos, "goal_achieved": goal})
    binary, env_id = adroit_binary(data)
    assert env_id == adroit_binary_env_id("pen")
    np.testing.assert_array_equal(binary.rewards, np.where(goal, 0.0, -1.0))
    config = PipelineConfig(reward_convention="adroit_binary")
    preprocess, convention = preprocess_for(domain_config("calql", "adroit"), binary, config)
    assert convention == "adroit_binary"
    np.testing.assert_array_equal(preprocess.rewards(binary.rewards), np.where(goal, 5.0, -5.0))
    with pytest.raises(ConfigError, match="needs per-step goal_achieved"):
        adroit_binary(data.replace(infos={}))


# --- end to end: load, validate, train, evaluate with success rate, report ------------------


def _train(argv, tmp_path):
    from o2o.cli import main

    common = ["--runs-dir", str(tmp_path / "runs"), "--no-progress", "--eval-episodes", "1"]
    common += ["--batch-size", "32", "--offline-eval-every", "100", "--online-eval-every", "100"]
    common += ["--offline-steps", "100", "--online-steps", "100"]
    assert main(["train", *argv, *common]) == 0
    run = next((tmp_path / "runs").iterdir())
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "algo", "extra"),
    [
        ("pen-human-v1", "iql", []),
        ("D4RL/door/cloned-v2", "calql", ["--reward-convention", "adroit_binary"]),
        ("antmaze-umaze-v2", "iql", []),
        ("D4RL/antmaze/umaze-v1", "td3bc", []),
    ],
)
def test_train_on_each_standin(dirs, name, algo, extra):
    target = parse_target(name)
    if target.layout == "d4rl":
        dataset = str(write_d4rl_standin(target, dirs / "data", 2, 60))
    else:
        write_minari_standin(target, episodes=2, max_steps=60)
        dataset = target.minari_id
    small = {"calql": ["actor_hidden_dims=[16]", "critic_hidden_dims=[16]"]}
    sets = [x for value in small.get(algo, ["hidden_dims=[16]"]) for x in ("--set", value)]
    rows = _train(["--dataset", dataset, "--algo", algo, *sets, *extra], dirs)
    evaluations = [r for r in rows if "normalized_score" in r]
    assert [r["phase"] for r in evaluations] == ["offline", "online"]
    for row in evaluations:
        assert 0.0 <= row["success_rate"] <= 1.0 and np.isfinite(row["normalized_score"])


def test_datasets_cli_lists_both_families_and_makes_standins(dirs, capsys):
    from o2o.data.cli import main

    assert main(["list"]) == 0
    listing = " ".join(capsys.readouterr().out.split())  # rich wraps to the terminal
    for name in ("pen-human-v1", "relocate-expert-v1", "antmaze-large-diverse-v2"):
        assert name in listing
    assert "D4RL/pen/human-v2" in listing and "D4RL/antmaze/umaze-v1" in listing
    assert "minari download" in listing and "make-standin" in listing
    assert main(["make-standin", "kitchen-mixed-v1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: cannot make a stand-in") and error.count("\n") == 1
    assert (
        main(["make-standin", "D4RL/hammer/human-v2", "--episodes", "1", "--max-steps", "5"]) == 0
    )
    out = " ".join(capsys.readouterr().out.split())
    assert "o2o train --dataset o2o-standin/hammer/human-v2" in out
    assert main(["make-standin", "D4RL/hammer/human-v2", "--episodes", "1"]) == 2  # exists
    assert main(["info", "o2o-standin/hammer/human-v2"]) == 0
    assert "O2OAdroitHammer-v0" in "".join(capsys.readouterr().out.split())
