"""A tiny real sweep writes its own report; its runs carry hparams and activation scalars."""

from __future__ import annotations

import csv

from conftest import TINY, sweep_dir
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from bn_compare.report.plots import figure_size


def test_sweep_writes_report_hparams_and_activation_scalars(train, tmp_path, mnist_root):
    result = train(
        [
            "-m",
            "model=mlp",
            "bn=true,false",
            "seed=0,1",
            f"data.root={mnist_root}",
            *TINY,
            "trainer.limit_train_batches=4",
            "trainer.log_every_n_steps=1",
            "activations.enabled=true",
            "activations.every_n_steps=2",
            "+activations.unit=0",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)

    # The report, written by the multirun's end without being asked.
    text = (sweep / "summary.md").read_text()
    assert text.startswith("# Sweep report")
    assert "Runs: 4 from" in text and "(4 ok)" in text
    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["bn"] for r in rows) == ["false", "true"]
    assert all(r["runs"] == "2" and r["test_acc_n"] == "2" for r in rows)
    with open(sweep / "deltas.csv", newline="") as f:
        assert {r["pairs"] for r in csv.DictReader(f)} == {"2"}
    panels = {
        "train_loss_vs_step.png": figure_size(1),
        "val_acc_vs_epoch.png": figure_size(1),
        "activations.png": figure_size(2, columns=2),
    }
    for name, (width, height) in panels.items():
        image = imread(sweep / name)
        assert image.shape[:2] == (height, width), name
        assert image[..., :3].std() > 0.01, f"{name} is blank"
    assert not (sweep / "acc_vs_batch_size.png").exists()  # batch size was not swept

    run = sweep / "model=mlp,bn=true,seed=0"
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    # Pre-activation percentiles of both hidden ReLUs every 2 steps, and one unit of the last.
    scalars = set(events.Tags()["scalars"])
    for layer in ("1_relu", "2_relu", "2_relu/unit0"):
        for p in ("p15", "p50", "p85"):
            assert [e.step for e in events.Scalars(f"activations/{layer}/{p}")] == [0, 2]
    assert "activations/1_relu/unit0/p50" not in scalars
    assert {"activations/1_relu/output", "activations/2_relu/output"} <= set(
        events.Tags()["histograms"]
    )

    # HPARAMS: the plugin data exists and declares val/acc_best as a metric.
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    assert "val/acc_best" in {m.name.tag for m in experiment.metric_infos}
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert {"bn", "batch_size", "seed", "model"} <= set(start.hparams)
    assert start.hparams["batch_size"].number_value == 64
