"""Cost of the activation statistics callback per training step.

Trains the same network on random data with and without ``ActivationStats``
(interleaved, several repeats) and times every training step from the first
callback's ``on_train_batch_start`` to the last callback's ``on_train_batch_end``,
so the hooks' set-up, the percentiles and the TensorBoard writes are all inside
the measured step. Prints the mean step time of both and the overhead.

    OMP_NUM_THREADS=1 python scripts/activation_overhead.py --model mlp --every 50
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from bn_compare.models import build_model
from bn_compare.training.activations import ActivationStats
from bn_compare.training.module import Classifier

CONF = Path(__file__).resolve().parents[1] / "conf"


class StepStart(L.Callback):
    def __init__(self, times: list[float]):
        self.times, self.t0 = times, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.t0 = time.perf_counter()


class StepEnd(L.Callback):
    def __init__(self, start: StepStart):
        self.start = start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.start.times.append(time.perf_counter() - self.start.t0)


def run(model: str, batch_size: int, steps: int, every: int | None, unit: int | None) -> list:
    torch.manual_seed(0)
    cfg = OmegaConf.load(CONF / "model" / f"{model}.yaml")
    net = build_model(cfg, bn=True, name=model)
    c, h, w = net.input_shape
    module = Classifier(net, lambda params: torch.optim.SGD(params, lr=0.01), num_classes=10)
    n = batch_size * steps
    data = TensorDataset(torch.randn(n, c, h, w), torch.randint(0, 10, (n,)))
    times: list[float] = []
    start = StepStart(times)
    callbacks: list[L.Callback] = [start]
    if every is not None:
        callbacks.append(ActivationStats(every_n_steps=every, unit=unit))
    callbacks.append(StepEnd(start))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=steps,
            max_epochs=1,
            logger=TensorBoardLogger(tmp, name="", version=""),
            callbacks=callbacks,
            log_every_n_steps=50,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, DataLoader(data, batch_size=batch_size))
    return times  # times[i] is global step i


def main() -> None:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=50, help="activations.every_n_steps")
    parser.add_argument("--unit", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    means: dict[str, list[float]] = {"off": [], "on": []}
    logged: list[float] = []
    plain: list[float] = []
    for _ in range(args.repeats):
        for name, every in (("off", None), ("on", args.every)):
            times = run(args.model, args.batch_size, args.steps, every, args.unit)
            means[name].append(statistics.fmean(times[10:]))  # the first steps warm up
            if every:
                logged += [t for i, t in enumerate(times) if i >= 10 and i % every == 0]
                plain += [t for i, t in enumerate(times) if i >= 10 and i % every]
    off, on = statistics.median(means["off"]), statistics.median(means["on"])
    extra = statistics.median(logged) - statistics.median(plain)
    print(
        f"model={args.model} batch_size={args.batch_size} steps={args.steps} "
        f"every_n_steps={args.every} repeats={args.repeats} threads={torch.get_num_threads()}"
    )
    print(f"mean step without: {1e3 * off:.3f} ms  (per repeat: {_ms(means['off'])})")
    print(f"mean step with:    {1e3 * on:.3f} ms  (per repeat: {_ms(means['on'])})")
    print(f"overhead, mean step with vs without: {100 * (on - off) / off:+.2f}%")
    print(
        f"a logged step costs {1e3 * extra:.3f} ms more than a plain one (medians); "
        f"spread over {args.every} steps: {100 * extra / args.every / off:+.2f}% of a step"
    )


def _ms(values: list[float]) -> str:
    return ", ".join(f"{1e3 * v:.3f}" for v in values)


if __name__ == "__main__":
    main()
