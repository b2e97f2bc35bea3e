"""Activation statistics: what the hidden layers' nonlinearities see during training.

``ActivationStats`` is a Lightning callback. Every ``every_n_steps`` training steps
it puts forward hooks on the network's activation modules (ReLU, Tanh, Sigmoid,
GELU, LeakyReLU) for that one step, and writes to TensorBoard

- ``activations/<layer>/p15``, ``p50``, ``p85``: percentiles of the activation's
  INPUT over the batch (all units), i.e. the pre-activation values; with
  ``bn_position=before`` that is the output of the normalisation layer;
- ``activations/<layer>/unit<k>/p15`` ...: the same for one unit (channel) ``k`` of
  the last hidden layer, the quantity plotted in Ioffe & Szegedy (2015), Figure 1;

and, at the end of every training epoch, a histogram of each activation's OUTPUT
(``activations/<layer>/output``) on the epoch's last training batch.

``<layer>`` is ``<n>_<kind>``: the n-th activation of the network counted from 1
(``1_sigmoid``, ``2_sigmoid`` ...). The values come from training batches with the
network in training mode, so with BN they use the batch's own statistics.

Hooks exist only on the steps that are logged: the other steps pay a modulo and a
comparison. The scalars go to TensorBoard only (not to ``metrics.csv``); the sweep
report reads them back from the event files.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.LeakyReLU,
)
PERCENTILES = (15, 50, 85)
# torch.quantile refuses inputs above 2**24 elements; larger tensors are subsampled.
_MAX_QUANTILE_ELEMENTS = 2**24


def activation_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(tag name, module) for every activation module, in forward order of definition."""
    found = [m for m in module.modules() if isinstance(m, ACTIVATION_TYPES)]
    return [(f"{i}_{type(m).__name__.lower()}", m) for i, m in enumerate(found, start=1)]


def percentiles(values: torch.Tensor, qs: tuple[int, ...] = PERCENTILES) -> list[float]:
    """The ``qs`` percentiles (linear interpolation, as torch.quantile) of all of ``values``."""
    flat = values.detach().reshape(-1).float()
    if flat.numel() > _MAX_QUANTILE_ELEMENTS:
        step = -(-flat.numel() // _MAX_QUANTILE_ELEMENTS)
        flat = flat[::step]
    q = torch.tensor([p / 100 for p in qs], dtype=flat.dtype, device=flat.device)
    return [float(v) for v in torch.quantile(flat, q).cpu()]


def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger
    return None


class ActivationStats(Callback):
    """Log pre-activation percentiles every N steps and activation histograms per epoch.

    Args:
        every_n_steps: log the percentiles on steps 0, N, 2N, ... (global step).
        unit: also log the percentiles of this one unit (feature or channel) of the
            last hidden layer's pre-activation; ``None`` for none.
        histograms: write the histograms of the activations' outputs at epoch ends.
        percentiles: which percentiles to log.
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        unit: int | None = None,
        histograms: bool = True,
        percentiles: tuple[int, ...] = PERCENTILES,
    ):
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int):
            raise ValueError(
                f"activations.every_n_steps must be a whole number, got {every_n_steps!r}"
            )
        if every_n_steps < 1:
            raise ValueError(f"activations.every_n_steps must be >= 1, got {every_n_steps}")
        if unit is not None and (isinstance(unit, bool) or not isinstance(unit, int) or unit < 0):
            raise ValueError(f"activations.unit must be a unit index >= 0 or null, got {unit!r}")
        if not percentiles or any(not 0 <= p <= 100 for p in percentiles):
            raise ValueError(f"activations.percentiles must lie in [0, 100], got {percentiles!r}")
        self.every_n_steps = every_n_steps
        self.unit = unit
        self.histograms = histograms
        self.percentiles = tuple(percentiles)
        self._handles: list[Any] = []
        self._inputs: dict[str, torch.Tensor] = {}
        self._outputs: dict[str, torch.Tensor] = {}
        self._log_step: int | None = None
        self._last_outputs: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg: Any) -> ActivationStats:
        """Build from the ``activations`` config block (``enabled`` is the caller's business)."""
        get = cfg.get
        kwargs: dict[str, Any] = {"every_n_steps": get("every_n_steps", 50)}
        if get("unit") is not None:
            kwargs["unit"] = get("unit")
        if get("histograms") is not None:
            kwargs["histograms"] = bool(get("histograms"))
        if get("percentiles") is not None:
            kwargs["percentiles"] = tuple(int(p) for p in get("percentiles"))
        return cls(**kwargs)

    # -- hooks on the logged steps only ------------------------------------------------

    def _attach(self, pl_module: L.LightningModule, keep_outputs: bool) -> None:
        for name, module in activation_layers(pl_module):

            def hook(_m, args, output, name=name):
                self._inputs[name] = args[0].detach()
                if keep_outputs:
                    self._outputs[name] = output.detach()

            self._handles.append(module.register_forward_hook(hook))

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._inputs.clear()
        self._outputs.clear()

    def _is_last_batch(self, trainer: L.Trainer, batch_idx: int) -> bool:
        n = trainer.num_training_batches
        last_of_epoch = isinstance(n, int) and batch_idx == n - 1
        last_of_run = trainer.max_steps > 0 and trainer.global_step == trainer.max_steps - 1
        return last_of_epoch or last_of_run

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        log_now = step % self.every_n_steps == 0
        histogram_now = self.histograms and self._is_last_batch(trainer, batch_idx)
        if not (log_now or histogram_now) or _tensorboard(trainer) is None:
            return
        self._log_step = step if log_now else None
        self._attach(pl_module, keep_outputs=histogram_now)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._handles:
            return
        try:
            logger = _tensorboard(trainer)
            if self._log_step is not None and logger is not None:
                self._write_percentiles(logger, self._log_step)
            if self._outputs:
                self._last_outputs = {k: v.cpu() for k, v in self._outputs.items()}
        finally:
            self._detach()

    def _write_percentiles(self, logger: TensorBoardLogger, step: int) -> None:
        writer = logger.experiment
        names = list(self._inputs)
        for name in names:
            values = self._inputs[name]
            for p, v in zip(self.percentiles, percentiles(values, self.percentiles), strict=True):
                writer.add_scalar(f"activations/{name}/p{p}", v, step)
        if self.unit is not None and names:
            last = names[-1]
            values = self._inputs[last]
            if values.dim() >= 2 and self.unit < values.shape[1]:
                unit_values = values[:, self.unit]
                for p, v in zip(
                    self.percentiles, percentiles(unit_values, self.percentiles), strict=True
                ):
                    writer.add_scalar(f"activations/{last}/unit{self.unit}/p{p}", v, step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        logger = _tensorboard(trainer)
        if logger is None or not self._last_outputs:
            return
        for name, values in self._last_outputs.items():
            logger.experiment.add_histogram(
                f"activations/{name}/output", values.float(), trainer.global_step
            )
        logger.experiment.flush()
        self._last_outputs = {}

    def on_train_end(self, trainer, pl_module) -> None:
        self._detach()
        logger = _tensorboard(trainer)
        if logger is not None:
            logger.experiment.flush()
