"""Lightning's fixed cost per training step, measured on a tiny network (784 -> 10 linear).

With almost no arithmetic per step, the difference between the framework and a
raw loop is the per-step overhead. Variants: everything on (as ``train.py``), and
with the progress bar, loggers or checkpointing switched off, and all off.
Reports microseconds of process CPU time per step (min and median of repeats).

    python bench/overhead.py --data-root ../shared/data --repeats 4
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from throughput import StepTimer  # noqa: E402

from bn_compare.data import EpochBatchSampler  # noqa: E402
from bn_compare.launch import register_resolvers  # noqa: E402
from bn_compare.training.module import Classifier  # noqa: E402
from bn_compare.training.run import build_datamodule  # noqa: E402


def tiny() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="fashion_mnist")
    p.add_argument("--data-root", required=True)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    register_resolvers()
    warmup, steps, bs = 10, args.steps, args.batch_size
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "model=mlp",
                f"batch_size={bs}",
                f"data={args.data}",
                f"data.root={args.data_root}",
                "trainer=cpu",
                "epochs=1",
                f"trainer.limit_train_batches={warmup + steps + 1}",
                "trainer.limit_val_batches=1",
                "trainer.limit_test_batches=1",
            ],
        )
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    x, y = datamodule.tensors["train"]

    def framework(pbar: bool, loggers: bool, ckpt: bool) -> float:
        module = Classifier(tiny(), instantiate(cfg.optimizer))
        timer = StepTimer(warmup, steps)
        with (
            tempfile.TemporaryDirectory() as tmp,
            open(os.devnull, "w") as null,
            contextlib.redirect_stderr(null),
            contextlib.redirect_stdout(null),
        ):
            callbacks = [timer]
            if ckpt:
                callbacks.append(ModelCheckpoint(dirpath=tmp, monitor="val/acc", mode="max"))
            if pbar:
                callbacks.append(TQDMProgressBar(cfg.progress_refresh))
            logger = [TensorBoardLogger(tmp, name="", version=""), CSVLogger(tmp, name="")]
            trainer = instantiate(
                cfg.trainer,
                logger=logger if loggers else False,
                callbacks=callbacks,
                enable_progress_bar=pbar,
                enable_checkpointing=ckpt,
                enable_model_summary=False,
            )
            trainer.fit(module, datamodule=datamodule)
        return timer.seconds[1] / steps * 1e6

    def raw() -> float:
        net = tiny()
        optimizer = instantiate(cfg.optimizer)(params=net.parameters())
        criterion = nn.CrossEntropyLoss()
        for i, idx in enumerate(EpochBatchSampler(len(y), bs, True, 0)):
            if i == warmup:
                t0 = time.process_time()
            if i == warmup + steps:
                return (time.process_time() - t0) / steps * 1e6
            loss = criterion(net(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        raise RuntimeError("too few batches")

    variants = {
        "raw loop": raw,
        "framework, all on": lambda: framework(True, True, True),
        "no progress bar": lambda: framework(False, True, True),
        "no loggers": lambda: framework(True, False, True),
        "no checkpointing": lambda: framework(True, True, False),
        "all three off": lambda: framework(False, False, False),
    }
    results: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            results.setdefault(name, []).append(fn())
    print("| variant | CPU us/step (min) | median |\n|---|---:|---:|")
    for name, values in results.items():
        print(f"| {name} | {min(values):.0f} | {statistics.median(values):.0f} |")


if __name__ == "__main__":
    main()
