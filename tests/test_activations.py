"""Activation statistics: percentiles, tags written to TensorBoard, hooks only while logging."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bn_compare.training.activations import ActivationStats, activation_layers, percentiles
from bn_compare.training.module import Classifier


def test_percentiles_match_numpy():
    values = torch.randn(64, 100, generator=torch.Generator().manual_seed(0))
    expected = np.percentile(values.numpy().reshape(-1), [15, 50, 85])
    assert percentiles(values) == pytest.approx(expected.tolist(), abs=1e-5)


def test_layers_are_named_by_position_and_kind():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2))
    assert [name for name, _ in activation_layers(net)] == ["1_relu", "2_sigmoid"]


def test_bad_settings_are_refused():
    for kwargs in ({"every_n_steps": 0}, {"every_n_steps": 2.5}, {"unit": -1}):
        with pytest.raises(ValueError, match="activations"):
            ActivationStats(**kwargs)


class Recorder(L.Callback):
    """How many forward hooks the network carries during each step."""

    def __init__(self):
        self.hooks: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.hooks.append(sum(len(m._forward_hooks) for m in pl_module.net.modules()))


def test_tags_histograms_and_no_hooks_between_logged_steps(tmp_path):
    torch.manual_seed(0)
    layers = [nn.Linear(8, 6), nn.BatchNorm1d(6), nn.Sigmoid(), nn.Linear(6, 5), nn.Tanh()]
    net = nn.Sequential(*layers, nn.Linear(5, 3))
    module = Classifier(net, lambda params: torch.optim.SGD(params, lr=0.1), num_classes=3)
    data = TensorDataset(torch.randn(80, 8), torch.randint(0, 3, (80,)))
    stats, recorder = ActivationStats(every_n_steps=3, unit=2), Recorder()
    logger = TensorBoardLogger(tmp_path, name="", version="")
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=logger,
        callbacks=[recorder, stats],  # the recorder runs before the stats callback detaches
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, DataLoader(data, batch_size=16))  # 5 steps per epoch, 10 in all
    # hooks on steps 0, 3, 6, 9 (logged) and 4 (last batch of epoch 0, for its histogram)
    assert [i for i, n in enumerate(recorder.hooks) if n] == [0, 3, 4, 6, 9]
    assert sum(len(m._forward_hooks) for m in net.modules()) == 0

    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for layer in ("1_sigmoid", "2_tanh"):
        for p in ("p15", "p50", "p85"):
            assert [e.step for e in events.Scalars(f"activations/{layer}/{p}")] == [0, 3, 6, 9]
    assert {f"activations/2_tanh/unit2/p{p}" for p in (15, 50, 85)} <= tags
    assert not any("1_sigmoid/unit" in t for t in tags)  # only the last hidden layer's unit
    low, mid, high = (events.Scalars(f"activations/2_tanh/p{p}")[0].value for p in (15, 50, 85))
    assert low <= mid <= high
    hist = events.Tags()["histograms"]
    assert set(hist) == {"activations/1_sigmoid/output", "activations/2_tanh/output"}
    assert [e.step for e in events.Histograms("activations/1_sigmoid/output")] == [5, 10]
    sigmoid_out = events.Histograms("activations/1_sigmoid/output")[0].histogram_value
    assert 0 <= sigmoid_out.min <= sigmoid_out.max <= 1  # outputs, not inputs
