"""What a researcher does with trained runs: ``o2o eval``, ``o2o record``, ``o2o runs list``
and ``o2o plot``. Each reads run directories and never writes into them."""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from o2o.arguments import OneLineParser
from o2o.errors import ConfigError, O2OError


def _run_parser(prog: str, description: str, seed_help: str) -> OneLineParser:
    """A command on one run directory, acted on by one (``--seed``) or all of its seeds."""
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("run", type=Path, help="run directory")
    parser.add_argument("--seed", type=int, default=None, help=seed_help)
    return parser


def eval_main(argv: list[str]) -> int:
    parser = _run_parser(
        "o2o eval",
        "Deterministic evaluation of a run's final agent (its online checkpoint, else its "
        "offline one), with the env seeds the run evaluates with.",
        "one of the run's seeds (default: all of them)",
    )
    parser.add_argument(
        "--episodes", type=int, default=None, help="episodes per seed (default: the run's own)"
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (default: a bar on a terminal, a plain line every "
        "$O2O_PROGRESS_EVERY seconds otherwise)",
    )
    args = parser.parse_args(argv)
    from o2o.api import load
    from o2o.experiment.builder import score_line

    policy = load(args.run)
    evaluation = policy.evaluate(args.episodes, args.seed, progress=not args.no_progress)
    seeds = evaluation["seeds"]
    print(
        f"{args.run} ({policy.phase} checkpoint, {evaluation['episodes']} episodes per seed, "
        f"seed(s) {', '.join(map(str, seeds))}): {score_line(evaluation, len(seeds))}"
    )
    return 0


VIDEO_WRITERS = {".mp4": "imageio-ffmpeg", ".gif": "Pillow"}


def record_main(argv: list[str]) -> int:
    parser = _run_parser(
        "o2o record",
        "Render one deterministic episode of a run's final agent offscreen (MuJoCo; "
        "MUJOCO_GL=egl by default, osmesa without a GPU driver) to .mp4 or .gif.",
        "which of the run's seeds acts (default: its first)",
    )
    parser.add_argument("--out", type=Path, required=True, help="video file (.mp4 or .gif)")
    parser.add_argument("--max-steps", type=int, default=1000, help="frames at most")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", type=int, nargs=2, default=[480, 360], metavar=("W", "H"))
    args = parser.parse_args(argv)
    suffix = args.out.suffix.lower()
    if suffix not in VIDEO_WRITERS:
        raise ConfigError(f"--out must end in .mp4 or .gif, got '{args.out.name}'")
    if args.out.exists():
        raise ConfigError(f"{args.out} exists; choose another --out")
    if args.max_steps < 1 or args.fps < 1 or min(args.size) < 16:
        raise ConfigError("--max-steps and --fps must be positive and --size at least 16 16")
    _check_video_writer(suffix)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from o2o.api import load
    from o2o.experiment.online import _eval_seed

    policy = load(args.run)
    env = _render_env(policy.env_id, *args.size)
    try:
        seed = policy.seeds[0] if args.seed is None else args.seed
        obs, _ = env.reset(seed=_eval_seed(seed))  # the run's first evaluation episode
        frames, total = [_frame(env)], 0.0
        for _ in range(args.max_steps):
            obs, reward, terminated, truncated, _ = env.step(policy.act(obs, seed=seed))
            total += float(reward)
            frames.append(_frame(env))
            if terminated or truncated:
                break
    finally:
        env.close()
    _write_video(args.out, frames, args.fps)
    print(f"wrote {args.out}: {len(frames)} frames, episode return {total:.1f} (seed {seed})")
    return 0


def _check_video_writer(suffix: str) -> None:
    import importlib.util

    module = "imageio_ffmpeg" if suffix == ".mp4" else "PIL"
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"writing {suffix} needs {VIDEO_WRITERS[suffix]} (pip install "
            f"'o2o-rl[video]')"
            + ("; --out video.gif needs only Pillow" if suffix == ".mp4" else "")
        )


def _render_env(env_id: str, width: int, height: int) -> Any:
    """``env_id`` rendering RGB frames offscreen; one line where no GL context can be made."""
    from o2o.envs.factory import make_env

    env, failure = None, None
    # A renderer whose GL context failed raises again from its __del__ (gymnasium's
    # OffScreenViewer): that second report is dropped, the first one is the error line.
    hook, sys.unraisablehook = sys.unraisablehook, lambda _: None
    try:
        try:
            env = make_env(env_id, render_mode="rgb_array", width=width, height=height)
            env.reset(seed=0)
            _frame(env)
        except O2OError:
            raise
        except Exception as error:  # GL backends fail in many ways (ImportError, AttributeError)
            failure = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if failure is not None:
            env = None
            gc.collect()
    finally:
        sys.unraisablehook = hook
    if failure is not None:
        raise O2OError(
            f"cannot render {env_id} offscreen with MUJOCO_GL={os.environ.get('MUJOCO_GL')} "
            f"({failure}); try MUJOCO_GL=egl or MUJOCO_GL=osmesa"
        )
    return env


def _frame(env: Any) -> np.ndarray:
    frame = env.render()
    if frame is None:
        raise O2OError("the env rendered no frame (render_mode rgb_array unsupported)")
    return np.asarray(frame, np.uint8)


def _write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Frames to ``path`` through a temp file beside it, so a failed write leaves nothing."""
    from o2o.experiment.checkpoint import FILE_MODE

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        if path.suffix.lower() == ".gif":
            from PIL import Image

            images = [Image.fromarray(f) for f in frames]
            images[0].save(
                tmp, save_all=True, append_images=images[1:], duration=1000 // fps, loop=0
            )
        else:
            import imageio.v2 as imageio

            imageio.mimsave(tmp, frames, fps=fps, macro_block_size=1)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- o2o runs list -------------------------------------------------------------------------


def runs_main(argv: list[str]) -> int:
    parser = OneLineParser(prog="o2o runs", description="The runs below a directory.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    listing = sub.add_parser(
        "list",
        help="name, dataset, algo, methods, budget, status and last score of each run",
        description="One line per run directory below DIR (an 80-column table).",
    )
    listing.add_argument("dir", type=Path, nargs="?", default=Path("runs"), help="(default: runs)")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        raise O2OError(f"{args.dir} is not a directory")
    runs = [run_line(path.parent, args.dir) for path in sorted(args.dir.rglob("config.yaml"))]
    runs = [r for r in runs if r is not None]
    if not runs:
        print(f"no runs below {args.dir}")
        return 0
    print(format_table(runs))
    return 0


COLUMNS = (  # (header, width): 79 columns with the single spaces between them
    ("name", 17),
    ("dataset", 18),
    ("algo", 5),
    ("methods", 10),
    ("budget", 9),
    ("status", 8),
    ("score", 6),
)


def run_line(path: Path, root: Path) -> dict[str, str] | None:
    """A run directory's table row; None for a config.yaml that is not a run's."""
    from o2o.analysis.results import _steps
    from o2o.experiment.pipeline import PHASE_FILE
    from o2o.experiment.runs import RunDir, number

    run = RunDir(path)
    try:
        config = run.config()
    except O2OError:
        return None
    if "pipeline" in config:
        p = config["pipeline"]
        dataset = str(p.get("dataset"))
        methods = str((config.get("finetune") or {}).get("name", "vanilla"))
        budget = (
            f"{_steps(p.get('offline_steps'))}+{_steps(p.get('online_steps'))}×{p.get('seeds')}"
        )
    elif "online" in config:
        o = config["online"]
        dataset, methods = str(o.get("env")), "-"
        budget = f"{_steps(o.get('steps'))}×{o.get('seeds')}"
    else:
        return None
    rows = [r for r in run.rows() if "return" in r]
    if (path / "summary.json").exists():
        status = "done"
    elif (path / PHASE_FILE).exists():
        status = _phase_name(path / PHASE_FILE)
    else:
        status = rows[-1].get("phase", "online") if rows else "new"
    score = ""
    if rows:
        last = rows[-1]
        value = last.get("normalized_score", last.get("return"))
        score = f"{number(value):.1f}" if abs(number(value)) < 1000 else f"{number(value):.0f}"
    name = str(path.relative_to(root)) if path != root else path.name
    return {
        "name": name,
        "dataset": dataset,
        "algo": str(config.get("algo")),
        "methods": methods,
        "budget": budget,
        "status": status,
        "score": score,
    }


def _phase_name(path: Path) -> str:
    import json

    try:
        return str(json.loads(path.read_text())["phase"])
    except (ValueError, KeyError):
        return "?"


def format_table(rows: list[dict[str, str]]) -> str:
    def cell(text: str, width: int, header: str) -> str:
        if len(text) <= width:
            return text
        # A run's name tells most at its end (suite/label, timestamp); other cells at their start.
        return "…" + text[-(width - 1) :] if header == "name" else text[: width - 1] + "…"

    lines = [" ".join(f"{h:<{w}}" for h, w in COLUMNS).rstrip()]
    for row in rows:
        lines.append(" ".join(f"{cell(row[h], w, h):<{w}}" for h, w in COLUMNS).rstrip())
    return "\n".join(lines)


# --- o2o plot ------------------------------------------------------------------------------


def plot_main(argv: list[str]) -> int:
    parser = OneLineParser(
        prog="o2o plot",
        description="Learning curves of any runs in one figure: mean over seeds with a band "
        "(default: the 95% percentile-bootstrap interval of the mean over seeds); a directory "
        "that is not a run stands for every run below it.",
    )
    parser.add_argument("runs", type=Path, nargs="+", help="run directories")
    parser.add_argument("--out", type=Path, default=Path("learning_curves.png"))
    parser.add_argument(
        "--key",
        default=None,
        help="normalized_score or return (default: the score if every run has one)",
    )
    parser.add_argument("--title", default=None)
    from o2o.analysis.curves import add_band_argument

    add_band_argument(parser)
    args = parser.parse_args(argv)
    from o2o.analysis.curves import offline_budget, plot_learning_curves, timeline
    from o2o.experiment.runs import RunDir

    curves: dict[Path, list[dict]] = {}
    offline_steps = set()
    for given in args.runs:
        if not given.is_dir():
            raise O2OError(f"{given} is not a directory")
        named = (given / "config.yaml").exists()
        found = [given] if named else [p.parent for p in sorted(given.rglob("config.yaml"))]
        for path in found:
            rows = [r for r in RunDir(path).rows() if "return" in r]
            if rows:
                configured = RunDir(path).config().get("pipeline", {}).get("offline_steps")
                # A --from run's online phase starts at its source's offline budget.
                curves[path.resolve()] = timeline(rows, configured)
                offline_steps.add(offline_budget(rows, configured))
            elif named:
                raise O2OError(f"{path} has no evaluation rows yet")
        if not found:
            raise O2OError(f"no run directories (config.yaml) in {given}")
    if not curves:
        raise O2OError("none of these runs has evaluation rows yet")
    curves = dict(zip(_labels(list(curves)), curves.values(), strict=True))
    key = args.key or (
        "normalized_score"
        if all("normalized_score" in r for rows in curves.values() for r in rows)
        else "return"
    )
    if key not in ("normalized_score", "return"):
        raise ConfigError(f"--key must be normalized_score or return, got '{key}'")
    missing = [label for label, rows in curves.items() if any(key not in r for r in rows)]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: no '{key}' in the rows; use --key return")
    boundary = offline_steps.pop() if len(offline_steps) == 1 else None
    title = args.title or ", ".join(curves)
    path = plot_learning_curves(
        curves, args.out, title, key=key, boundary=boundary or None, band=args.band
    )
    if path is None:
        raise O2OError("nothing to plot: every run has a single evaluation so far")
    print(f"wrote {path}")
    return 0


def _labels(paths: list[Path]) -> list[str]:
    """Each run's directory name, or its last two path parts where names repeat."""
    names = [p.name for p in paths]
    return [p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}" for p in paths]
