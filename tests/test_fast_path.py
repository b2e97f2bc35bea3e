"""The device-resident fast path serves the default path's batches; the speed options run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY

from bn_compare.data import DeviceBatches, MNISTDataModule
from bn_compare.models import build_model
from bn_compare.training.module import Classifier, configure_speed


def _datamodule(root: Path, on_device: bool, seed: int = 0, **kw) -> MNISTDataModule:
    dm = MNISTDataModule(
        dataset="MNIST",
        root=str(root),
        batch_size=kw.pop("batch_size", 32),
        eval_batch_size=50,
        val_size=100,
        input_shape=kw.pop("input_shape", (1, 32, 32)),
        seed=seed,
        download=False,
        on_device=on_device,
        **kw,
    )
    dm.setup("fit")
    return dm


def _epoch(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.sampler.set_epoch(epoch)  # what Lightning calls before every epoch
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("batch_size", [32, 64])
def test_fast_path_serves_the_same_batches_in_the_same_order(mnist_root, batch_size):
    default = _datamodule(mnist_root, on_device=False, batch_size=batch_size)
    fast = _datamodule(mnist_root, on_device=True, batch_size=batch_size)
    assert isinstance(fast.train_dataloader(), DeviceBatches)
    assert not isinstance(default.train_dataloader(), DeviceBatches)
    for epoch in (0, 1, 2):
        ours = _epoch(fast.train_dataloader(), epoch)
        theirs = _epoch(default.train_dataloader(), epoch)
        assert _same(ours, theirs), f"epoch {epoch}"
        assert len(ours) == len(default.train_dataloader())
    for split in ("val_dataloader", "test_dataloader"):
        assert _same(_epoch(getattr(fast, split)(), 0), _epoch(getattr(default, split)(), 0)), split


def test_order_depends_on_seed_and_epoch(mnist_root):
    a = _datamodule(mnist_root, on_device=True, seed=0).train_dataloader()
    b = _datamodule(mnist_root, on_device=True, seed=1).train_dataloader()
    first_a, first_b = _epoch(a, 0), _epoch(b, 0)
    # Different seeds: different validation split too, so compare the label order.
    assert not _same(first_a, first_b)
    assert not _same(first_a, _epoch(a, 1))
    assert _same(first_a, _epoch(a, 0))


def test_fast_path_and_perf_options_compose_and_run(tmp_path, mnist_root):
    # In-process (Hydra compose + the entry point's own train()): no interpreter start-up.
    from hydra import compose, initialize_config_dir

    from bn_compare.launch import register_resolvers
    from bn_compare.training.run import train

    register_resolvers()
    overrides = [
        f"data.root={mnist_root}",
        *TINY,
        "trainer.limit_train_batches=4",
        "trainer.log_every_n_steps=2",
        "data.on_device=true",
        "perf.channels_last=true",
        "perf.num_threads=1",
        "perf.matmul_precision=highest",
    ]
    threads = torch.get_num_threads()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        result = train(cfg, tmp_path, {"model": "lenet5", "data": "mnist"}, overrides)
    finally:
        torch.set_num_threads(threads)
    assert result["status"] == "ok"
    assert result["steps"] == 4
    for key in ("train/loss_step", "train/loss_epoch", "train/acc", "val/acc", "test/acc"):
        assert key in result["metrics"], key
    assert 0.0 <= result["metrics"]["train/acc"] <= 1.0
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss_step", "train/loss_epoch", "train/acc", "epoch"} <= set(header)
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "ok"


def _module(**perf) -> Classifier:
    net = build_model(
        {"input": {"channels": 1, "size": 16}, "layers": ["flatten", {"linear": {"out": 10}}]},
        bn=False,
    )
    module = Classifier(net, lambda params: torch.optim.SGD(params, lr=0.1))
    configure_speed(module, perf)
    return module


def test_channels_last_keeps_outputs_and_state_dict():
    torch.manual_seed(0)
    net = build_model(
        {
            "input": {"channels": 1, "size": 16},
            "layers": [
                {"conv": {"out": 4, "kernel": 3}},
                "relu",
                "flatten",
                {"linear": {"out": 10}},
            ],
        },
        bn=True,
    )
    plain = Classifier(net, lambda params: torch.optim.SGD(params, lr=0.1)).eval()
    keys = set(plain.state_dict())
    x = torch.randn(8, 1, 16, 16)
    expected = plain(x)
    plain.configure_speed(channels_last=True)
    assert set(plain.state_dict()) == keys
    assert torch.allclose(plain(x), expected, atol=1e-5)


@pytest.mark.parametrize(
    "perf",
    [
        {"num_threads": 0},
        {"compile_mode": "fastest"},
        {"matmul_precision": "low"},
        {"channels_last": "yes"},
    ],
)
def test_bad_perf_values_are_rejected(perf):
    with pytest.raises(ValueError, match="perf."):
        _module(**perf)


def test_compile_keeps_state_dict_keys():
    module = _module()
    keys = set(module.state_dict())
    # The eager backend exercises the wiring without building kernels.
    module.configure_speed(compile=True, compile_backend="eager")
    assert set(module.state_dict()) == keys
    out = module(torch.randn(4, 1, 16, 16))
    assert out.shape == (4, 10)


@pytest.mark.slow
def test_compiled_run_through_the_entry_point(train, mnist_root):
    result = train(
        [
            f"data.root={mnist_root}",
            *TINY,
            "trainer.limit_train_batches=3",
            "perf.compile=true",
        ],
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
