"""Stop a run whose training loss stops being a finite number."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class DivergenceMonitor(Callback):
    """Records the first step with a NaN or infinite loss and stops training there.

    The check stays on the device: the flag is read back every ``check_every``
    steps (every step on a CPU, where reading costs nothing), so a GPU run is
    not synchronised on each step, and the step recorded is still the exact one.
    """

    def __init__(self, check_every: int | None = None):
        self.check_every = check_every
        self.first_bad: torch.Tensor | None = None
        self.diverged_at: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        step = trainer.global_step
        if self.first_bad is None:
            self.first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(loss.detach())
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)
        every = self.check_every or (1 if loss.device.type == "cpu" else 50)
        if step % every == 0:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if self.diverged_at is None and self.first_bad is not None:
            first = int(self.first_bad.item())
            if first >= 0:
                self.diverged_at = first
                trainer.should_stop = True
