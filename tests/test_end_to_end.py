"""The mission command through the real entry point, on test-written MNIST files."""

from __future__ import annotations

import csv
import json

from conftest import TINY, sweep_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SCALARS = {
    "train/loss_step",
    "train/loss_epoch",
    "train/acc",
    "train/lr",
    "val/loss",
    "val/acc",
    "val/acc_best",
    "test/loss",
    "test/acc",
    "time/epoch",
}


def test_mission_command_trains_six_named_runs(train, tmp_path, mnist_root):
    result = train(
        [
            "-m",
            "model=lenet5",
            "bn=true,false",
            "batch_size=32,64,128",
            f"data.root={mnist_root}",
            *TINY,
            "trainer.limit_train_batches=3",
            "trainer.log_every_n_steps=1",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    names = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    expected = sorted(
        f"model=lenet5,bn={bn},batch_size={bs}" for bn in ("true", "false") for bs in (32, 64, 128)
    )
    assert names == expected
    for name in expected:
        run = sweep / name
        events = EventAccumulator(str(run))
        events.Reload()
        assert SCALARS <= set(events.Tags()["scalars"]), name
        with open(run / "metrics.csv") as f:
            header = next(csv.reader(f))
        assert {"train/loss_step", "val/acc", "test/acc"} <= set(header)
        assert (run / "checkpoints" / "best.ckpt").is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()
        record = json.loads((run / "result.json").read_text())
        assert record["status"] == "ok"
        assert record["params"]["bn"] is (name.split("bn=")[1].startswith("true"))
