"""Train and test one arm of a comparison from a composed config."""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams as hparams_summary

from bn_compare.data import MNISTDataModule
from bn_compare.models import build_arm, input_shape
from bn_compare.training.divergence import DivergenceMonitor
from bn_compare.training.module import Classifier, configure_speed

log = logging.getLogger(__name__)

# Final metrics shown in TensorBoard's HPARAMS tab and written to result.json.
FINAL_METRICS = ("val/acc", "val/acc_best", "val/loss", "test/acc", "test/loss", "train/loss_epoch")


def build_datamodule(cfg: DictConfig) -> MNISTDataModule:
    data = cfg.data
    return MNISTDataModule(
        dataset=data.dataset,
        root=data.root,
        batch_size=cfg.batch_size,
        eval_batch_size=data.eval_batch_size,
        val_size=data.val_size,
        input_shape=input_shape(cfg.model),
        normalize=OmegaConf.to_container(data.normalize) if data.get("normalize") else None,
        seed=cfg.seed,
        shuffle=data.shuffle,
        download=False,
        on_device=data.on_device,
        num_workers=data.num_workers,
        dataset_args=OmegaConf.to_container(data.dataset_args)
        if data.get("dataset_args")
        else None,
        limit_train=data.get("limit_train"),
    )


def hparams(cfg: DictConfig, choices: dict[str, str], overrides: list[str]) -> dict[str, Any]:
    """The hyperparameters a run is compared by: the usual ones plus anything overridden."""
    params: dict[str, Any] = {
        "model": choices.get("model"),
        "data": choices.get("data"),
        "optimizer": choices.get("optimizer"),
        "bn": cfg.bn,
        "bn_position": cfg.bn_position,
        "norm": cfg.norm,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "lr": cfg.optimizer.lr,
    }
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in params or key.startswith("hydra.") or key in choices:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, bool | int | float | str):
            params[key] = value
    return {k: v for k, v in params.items() if v is not None}


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        value = value.item()
    return float(value) if value is not None else None


def train(
    cfg: DictConfig,
    run_dir: Path,
    choices: dict[str, str],
    overrides: list[str],
    resume: bool = False,
    extra_callbacks: list[L.Callback] | None = None,
) -> dict:
    """Fit, test with the best checkpoint, and record the run; returns the result record.

    With ``resume`` the run continues from ``checkpoints/last.ckpt`` in ``run_dir``
    (the end of the last finished epoch) when there is one.

    ``extra_callbacks`` are added to the trainer's own (the benchmark's step timer uses it).
    """
    started = time.time()
    # Lightning's messages reach the console and the run's log through Hydra's handlers;
    # its own console handler would print each of them a second time.
    logging.getLogger("lightning").handlers.clear()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model_name = choices.get("model", "model")
    net = build_arm(cfg, model_name)
    module = Classifier(net, instantiate(cfg.optimizer), num_classes=cfg.data.num_classes)
    configure_speed(module, cfg.get("perf"))
    datamodule = build_datamodule(cfg)

    tensorboard = TensorBoardLogger(save_dir=run_dir, name="", version="", default_hp_metric=False)
    csv = CSVLogger(save_dir=run_dir, name="", version="")
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val/acc",
        mode="max",
        save_last=True,
        auto_insert_metric_name=False,
        # Saved at the very end of each epoch, so a resumed run restarts at an epoch boundary.
        save_on_train_epoch_end=True,
    )
    divergence = DivergenceMonitor()
    callbacks = [checkpoint, divergence, ModelSummary(max_depth=2)]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(cfg.progress_refresh))
    if cfg.get("activations") and cfg.activations.get("enabled"):
        from bn_compare.training.activations import ActivationStats

        callbacks.append(ActivationStats.from_config(cfg.activations))
    callbacks.extend(extra_callbacks or [])
    trainer: L.Trainer = instantiate(cfg.trainer, logger=[tensorboard, csv], callbacks=callbacks)

    last = run_dir / "checkpoints" / "last.ckpt"
    resume_from = str(last) if resume and last.is_file() else None
    # DDP: every rank resumes from the checkpoint, rank 0 alone handles the files.
    keeps_records = resume_from is not None and trainer.is_global_zero
    if resume_from:
        log.info("Resuming from %s", resume_from)
        resumed_epoch = _checkpoint_epoch(resume_from)
    if keeps_records:
        earlier_rows = _set_aside_metrics(run_dir)
    # Checkpoints are read with weights_only loading: tensors and plain values, no code.
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}
    best = checkpoint.best_model_path or None
    tested = trainer.test(
        module, datamodule=datamodule, ckpt_path="best" if best else None, weights_only=True
    )
    metrics.update({k: float(v) for k, v in (tested[0] if tested else {}).items()})

    if keeps_records:
        _merge_metrics(run_dir, earlier_rows, resumed_from_epoch=resumed_epoch)
    params = hparams(cfg, choices, overrides)
    final = {k: metrics[k] for k in FINAL_METRICS if metrics.get(k) is not None}
    if trainer.is_global_zero:  # DDP: the other ranks train but record nothing
        _write_hparams(tensorboard, params, final)
    result = {
        "status": "ok" if divergence.diverged_at is None else "diverged",
        "diverged_step": divergence.diverged_at,
        "params": params,
        "overrides": overrides,
        "metrics": {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)},
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "best_checkpoint": best,
        "wall_time_s": round(time.time() - started, 3),
    }
    if trainer.is_global_zero:
        write_result(run_dir, result)
    if divergence.diverged_at is not None:
        log.warning("Training diverged at step %d: loss is not finite", divergence.diverged_at)
    return result


def _write_hparams(logger: TensorBoardLogger, params: dict[str, Any], metrics: dict) -> None:
    """Declare the run's hyperparameters and final metrics for TensorBoard's HPARAMS tab.

    The metric values shown there are read from the run's own scalar curves, so
    nothing is logged here besides the declaration (no ``hp_metric`` placeholder).
    """
    writer = logger.experiment._get_file_writer()
    # Booleans as words: TensorBoard would otherwise show bn as 1.0 and 0.0.
    params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
    for summary in hparams_summary(params, metrics):
        writer.add_summary(summary)
    logger.experiment.flush()


def _set_aside_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of an interrupted run's metrics.csv, read before the resumed run writes its own."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    path.replace(run_dir / "metrics.before-resume.csv")
    return rows


def _checkpoint_epoch(path: str) -> int:
    """The first epoch a run resumed from this end-of-epoch checkpoint trains."""
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"]) + 1


def _merge_metrics(run_dir: Path, earlier: list[dict[str, str]], resumed_from_epoch: int) -> None:
    """One metrics.csv for the whole run: the epochs finished before the interruption, then
    everything after. Rows of the epoch that was cut short are replaced by its rerun."""
    path = run_dir / "metrics.csv"
    with open(path, newline="") as f:
        later = list(csv.DictReader(f))
    kept = [r for r in earlier if r.get("epoch") and int(r["epoch"]) < resumed_from_epoch]
    fields = list(dict.fromkeys(k for row in kept + later for k in row))
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept + later)
    tmp.replace(path)
    (run_dir / "metrics.before-resume.csv").unlink()


def write_result(run_dir: Path, result: dict) -> None:
    """Write ``result.json`` atomically, so a reader never sees half a record."""
    path = Path(run_dir) / "result.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
