"""One LightningModule for every architecture: cross-entropy on logits, accuracy per stage."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from bn_compare.validate import check_perf

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class Classifier(L.LightningModule):
    """Wraps an injected network; logs ``stage/loss`` and ``stage/acc`` plus ``val/acc_best``."""

    def __init__(self, net: nn.Module, optimizer: OptimizerFactory, num_classes: int = 10):
        super().__init__()
        # The network and optimiser come from config; checkpoints hold their state, not them.
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net = net
        self.optimizer_factory = optimizer
        self.criterion = nn.CrossEntropyLoss()
        # The training curves are accumulated in plain tensors: a torchmetrics metric or a
        # ``self.log`` call on every step costs more than a small network's whole step.
        self._train_sums: torch.Tensor | None = None
        self._train_count = 0
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        # Saved in checkpoints, so a resumed run keeps the best accuracy seen before.
        self.val_acc_best.persistent(True)
        self._epoch_started = 0.0
        self.channels_last = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._net_forward(x)

    def _net_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def configure_speed(
        self,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
    ) -> None:
        """Speed options that leave the logged curves and checkpoints as they are.

        ``channels_last`` stores conv weights and inputs as NHWC (faster convolutions
        on GPUs with tensor cores). ``compile`` compiles the network in place with
        ``torch.compile`` (state-dict keys unchanged); ``compile_mode="reduce-overhead"``
        adds CUDA graphs on GPUs. Both may change results in the last bits.
        """
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:
            mode = None if compile_mode in (None, "default") else compile_mode
            self.net.compile(mode=mode, backend=compile_backend)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        logits = self._net_forward(x)
        return self.criterion(logits, y), logits.detach(), y

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # Batches already on the device (data.on_device, or training on the CPU) skip
        # Lightning's generic walk over the batch.
        if isinstance(batch, tuple | list) and all(
            isinstance(t, torch.Tensor) and t.device == device for t in batch
        ):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()
        self._train_sums, self._train_count = None, 0
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", float(lr), on_step=False, on_epoch=True)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, y = self._step(batch)
        n = y.shape[0]
        detached = loss.detach()
        # [sum of loss x batch size, correct predictions]: no host sync, one small add.
        step_sums = torch.stack([detached * n, (logits.argmax(1) == y).sum().to(loss.dtype)])
        if self._train_sums is None:
            self._train_sums = step_sums
        else:
            self._train_sums += step_sums
        self._train_count += n
        self._log_step({"train/loss_step": detached})
        return loss

    def _log_step(self, metrics: dict[str, torch.Tensor]) -> None:
        """Write step metrics to the loggers and the progress bar, on logging steps only.

        ``self.log`` moves its whole result record between devices on every call,
        which costs more than a small network's step; on the steps the trainer
        writes logs (every ``trainer.log_every_n_steps``) the values go straight
        to its logger connector, which adds ``epoch`` and the step exactly as
        ``self.log`` would.
        """
        trainer = self.trainer
        connector = getattr(trainer, "_logger_connector", None)
        if connector is None or not hasattr(connector, "log_metrics"):
            for name, value in metrics.items():  # another Lightning: the documented way
                self.log(name, value, on_step=True, on_epoch=False, prog_bar=True)
            return
        if not (connector.should_update_logs or trainer.fast_dev_run):
            return
        connector.log_metrics(dict(metrics))
        connector.progress_bar_metrics.update(metrics)
        connector.callback_metrics.update(metrics)

    def on_train_epoch_end(self) -> None:
        if self._train_sums is not None and self._train_count:
            # Batch-size weighted means, as Lightning's own on_epoch reduction computes them.
            loss_mean, acc = (self._train_sums / self._train_count).unbind()
            sync = self.trainer.world_size > 1  # once per epoch: cheap
            self.log("train/loss_epoch", loss_mean, on_epoch=True, prog_bar=True, sync_dist=sync)
            self.log("train/acc", acc, on_epoch=True, sync_dist=sync)
        self._train_sums, self._train_count = None, 0
        # Wall time of the whole epoch, validation included.
        self.log("time/epoch", time.perf_counter() - self._epoch_started, on_epoch=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, logits, y = self._step(batch)
        self.val_acc.update(logits, y)
        self.log("val/loss", loss, on_step=False, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.val_acc.reset()
        if self.trainer.sanity_checking:
            return  # a sanity pass before training is not a result
        self.val_acc_best.update(acc)
        self.log("val/acc", acc, prog_bar=True)
        self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch, batch_idx: int) -> None:
        loss, logits, y = self._step(batch)
        self.test_acc.update(logits, y)
        self.log("test/loss", loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.parameters())


def configure_speed(module: Classifier, perf: Mapping[str, Any] | None) -> None:
    """Apply the ``perf`` config block (see ``conf/config.yaml``) to a run.

    Raises ``ValueError`` with a one-line message for a value that cannot work.
    """
    perf = dict(perf or {})
    check_perf(perf)
    if perf.get("num_threads") is not None:
        torch.set_num_threads(perf["num_threads"])
    if perf.get("matmul_precision") is not None:
        torch.set_float32_matmul_precision(perf["matmul_precision"])
    module.configure_speed(
        channels_last=perf.get("channels_last", False),
        compile=perf.get("compile", False),
        compile_mode=perf.get("compile_mode") or "default",
        compile_backend=perf.get("compile_backend") or "inductor",
    )
