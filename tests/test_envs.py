"""The env factory: actions in [-1, 1], and MuJoCo's asset warnings kept off the output."""

import numpy as np
import pytest

from o2o.envs import factory
from o2o.envs.factory import make_env


def test_actions_are_rescaled_to_the_unit_box():
    env = make_env("Pendulum-v1")
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    np.testing.assert_array_equal(env.action_space.high, 1.0)
    env.close()


def test_halfcheetah_asset_deprecation_is_not_printed(capfd):
    env = make_env("HalfCheetah-v5")
    env.reset(seed=0)
    env.close()
    captured = capfd.readouterr()
    assert "settotalmass" not in captured.out + captured.err


def test_other_mujoco_warnings_become_python_warnings():
    with pytest.warns(RuntimeWarning, match="MuJoCo: something else"):
        factory._mujoco_warning("something else")


def test_the_maze_envs_import_without_the_robotics_notice():
    """gymnasium-robotics prints an Adroit reward notice to stderr when imported; a PointMaze
    run must not show it (a fresh process: the notice is printed once per import)."""
    import subprocess
    import sys

    code = "from o2o.envs.maze import make_point_maze; make_point_maze('umaze', False).close()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "reward functions were updated" not in done.stderr + done.stdout
