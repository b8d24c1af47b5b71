import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Most tests run tiny networks for a few hundred steps, so XLA's compile time is most of their
# cost: optimisation level 1 compiles about a third faster and runs these updates no slower
# (a cold-cache CLI O2SAC run 96 -> 69 s, SAC on Pendulum 66 -> 55 s on one core). Set here,
# before JAX loads, so that the subprocesses the tests start inherit it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1"
    ).strip()

from o2o.core import compile_cache  # noqa: E402

# Tests build many identical jitted functions (a new closure per trainer); the persistent
# cache lets them share compiled executables within and across test runs.
compile_cache.enable(os.path.join(os.path.dirname(__file__), "..", ".cache", "jax"))
