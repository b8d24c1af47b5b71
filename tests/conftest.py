import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from o2o.core import compile_cache  # noqa: E402

# Tests build many identical jitted functions (a new closure per trainer); the persistent
# cache lets them share compiled executables within and across test runs.
compile_cache.enable(os.path.join(os.path.dirname(__file__), "..", ".cache", "jax"))
