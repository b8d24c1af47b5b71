"""Training progress off a terminal (log files, pipes, cluster jobs): plain periodic lines."""

import io

from rich.console import Console

from o2o.experiment.progress import RunProgress


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
