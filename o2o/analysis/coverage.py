"""Data coverage of an environment's dataset levels (SAMG paper, Appendix C.7).

Pool the levels (random, medium, medium-replay, expert, medium-expert), draw a uniform
subsample, embed states and actions separately with t-SNE, cluster each embedding
hierarchically (Ward), and say a level "has" a cluster centre when more than ``min_samples``
of its subsampled points carry that cluster's label. A level's coverage is the fraction of
centres it has; repeated over seeds (each seed a new subsample and t-SNE).

[RECON] The paper subsamples 10% of full D4RL pools (millions of points) and uses 50
samples as the threshold; it gives neither the number of clusters nor the linkage. t-SNE on
tens of thousands of points takes long on a laptop, so the subsample is capped
(``max_points``) and the default threshold scales with its size: 50 per 50,000 points, at
least 3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from o2o.errors import ConfigError, O2OError, check
from o2o.experiment.checkpoint import atomic_write_bytes
from o2o.experiment.runs import json_text

PAPER_MIN_SAMPLES = 50
PAPER_SCALE_POINTS = 50_000
MODALITIES = ("states", "actions")


@dataclass(frozen=True)
class CoverageConfig:
    fraction: float = 0.1  # uniform subsample of the pool (the paper's 10%)
    max_points: int = 4_000  # cap on the subsample: t-SNE time grows faster than linearly
    clusters: int = 20  # clusters of the hierarchical clustering [RECON]
    min_samples: int | None = None  # None: 50 per 50,000 subsampled points, at least 3
    seeds: int = 3  # the paper repeats 10 times
    perplexity: float = 30.0
    iterations: int = 1000  # t-SNE optimisation steps (scikit-learn's default)
    # OpenMP threads of t-SNE. One by default: with other jobs on the cores, more threads
    # spin-wait and ran 5x slower here (900 points: 13 s with one thread, 69 s with two).
    threads: int = 1
    suffix: str = "-lite"  # level names: <env>-<level><suffix>

    def __post_init__(self) -> None:
        check(0.0 < self.fraction <= 1.0, f"fraction must be in (0, 1], got {self.fraction}")
        check(self.max_points >= 10, f"max_points must be at least 10, got {self.max_points}")
        check(self.clusters >= 2, f"clusters must be at least 2, got {self.clusters}")
        check(self.seeds >= 1, f"seeds must be positive, got {self.seeds}")
        check(self.perplexity > 0, f"perplexity must be positive, got {self.perplexity}")
        check(self.iterations >= 250, f"iterations must be at least 250, got {self.iterations}")
        check(self.threads >= 1, f"threads must be positive, got {self.threads}")
        check(
            self.min_samples is None or self.min_samples >= 0,
            f"min_samples must be non-negative, got {self.min_samples}",
        )

    def threshold(self, points: int) -> int:
        if self.min_samples is not None:
            return self.min_samples
        return max(3, round(PAPER_MIN_SAMPLES * points / PAPER_SCALE_POINTS))


@dataclass
class CoverageResult:
    levels: list[str]
    config: CoverageConfig
    points: int  # subsample size per seed
    threshold: int
    # coverage[modality][seed][level index] = fraction of cluster centres the level has
    coverage: dict[str, list[list[float]]] = field(default_factory=dict)
    # the first seed's embedding, for the figure
    embedding: dict[str, np.ndarray] = field(default_factory=dict)
    owner: np.ndarray | None = None  # level index of each embedded point

    def summary(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) over seeds of each level's coverage."""
        values = np.asarray(self.coverage[modality])
        return values.mean(axis=0), values.std(axis=0)

    def to_json(self) -> dict:
        return {
            "levels": self.levels,
            "config": asdict(self.config),
            "points_per_seed": self.points,
            "min_samples": self.threshold,
            "coverage": self.coverage,
        }


def subsample(
    sizes: Sequence[int], fraction: float, max_points: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Row indices per level: a uniform draw of ``fraction`` of the pool (so each level keeps
    its share), scaled down to at most ``max_points`` in total."""
    total = sum(sizes)
    take = min(round(fraction * total), max_points)
    counts = [max(1, round(take * n / total)) for n in sizes]
    return [
        rng.choice(n, size=min(c, n), replace=False) for n, c in zip(sizes, counts, strict=True)
    ]


def cluster_labels(
    points: np.ndarray, config: CoverageConfig, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(2-D t-SNE embedding, hierarchical cluster label of each point) of standardised points."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(points, np.float64)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    perplexity = min(config.perplexity, max(1.0, (len(x) - 1) / 3))
    with threadpool_limits(limits=config.threads, user_api="openmp"):
        embedding = TSNE(
            n_components=2,
            perplexity=perplexity,
            max_iter=config.iterations,
            init="pca",
            random_state=seed,
        ).fit_transform(x)
    labels = AgglomerativeClustering(n_clusters=config.clusters, linkage="ward").fit_predict(
        embedding
    )
    return embedding, labels


def level_coverage(
    labels: np.ndarray, owner: np.ndarray, levels: int, clusters: int, threshold: int
) -> list[float]:
    """Per level: the fraction of clusters holding more than ``threshold`` of its points."""
    counts = np.zeros((levels, clusters), int)
    np.add.at(counts, (owner, labels), 1)
    return [float((counts[level] > threshold).mean()) for level in range(levels)]


def coverage_analysis(
    pool: Mapping[str, tuple[np.ndarray, np.ndarray]],
    config: CoverageConfig,
    progress: bool = False,
) -> CoverageResult:
    """Coverage of each level of ``pool`` (name -> (states, actions))."""
    from rich.progress import Progress

    levels = list(pool)
    check(len(levels) >= 1, "coverage needs at least one dataset", O2OError)
    sizes = [len(pool[name][0]) for name in levels]
    result: CoverageResult | None = None
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("t-SNE + clustering", total=config.seeds * len(MODALITIES))
        for seed in range(config.seeds):
            rows = subsample(sizes, config.fraction, config.max_points, np.random.default_rng(seed))
            owner = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)])
            if result is None:
                points = len(owner)
                if points <= config.clusters:
                    raise ConfigError(
                        f"a subsample of {points} points cannot form {config.clusters} clusters; "
                        "raise fraction/max_points or lower clusters"
                    )
                result = CoverageResult(
                    levels, config, points, config.threshold(points), owner=owner
                )
                result.coverage = {m: [] for m in MODALITIES}
            for index, modality in enumerate(MODALITIES):
                data = np.concatenate(
                    [pool[name][index][r] for name, r in zip(levels, rows, strict=True)]
                )
                embedding, labels = cluster_labels(data, config, seed)
                result.coverage[modality].append(
                    level_coverage(labels, owner, len(levels), config.clusters, result.threshold)
                )
                if seed == 0:
                    result.embedding[modality] = embedding
                bar.advance(task)
    assert result is not None
    return result


def level_names(env: str, suffix: str) -> list[str]:
    from o2o.data.registry import LEVELS

    return [f"{env}-{level}{suffix}" for level in LEVELS]


def load_pool(names: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(states, actions) of every named dataset whose file is present; absent ones are skipped."""
    from o2o import data as datasets
    from o2o.errors import DatasetError

    pool = {}
    for name in names:
        try:
            dataset = datasets.load(name)
        except DatasetError:
            continue
        pool[name] = (np.asarray(dataset.observations), np.asarray(dataset.actions))
    return pool


def coverage_table(result: CoverageResult) -> str:
    state_mean, state_std = result.summary("states")
    action_mean, action_std = result.summary("actions")
    lines = [
        "| dataset | state coverage | action coverage |",
        "|---|---|---|",
    ]
    for i, name in enumerate(result.levels):
        lines.append(
            f"| {name} | {state_mean[i]:.2f} ± {state_std[i]:.2f} | {action_mean[i]:.2f} ± {action_std[i]:.2f} |"
        )
    return "\n".join(lines)


def plot_coverage(result: CoverageResult, path: Path, title: str) -> Path:
    """t-SNE of states and of actions (first seed, coloured by level) and coverage bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), dpi=110)
    colours = plt.get_cmap("tab10")
    for ax, modality in zip(axes[:2], MODALITIES, strict=True):
        embedding = result.embedding[modality]
        for i, name in enumerate(result.levels):
            mask = result.owner == i
            ax.scatter(*embedding[mask].T, s=3, alpha=0.5, color=colours(i), label=name)
        ax.set_title(f"t-SNE of {modality} (seed 0)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    # The levels' legend below the two maps (inside one it hid its points), markers opaque.
    handles, labels = axes[0].get_legend_handles_labels()
    legend = fig.legend(
        handles, labels, loc="lower center", ncol=len(labels), fontsize=8, markerscale=4,
        frameon=False, bbox_to_anchor=(0.35, 0.0),
    )  # fmt: skip
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    width = 0.38
    x = np.arange(len(result.levels))
    for offset, modality in ((-width / 2, "states"), (width / 2, "actions")):
        mean, std = result.summary(modality)
        axes[2].bar(x + offset, mean, width, yerr=std, capsize=3, label=modality)
    axes[2].set_xticks(
        x,
        [_level_label(n, result.config.suffix) for n in result.levels],
        rotation=20,
        fontsize=8,
    )
    # Head room above 1 for the legend, which otherwise sat on the bars.
    axes[2].set(ylim=(0, 1.22), ylabel="fraction of cluster centres")
    axes[2].set_yticks(np.linspace(0.0, 1.0, 6))
    axes[2].set_title(f"coverage, mean ± std over {result.config.seeds} seeds", fontsize=10)
    axes[2].legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _level_label(name: str, suffix: str) -> str:
    """``hopper-medium-replay-lite`` -> ``medium-replay``."""
    short = name.removesuffix(suffix) if suffix else name
    return short.split("-", 1)[1] if "-" in short else short


def write_coverage_report(
    env: str,
    config: CoverageConfig,
    out_dir: Path,
    datasets: Sequence[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """``coverage.md``, ``coverage.json`` and ``coverage.png`` for ``env``'s levels."""
    names = list(datasets) if datasets else level_names(env, config.suffix)
    pool = load_pool(names)
    if not pool:
        raise O2OError(
            f"no dataset of {env} found (looked for {', '.join(names)}); make them with "
            "`o2o datasets make NAME` or pass --datasets"
        )
    result = coverage_analysis(pool, config, progress)
    out_dir = Path(out_dir)
    figure = plot_coverage(
        result,
        out_dir / "coverage.png",
        f"{env}: {result.points} points per seed, {config.clusters} clusters, "
        f"a level has a centre with > {result.threshold} of its points",
    )
    missing = [n for n in names if n not in pool]
    text = "\n\n".join(
        [
            f"# Data coverage: {env}",
            f"Pool: {', '.join(f'{n} ({len(pool[n][0])} transitions)' for n in pool)}"
            + (f"; not found: {', '.join(missing)}" if missing else "")
            + ".",
            f"Per seed a uniform subsample of {result.points} points "
            f"({config.fraction:.0%} of the pool, at most {config.max_points}); t-SNE "
            f"(perplexity {config.perplexity:g}) on standardised states and, separately, actions; "
            f"Ward clustering into {config.clusters} clusters; a level has a cluster centre when "
            f"more than {result.threshold} of its points carry that label. Coverage = fraction of "
            f"centres, mean ± std over {config.seeds} seeds.",
            coverage_table(result),
            f"![coverage]({figure.name})",
        ]
    )
    written = [out_dir / "coverage.md", out_dir / "coverage.json", figure]
    atomic_write_bytes(written[0], (text + "\n").encode())
    atomic_write_bytes(written[1], json_text(result.to_json(), indent=2).encode())
    return written
