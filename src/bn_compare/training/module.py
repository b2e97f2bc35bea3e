"""One LightningModule for every architecture: cross-entropy on logits, accuracy per stage."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

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
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        # Saved in checkpoints, so a resumed run keeps the best accuracy seen before.
        self.val_acc_best.persistent(True)
        self._epoch_started = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        logits = self.net(x)
        return self.criterion(logits, y), logits.detach(), y

    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", float(lr), on_step=False, on_epoch=True)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, y = self._step(batch)
        self.train_acc.update(logits, y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_end(self) -> None:
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
