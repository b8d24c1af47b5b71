"""Training progress off a terminal (log files, pipes, cluster jobs): plain periodic lines."""

import io

from rich.console import Console

from o2o.core.progress import RunProgress


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=200), out


def test_off_a_terminal_plain_lines_come_every_interval_and_at_the_end():
    screen, out = console(terminal=False)
    with RunProgress(100, "offline iql", console=screen, plain_every=0.0) as bar:
        bar.advance_to(0, updates=0)
        bar.advance_to(40, updates=40)
        bar.report({"return": 12.5, "normalized_score": 33.0})
        bar.advance_to(100, updates=100)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("offline iql: 0/100 (0%) | collecting, no updates yet")
    assert lines[1].startswith("offline iql: 40/100 (40%) | ") and "upd/s" in lines[1]
    assert "return 12.5 | score 33.0" in lines[-1] and lines[-1].startswith("offline iql: 100/100")
    assert "eta -" in lines[-1]  # nothing left
    assert len(lines) == 4  # three advances and the closing line


def test_off_a_terminal_lines_wait_for_the_interval():
    screen, out = console(terminal=False)
    with RunProgress(10, "online", console=screen, plain_every=3600.0) as bar:
        for step in range(1, 11):
            bar.advance_to(step, updates=step)
    assert len(out.getvalue().splitlines()) == 1  # the closing line only


def test_on_a_terminal_no_plain_lines_and_disabled_prints_nothing():
    screen, out = console(terminal=True)
    with RunProgress(10, "online", console=screen, plain_every=0.0) as bar:
        bar.advance_to(5, updates=5)
    assert "online: 5/10" not in out.getvalue()  # the rich bar, not plain lines
    quiet, out = console(terminal=False)
    with RunProgress(10, "online", enabled=False, console=quiet, plain_every=0.0) as bar:
        bar.advance_to(5, updates=5)
    assert out.getvalue() == ""


def test_a_counting_bar_reports_its_own_rate_and_notes():
    """Dataset generation, stand-ins and ``o2o eval`` count rows, episodes or env steps: the
    rate is of those, and a note (an evaluation under way) shows in the plain line."""
    screen, out = console(terminal=False)
    with RunProgress(
        4, "stand-in pen", console=screen, plain_every=0.0, unit="episodes", note=""
    ) as bar:
        bar.advance_to(0)
        bar.advance_to(2)
        bar.note("evaluating: env step 3/10")
    lines = out.getvalue().splitlines()
    assert lines[0] == lines[0].replace("|  |", "") and "- episodes/s" in lines[0]
    assert " episodes/s | elapsed" in lines[1] and "(50%)" in lines[1]
    assert "evaluating: env step 3/10" in lines[2]


def test_a_failing_phase_ends_without_a_closing_line():
    screen, out = console(terminal=False)
    try:
        with RunProgress(10, "online", console=screen, plain_every=3600.0):
            raise ValueError("boom")
    except ValueError:
        pass
    assert out.getvalue() == ""


def test_evaluation_steps_note_the_evaluation_in_the_training_bar():
    from o2o.core.progress import evaluation_steps

    screen, out = console(terminal=False)
    with RunProgress(10, "offline iql", console=screen, plain_every=0.0) as bar:
        evaluation_steps(bar, 1000)(250)
    assert "evaluating: env step 250/1000" in out.getvalue().splitlines()[0]


def test_seed_transitions_are_explained_while_the_bar_stands_at_zero(monkeypatch, capsys):
    """SAMG's warm-up runs before the budget's step 0 with no update: the progress line says
    what it is doing instead of "0 upd/s"."""
    from o2o import data as datasets
    from tests.helpers import tiny_pipeline

    monkeypatch.setenv("O2O_PROGRESS_EVERY", "0")
    dataset = datasets.load("hopper-medium-lite").select(slice(0, 500))
    pipeline = tiny_pipeline(
        dataset, "samg-even", {"seed_transitions": 100}, offline_steps=0, online_steps=100
    )
    pipeline.run(progress=True)
    out = capsys.readouterr().out
    assert "seed transitions 50/100 by the offline policy (before the budget, no updates)" in out
    assert "collecting, no updates yet" in out
