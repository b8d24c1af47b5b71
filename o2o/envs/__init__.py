"""Environment factory and batched evaluation."""

from o2o.envs.evaluation import EvalResult, evaluate
from o2o.envs.factory import env_dims, make_env, register_env

__all__ = ["EvalResult", "env_dims", "evaluate", "make_env", "register_env"]
