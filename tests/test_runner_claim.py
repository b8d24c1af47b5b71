"""A run directory is run by one process at a time: processes sharing a results directory
(``bench run --only-methods``) cannot write the same run; a killed process's claim is taken
over."""

import socket
import subprocess

import pytest

from o2o.errors import O2OError
from o2o.experiment.runner import claimed, run_suite
from o2o.experiment.suite import suite_from_dict


def live_process():
    return subprocess.Popen(["sleep", "60"])


def test_a_run_held_by_a_live_process_is_refused_and_a_dead_ones_taken_over(tmp_path):
    path = tmp_path / "hopper" / "iql" / "vanilla"
    lock = path.parent / ".vanilla.running"
    other = live_process()
    try:
        lock.parent.mkdir(parents=True)
        lock.write_text(f"{socket.gethostname()} {other.pid}")
        refused = pytest.raises(O2OError, match=f"being run by process {other.pid} on ")
        with refused, claimed(path):
            pytest.fail("the run was entered")
        assert lock.read_text().endswith(str(other.pid))  # the holder's lock is left alone
    finally:
        other.kill()
        other.wait()
    with claimed(path):  # its holder is gone: taken over
        assert lock.read_text().split()[1] != str(other.pid)
        with pytest.raises(O2OError, match="being run by process"), claimed(path):
            pass  # and now held by us
    assert not lock.exists()
    lock.write_text("elsewhere 1")  # another host's process cannot be checked from here
    refused = pytest.raises(O2OError, match="process 1 on elsewhere .*delete it if that process")
    with refused, claimed(path):
        pass


def test_a_suite_skips_a_configuration_another_process_runs(tmp_path):
    suite = suite_from_dict(
        {
            "name": "t",
            "datasets": ["hopper-medium-lite"],
            "algos": ["iql"],
            "methods": ["vanilla"],
            "offline_steps": 10,
            "online_steps": 0,
        }
    )
    other = live_process()
    try:
        lock = tmp_path / "hopper-medium-lite" / "iql" / ".vanilla.running"
        lock.parent.mkdir(parents=True)
        lock.write_text(f"{socket.gethostname()} {other.pid}")
        (outcome,) = run_suite(suite, tmp_path, progress=False, echo=lambda line: None)
    finally:
        other.kill()
        other.wait()
    assert outcome.status == "failed" and "being run by process" in outcome.error
    assert not (tmp_path / "hopper-medium-lite" / "iql" / "vanilla").exists()
