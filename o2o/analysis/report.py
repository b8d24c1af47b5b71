"""``o2o report RESULTS_DIR``: one Markdown (and optionally HTML) document with the score
tables, rliable aggregate statistics, learning curves, cumulative regret and SAMG
diagnostics of every run below a results directory.

The report is a list of blocks (headings, paragraphs, tables, images) rendered twice, so the
Markdown and the HTML always say the same thing.
"""

from __future__ import annotations

import base64
import html
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from o2o.analysis.curves import BANDS, plot_learning_curves
from o2o.analysis.diagnostics import plot_method_diagnostics, plot_visited_coverage
from o2o.analysis.results import RunResult, load_results
from o2o.analysis.statistics import aggregate_statistics, probability_of_improvement
from o2o.analysis.tables import (
    Table,
    average_improvement,
    paired_tables,
    regret_table,
    score_table,
)
from o2o.errors import ConfigError
from o2o.experiment.checkpoint import atomic_write_bytes

FIGURES = "figures"
BAND_TEXT = {
    "bootstrap": "the 95% percentile-bootstrap interval of the mean over seeds",
    "ci95": "the 95% Student-t interval of the mean over seeds",
    "std": "±1 standard deviation over seeds",
}


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str  # Markdown with `code` spans only


@dataclass(frozen=True)
class Image:
    path: str  # relative to the report
    alt: str


Block = Heading | Paragraph | Table | Image


def build_report(
    results: Sequence[RunResult],
    out_dir: Path,
    title: str,
    reps: int = 2000,
    seed: int = 0,
    band: str = "bootstrap",
) -> list[Block]:
    """The report's blocks; figures are written under ``out_dir/figures`` with ``band``
    (``curves.BANDS``) around the mean curves."""
    if band not in BANDS:
        raise ConfigError(f"band must be one of {', '.join(BANDS)}, got '{band}'")
    finished = [r for r in results if r.finished]
    blocks: list[Block] = [Heading(1, title)]
    budgets = sorted({r.budget for r in finished})
    references = sorted({str(r.summary.get("score_reference")) for r in finished if r.summary})
    blocks.append(
        Paragraph(
            f"{len(finished)} finished runs ({len(results) - len(finished)} unfinished) over "
            f"{len({r.dataset for r in finished})} datasets. "
            + (
                f"Budget: {budgets[0] if budgets else 'n/a'}. "
                if len(budgets) <= 1
                else f"Budgets differ between runs ({len(budgets)} kinds): see each row's "
                "`budget` column (offline+online steps ×seeds). "
            )
            + "Small CPU budgets: read differences against the seed spread."
        )
    )
    if references:
        blocks.append(
            Paragraph(
                "Normalized score = 100·(R − ref_min)/(ref_max − ref_min) with "
                + "; ".join(references)
                + "."
            )
        )

    blocks += [Heading(2, "Normalized scores"), score_table(results)]
    blocks.append(
        Paragraph(
            "Score of the last evaluation of each phase, mean ± std over seeds. "
            "`vs vanilla` = 100·(after online − vanilla's after online)/|vanilla's after online| "
            "for the same dataset and base algorithm; fine-tuning methods start from the vanilla "
            "run's offline checkpoint (paired), so their `after offline` is vanilla's, except "
            "methods that train from the first offline step (FamO2O), which have their own. "
            "`non-default settings` lists the agent hyperparameters that differ from the "
            "algorithm's defaults for the domain (budget-fitted schedules aside)."
        )
    )
    averages = average_improvement(results)
    if averages:
        blocks.append(
            Paragraph(
                "Average improvement over vanilla: "
                + ", ".join(f"{m} {v:+.1f}%" for m, v in averages.items())
                + "."
            )
        )

    paired = paired_tables(results)
    for method, table in paired.items():
        how = "by seed (own offline phase)" if _pretrains_itself(method, results) else "paired"
        blocks += [Heading(2, f"{method} vs vanilla, {how}"), table]
    if paired:
        blocks.append(
            Paragraph(
                "Each fine-tuning method beside vanilla on the same dataset, base algorithm and "
                "offline checkpoint; a method that trains from the first offline step (FamO2O) "
                "has its own offline phase and is matched with vanilla by seed only. "
                "`seeds above vanilla's mean`: how many of the method's seeds end above "
                "vanilla's mean after online."
            )
        )

    blocks += _statistics_blocks(results, reps, seed)
    blocks += _curve_blocks(finished, out_dir, band)
    blocks += _coverage_blocks(finished, out_dir, band)

    blocks.append(Heading(2, "Cumulative regret (sparse-reward tasks)"))
    regret = regret_table(results)
    if regret is None:
        blocks.append(Paragraph("No run logged episode success (dense-reward tasks only)."))
    else:
        blocks += [
            regret,
            Paragraph(
                "Mean over a seed's online training episodes of (1 − success), mean ± std over seeds."
            ),
        ]

    blocks += _method_diagnostic_blocks(results, out_dir)

    unfinished = [r for r in results if not r.finished]
    if unfinished:
        blocks.append(Heading(2, "Unfinished runs"))
        blocks.append(Paragraph(", ".join(f"`{r.dataset}/{r.label}`" for r in unfinished) + "."))
    return blocks


def _pretrains_itself(method: str, results: Sequence[RunResult]) -> bool:
    """Whether the runs of ``method`` trained their own offline phase (a method that trains
    from the first offline step), so they share no offline checkpoint with vanilla."""
    from o2o.errors import O2OError
    from o2o.finetune import REGISTRY, parse_labels

    for result in results:
        if result.method == method:
            name = (result.config.get("finetune") or {}).get("name", method)
            try:
                return any(REGISTRY[label][0].trains_offline for label in parse_labels(name))
            except O2OError:
                return False
    return False


def _statistics_blocks(results: Sequence[RunResult], reps: int, seed: int) -> list[Block]:
    aggregates = aggregate_statistics(results, reps=reps, seed=seed)
    if not aggregates:
        return []
    blocks: list[Block] = [Heading(2, "Aggregate statistics (rliable)")]
    blocks.append(
        Table(
            ("configuration", "tasks", "runs", "IQM", "mean", "optimality gap"),
            tuple(
                (
                    a.label,
                    str(len(a.tasks)),
                    str(a.runs),
                    a.iqm.text(),
                    a.mean.text(),
                    a.optimality_gap.text(),
                )
                for a in aggregates
            ),
        )
    )
    blocks.append(
        Paragraph(
            f"After-online normalized scores over tasks (datasets) × runs (seeds); point estimate "
            f"[95% stratified-bootstrap CI, {reps} resamples]. Optimality gap to a score of 100."
        )
    )
    improvements = probability_of_improvement(results, reps=reps, seed=seed)
    if improvements:
        blocks.append(
            Table(
                ("algorithm", "method", "tasks", "P(method > vanilla)"),
                tuple(
                    (i.algo, i.method, str(len(i.tasks)), i.probability.text(2))
                    for i in improvements
                ),
            )
        )
        blocks.append(
            Paragraph(
                "Probability that a run of the method scores higher after online fine-tuning than "
                "a run of vanilla fine-tuning (Mann–Whitney, averaged over the tasks both finished); "
                "0.5 = no difference."
            )
        )
    return blocks


def _curve_blocks(finished: Sequence[RunResult], out_dir: Path, band: str) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Learning curves")]
    blocks.append(
        Paragraph(
            f"Normalized score, mean over seeds with {BAND_TEXT[band]}; offline gradient steps, "
            "then online environment steps after the dashed line (a run fine-tuned from "
            "another run's checkpoint starts online at that run's offline budget). Runs with a "
            "single evaluation are left out."
        )
    )
    for dataset, runs in _by_dataset(finished).items():
        if len({r.budget for r in runs}) == 1:
            curves = {r.label: r.timeline() for r in runs if r.rows}
            title, boundary = f"{dataset} ({runs[0].budget})", runs[0].offline_steps
            xlabel = "step (offline gradient steps, then online env steps)"
        else:
            # Different offline budgets: align every run at its own start of fine-tuning.
            curves = {
                f"{r.label} ({r.short_budget})": [
                    {**row, "step": row["step"] - r.offline_steps} for row in r.timeline()
                ]
                for r in runs
                if r.rows
            }
            title, boundary = f"{dataset} (budgets differ: see the legend)", 0
            xlabel = "step relative to the start of fine-tuning (offline steps < 0 < online steps)"
        path = plot_learning_curves(
            curves,
            out_dir / FIGURES / f"curves-{_slug(dataset)}.png",
            title,
            boundary=boundary,
            band=band,
            xlabel=xlabel,
        )
        if path is not None:
            blocks.append(Image(f"{FIGURES}/{path.name}", f"learning curves {dataset}"))
    return blocks


def _coverage_blocks(finished: Sequence[RunResult], out_dir: Path, band: str) -> list[Block]:
    """Visited-state coverage online (``o2o.experiment.visited``) per method, where runs
    logged it."""
    images = []
    for dataset, runs in _by_dataset(finished).items():
        path = plot_visited_coverage(
            runs,
            out_dir / FIGURES / f"visited-{_slug(dataset)}.png",
            f"visited-state coverage online — {dataset}",
            band=band,
        )
        if path is not None:
            images.append(Image(f"{FIGURES}/{path.name}", f"visited-state coverage {dataset}"))
    if not images:
        return []
    return [
        Heading(2, "Visited-state coverage online"),
        Paragraph(
            "How much of the state space each run's online phase visited, at every evaluation "
            "(mean over seeds with "
            + BAND_TEXT[band]
            + "): `coverage/knn_radius`, the mean distance to the 10th nearest neighbour among "
            "up to 2,048 evenly spaced visited states, and `coverage/cells`, the number of "
            "distinct unit cells visited, both in the normalised observation space. Equal env "
            "steps in every arm: wider coverage at the same step is wider exploration."
        ),
        *images,
    ]


def _by_dataset(results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    grouped: dict[str, list[RunResult]] = defaultdict(list)
    for r in results:
        grouped[r.dataset].append(r)
    return dict(grouped)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


# --- rendering ------------------------------------------------------------------------------


def to_markdown(blocks: Sequence[Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            parts.append(block.markdown())
        else:
            parts.append(f"![{block.alt}]({block.path})")
    return "\n\n".join(parts) + "\n"


def _inline_html(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


def to_html(blocks: Sequence[Block], base: Path | None = None) -> str:
    """One self-contained page: each figure (read from ``base``/its path) embedded as a PNG
    data URI, so the file can be mailed or attached alone."""
    title = next((b.text for b in blocks if isinstance(b, Heading)), "o2o report")
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            source = html.escape(block.path)
            if base is not None and (base / block.path).exists():
                encoded = base64.b64encode((base / block.path).read_bytes()).decode()
                source = f"data:image/png;base64,{encoded}"
            body.append(f'<p><img src="{source}" alt="{html.escape(block.alt)}"></p>')
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em}"
        "th{background:#f3f3f3}img{max-width:100%}"
    )
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(
    results_dir: Path,
    out_dir: Path | None = None,
    html_too: bool = False,
    reps: int = 2000,
    seed: int = 0,
    title: str | None = None,
    band: str = "bootstrap",
) -> list[Path]:
    """Write ``report.md`` (and ``report.html``) with ``figures/`` into ``out_dir`` (default
    ``RESULTS_DIR/report``); the paths written."""
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "report"
    results = load_results(results_dir)
    # Titled by the results' name, not the absolute path of wherever they were read.
    name = results_dir.resolve().name
    blocks = build_report(results, out_dir, title or f"o2o report: {name}", reps, seed, band)
    written = [out_dir / "report.md"]
    atomic_write_bytes(written[0], to_markdown(blocks).encode())
    if html_too:
        written.append(out_dir / "report.html")
        atomic_write_bytes(written[1], to_html(blocks, out_dir).encode())
    return written


def _method_diagnostic_blocks(results: Sequence[RunResult], out_dir: Path) -> list[Block]:
    """A section per registered method whose runs logged its declared diagnostics."""
    from o2o.finetune import REGISTRY

    blocks: list[Block] = []
    methods = {cls.name: cls for cls, _ in REGISTRY.values() if cls.diagnostics}
    for name, cls in methods.items():
        images = []
        for dataset, runs in _by_dataset(results).items():
            path = plot_method_diagnostics(
                runs,
                cls.diagnostics,
                out_dir / FIGURES / f"{name}-{_slug(dataset)}.png",
                f"{name} diagnostics — {dataset}",
            )
            if path is not None:
                images.append(Image(f"{FIGURES}/{path.name}", f"{name} diagnostics {dataset}"))
            extra = cls.report_figure(
                runs, out_dir / FIGURES / f"{name}-extra-{_slug(dataset)}.png", dataset
            )
            if extra is not None:
                images.append(Image(f"{FIGURES}/{extra.name}", f"{name} {dataset}"))
        if images:
            titles = "; ".join(d.title for d in cls.diagnostics)
            blocks.append(Heading(2, f"{name} diagnostics"))
            blocks.append(Paragraph(f"Per run, mean over seeds: {titles}."))
            blocks += images
    return blocks
