"""Logging sinks: each writes files that read back to the rows it was given (TensorBoard's
event records and W&B's offline transaction log parsed here by minimal readers)."""

from __future__ import annotations

import csv
import glob
import json
import struct
import sys
import time
from pathlib import Path

import pytest

from o2o.errors import ConfigError
from o2o.experiment.runs import METRICS, RunDir
from o2o.experiment.sinks import Sinks, parse_sinks

ROWS = [
    {"phase": "offline", "step": 100, "return": 1.5, "normalized_score": 10.0,
     "seed_returns": [1.0, 2.0], "train/critic_loss": None},
    {"phase": "offline", "step": 200, "return": 2.5, "normalized_score": 20.0,
     "seed_returns": [2.0, 3.0], "train/critic_loss": 0.25},
    {"phase": "online", "step": 250, "updates": 50, "return": 3.5, "normalized_score": 30.0,
     "seed_returns": [3.0, 4.0], "train/critic_loss": 0.5},
]  # fmt: skip
EXPECTED = {  # (tag, step) -> value: the numeric entries of each row, null ones left out
    ("offline/return", 100): 1.5, ("offline/normalized_score", 100): 10.0,
    ("offline/return", 200): 2.5, ("offline/normalized_score", 200): 20.0,
    ("offline/train/critic_loss", 200): 0.25,
    ("online/updates", 250): 50.0, ("online/return", 250): 3.5,
    ("online/normalized_score", 250): 30.0, ("online/train/critic_loss", 250): 0.5,
}  # fmt: skip


def logged_run(tmp_path, sinks: str) -> RunDir:
    run = RunDir.create(tmp_path / "run", {"algo": "td3", "pipeline": {"dataset": "x"}})
    log = Sinks(parse_sinks(sinks), run)
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml"]  # opened lazily
    for row in ROWS:
        run.append(METRICS, row)  # the engine writes the row, then calls on_eval
        log(row)
    log.close()
    return run


def test_csv_holds_every_row_and_column(tmp_path):
    run = logged_run(tmp_path, "csv")
    with open(run.path / "metrics.csv") as file:
        read = list(csv.DictReader(file))
    assert [r["step"] for r in read] == ["100", "200", "250"]
    assert read[0]["train/critic_loss"] == "" and read[2]["updates"] == "50"
    assert read[1]["seed_returns"] == "2.0;3.0" and float(read[2]["normalized_score"]) == 30.0


def tfrecords(path: str) -> list[bytes]:
    """The payloads of a TFRecord file: u64 length, u32 crc, payload, u32 crc."""
    data, records, at = Path(path).read_bytes(), [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        records.append(data[at + 12 : at + 12 + length])
        at += 12 + length + 4
    return records


def test_tensorboard_events_read_back(tmp_path):
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto import event_pb2

    run = logged_run(tmp_path, "tensorboard")
    (path,) = glob.glob(str(run.path / "tensorboard" / "events.out.tfevents.*"))
    logged = {}
    for record in tfrecords(path):
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            logged[(value.tag, event.step)] = value.simple_value
    assert logged == pytest.approx(EXPECTED)


def leveldb_records(path: str) -> list[bytes]:
    """The records of W&B's transaction log: a 7-byte file header, then LevelDB log blocks
    of 32 KiB holding chunks (u32 crc, u16 length, u8 type: 1 full, 2 first, 3 middle,
    4 last); a block's last < 7 bytes are padding."""
    data, records, pending, at, block = Path(path).read_bytes(), [], b"", 7, 32768
    while at + 7 <= len(data):
        if block - at % block < 7:
            at += block - at % block
            continue
        length, kind = struct.unpack("<HB", data[at + 4 : at + 7])
        pending += data[at + 7 : at + 7 + length]
        at += 7 + length
        if kind in (1, 4):
            records.append(pending)
            pending = b""
    return records


def test_wandb_offline_run_reads_back(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2

    monkeypatch.setenv("WANDB_MODE", "online")  # the sink stays offline whatever the env says
    run = logged_run(tmp_path, "wandb")
    (path,) = glob.glob(str(run.path / "wandb" / "offline-run-*" / "run-*.wandb"))

    def records() -> list:
        parsed = [wandb_internal_pb2.Record() for _ in leveldb_records(path)]
        for record, payload in zip(parsed, leveldb_records(path), strict=True):
            record.ParseFromString(payload)
        return parsed

    # wandb-core writes the log from its own process and may still be at it after finish():
    # wait for the exit record (the process's own exit waits for it too).
    deadline = time.monotonic() + 60
    while not any(r.WhichOneof("record_type") == "exit" for r in records()):
        assert time.monotonic() < deadline, "no exit record in the W&B log"
        time.sleep(0.2)
    logged = {}
    for record in records():
        if record.WhichOneof("record_type") == "history":
            items = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json)
                for i in record.history.item
            }
            step = items.pop("_step")
            logged.update({(k, step): v for k, v in items.items() if not k.startswith("_")})
    assert logged == pytest.approx(EXPECTED)


def test_unknown_sinks_and_missing_extras_are_one_line_errors(monkeypatch):
    assert parse_sinks("csv, CSV,tensorboard") == ("csv", "tensorboard")
    with pytest.raises(ConfigError, match="did you mean 'wandb'"):
        parse_sinks("wandbb")
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"pip install 'o2o-rl\[wandb\]'"):
        parse_sinks("wandb")
    with pytest.raises(ConfigError, match="run directory"):
        Sinks(("csv",), None)
