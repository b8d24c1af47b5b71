"""Offline datasets: one Dataset type, D4RL-HDF5 / Minari / own-format loaders with
validation, named local suites, normalized scores with provenance, and the generator."""

from o2o.data.dataset import Dataset, concatenate
from o2o.data.hdf5 import read_hdf5, write_hdf5
from o2o.data.loader import env_id_for, load
from o2o.data.minari_io import read_minari
from o2o.data.registry import data_dir, reference_dir, registry, resolve_path
from o2o.data.scores import ScoreInfo, normalized_score, score_reference


def save(dataset: Dataset, path: str) -> None:
    """Write ``dataset`` in o2o's own format (D4RL-layout HDF5 + metadata), atomically."""
    write_hdf5(dataset, path)


__all__ = [
    "Dataset",
    "ScoreInfo",
    "concatenate",
    "data_dir",
    "env_id_for",
    "load",
    "normalized_score",
    "read_hdf5",
    "read_minari",
    "reference_dir",
    "registry",
    "resolve_path",
    "save",
    "score_reference",
    "write_hdf5",
]
