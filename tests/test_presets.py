"""The reproduction presets compose as documented, and overrides on top still apply."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bn_compare.launch import job_overrides, register_resolvers, swept_keys

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(autouse=True)
def _hydra():
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def _layers(cfg) -> list[str]:
    return [
        str(layer) for layer in OmegaConf.to_container(cfg.model.layers) if isinstance(layer, str)
    ]


def test_ioffe_preset_and_overrides_on_top():
    cfg = compose("config", overrides=["experiment=ioffe2015_fig1"])
    assert _layers(cfg) == ["flatten", "sigmoid", "sigmoid", "sigmoid"]
    assert [layer["linear"]["out"] for layer in cfg.model.layers if "linear" in layer] == [
        100,
        100,
        100,
        10,
    ]
    assert (cfg.bn, cfg.bn_position, cfg.batch_size) == (True, "before", 60)
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum) == (0.5, 0.0)
    assert cfg.trainer.max_steps == 50000 and cfg.epochs * 917 > 50000
    assert cfg.trainer.val_check_interval == 500 and cfg.trainer.check_val_every_n_epoch is None
    assert cfg.activations == {"enabled": True, "every_n_steps": 100, "unit": 0}

    cfg = compose(
        "config",
        overrides=[
            "experiment=ioffe2015_fig1",
            "bn=false",
            "optimizer.lr=0.1",
            "trainer.max_steps=2000",
            "activations.unit=3",
            "data=fashion_mnist",
        ],
    )
    assert (cfg.bn, cfg.optimizer.lr, cfg.trainer.max_steps) == (False, 0.1, 2000)
    assert cfg.activations.unit == 3 and cfg.data.dataset == "FashionMNIST"


def test_batch_size_study_sweeps_42_runs_and_accepts_narrower_sweeps():
    cfg = compose("config", overrides=["experiment=batch_size_study"], return_hydra_config=True)
    assert _layers(cfg) == ["flatten", "relu", "relu"]
    assert (cfg.optimizer.lr, cfg.optimizer.momentum) == (0.01, 0.9)
    assert cfg.data.normalize == {"mean": 0.5, "std": 0.5}
    jobs = job_overrides(cfg)
    assert len(jobs) == 2 * 7 * 3
    assert swept_keys(jobs) == ["bn", "batch_size", "seed"]
    assert sorted({j for job in jobs for j in job if j.startswith("batch_size=")}) == sorted(
        f"batch_size={b}" for b in (2, 4, 8, 16, 32, 64, 128)
    )

    # What `train.py -m experiment=batch_size_study batch_size=16,32 seed=0` launches:
    # command-line values replace the preset's swept ones.
    task = ["experiment=batch_size_study", "batch_size=16,32", "seed=0", "epochs=2"]
    OmegaConf.update(cfg, "hydra.overrides.task", task)
    jobs = job_overrides(cfg)
    assert len(jobs) == 2 * 2 * 1
    assert swept_keys(jobs) == ["bn", "batch_size"]
    assert all("seed=0" in job and "epochs=2" in job for job in jobs)
