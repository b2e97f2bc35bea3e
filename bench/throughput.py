"""Training throughput: the framework's default path, a raw PyTorch loop, and the fast path.

For every model, bn on and off, and every batch size, three variants train the
same network (same builder, optimiser, data tensors and batch order) for a
fixed number of steps, interleaved and repeated; the median is reported.

- ``default``: ``bn_compare.training.run.train`` on a config composed from
  ``conf/`` exactly as ``train.py`` composes it (TensorBoard + CSV loggers,
  metrics, progress bar, checkpointing, validation, test).
- ``raw``: a plain PyTorch loop, no Lightning, no logging (the reference).
- ``fast``: the default path with ``data.on_device=true``.

Each measurement times ``--steps`` whole training iterations after ``--warmup``
iterations: from the start of step ``warmup`` to the start of step
``warmup + steps`` (the epoch is cut at ``warmup + steps + 1`` batches with
``trainer.limit_train_batches``). Validation, test and checkpoint writing at
the end of the epoch fall outside that window; they are covered by the
separate end-to-end run of the real command line (``--e2e``), which also gives
the peak resident memory and the time from command to first training step.

    python bench/throughput.py --data-root ../shared/data --out docs/benchmark.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bn_compare.data import EpochBatchSampler  # noqa: E402
from bn_compare.launch import register_resolvers  # noqa: E402
from bn_compare.models import build_arm  # noqa: E402
from bn_compare.training.run import build_datamodule, train  # noqa: E402

MODELS = ("lenet5", "cnn", "mlp", "mlp_sigmoid", "cnn_rgb")
BATCH_SIZES = (32, 64, 128)
VARIANTS = ("default", "raw", "fast")


class StepTimer(L.Callback):
    """Records when training steps start: the wall clock of the first, and a timed window."""

    def __init__(self, warmup: int, steps: int, record: Path | None = None):
        self.warmup, self.steps, self.record = warmup, steps, record
        self.first_step: float | None = None
        self.t0 = self.t1 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.first_step is None:
            self.first_step = time.time()
            if self.record is not None:
                self.record.write_text(json.dumps({"first_step": self.first_step}))
        if trainer.current_epoch == 0 and batch_idx == self.warmup:
            self.t0 = clocks()
        elif trainer.current_epoch == 0 and batch_idx == self.warmup + self.steps:
            self.t1 = clocks()

    @property
    def seconds(self) -> tuple[float, float]:
        if self.t0 is None or self.t1 is None:
            raise RuntimeError("the epoch ended before the timed window did")
        return self.t1[0] - self.t0[0], self.t1[1] - self.t0[1]


def clocks() -> tuple[float, float]:
    """Wall clock and this process's CPU time (less sensitive to other jobs on the machine)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # GPU work queued so far counts in the window
    return time.perf_counter(), time.process_time()


def compose_cfg(model: str, bn: bool, batch_size: int, args, extra: list[str]) -> DictConfig:
    overrides = [
        f"model={model}",
        f"bn={str(bn).lower()}",
        f"batch_size={batch_size}",
        f"data={args.data}",
        f"data.root={args.data_root}",
        f"trainer={args.trainer}",
        "epochs=1",
        f"seed={args.seed}",
        *extra,
    ]
    return compose(config_name="config", overrides=overrides)


def run_default(cfg: DictConfig, model: str, args) -> tuple[float, float]:
    """Seconds for ``args.steps`` training steps through the framework's own ``train()``."""
    timer = StepTimer(args.warmup, args.steps)
    # The progress bar is on, as for users; its output is discarded here.
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        open(os.devnull, "w") as null,
        contextlib.redirect_stderr(null),
        contextlib.redirect_stdout(null),
    ):
        train(cfg, Path(tmp), {"model": model, "data": args.data}, [], extra_callbacks=[timer])
    return timer.seconds


def run_raw(cfg: DictConfig, model: str, args) -> tuple[float, float]:
    """The reference: the same network, optimiser, tensors and batch order, no Lightning."""
    L.seed_everything(cfg.seed, verbose=False)
    net = build_arm(cfg, model)
    gpu = cfg.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    net.to(device)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    # The whole split on the training device (on the CPU: where it already is).
    x, y = (t.to(device) for t in datamodule.tensors["train"])
    sampler = EpochBatchSampler(len(y), cfg.batch_size, cfg.data.shuffle, cfg.seed)
    sampler.set_epoch(0)
    criterion = nn.CrossEntropyLoss()
    net.train()
    t0 = None
    for step, idx in enumerate(sampler.order().to(device).split(cfg.batch_size)):
        if step == args.warmup:
            t0 = clocks()
        elif step == args.warmup + args.steps:
            t1 = clocks()
            return t1[0] - t0[0], t1[1] - t0[1]
        loss = criterion(net(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    raise RuntimeError("the epoch ended before the timed window did")


def measure(variant: str, model: str, bn: bool, batch_size: int, args) -> tuple[float, float]:
    """Images per second by wall clock and by process CPU time."""
    limit = [
        f"trainer.limit_train_batches={args.warmup + args.steps + 1}",
        # Outside the timed window; cut to keep the whole benchmark short.
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    ]
    if variant == "fast":
        limit += ["data.on_device=true", *args.fast_override]
    cfg = compose_cfg(model, bn, batch_size, args, limit + args.override)
    wall, cpu = (run_raw if variant == "raw" else run_default)(cfg, model, args)
    images = args.steps * batch_size
    return images / wall, images / cpu


def e2e(args) -> dict:
    """The real command line, one full epoch of LeNet-5: peak RSS, time to first step, wall time."""
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        record = Path(tmp) / "first_step.json"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(record),
            f"model={args.e2e_model}",
            f"batch_size={args.e2e_batch_size}",
            f"data={args.data}",
            f"data.root={args.data_root}",
            f"trainer={args.trainer}",
            "epochs=1",
            *args.override,
        ]
        started = time.time()
        proc = subprocess.Popen(
            command, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        _, err = proc.communicate()
        ended = time.time()
        if proc.returncode != 0:
            raise RuntimeError(f"end-to-end run failed: {err[-3000:]}")
        measured = json.loads(record.read_text())
        results = sorted(Path(tmp).rglob("result.json"))
        result = json.loads(results[0].read_text()) if results else {}
    return {
        "command": " ".join(["python train.py", *command[5:]]),
        "peak_rss_mb": measured["peak_rss_mb"],
        "first_step_s": measured["first_step"] - started,
        "wall_s": ended - started,
        "epoch_s": result.get("metrics", {}).get("time/epoch"),
    }


def child(record: str, overrides: list[str]) -> None:
    """``train.py`` with a step timer added: what the end-to-end measurement runs."""
    import functools

    import bn_compare.training.run as run

    run.train = functools.partial(run.train, extra_callbacks=[StepTimer(0, 0, Path(record))])
    sys.argv = [str(ROOT / "train.py"), *overrides]
    import runpy

    try:
        runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
    finally:
        # This process's own peak RSS since exec (the rusage a parent gets from wait4
        # also counts the memory of the forked parent before exec).
        status = Path("/proc/self/status").read_text().splitlines()
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
        data = json.loads(Path(record).read_text())
        Path(record).write_text(json.dumps({**data, "peak_rss_mb": hwm / 1024}))


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {cores} cores available, {gpu}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), lightning {L.__version__}, "
        f"Python {platform.python_version()}"
    )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        register_resolvers()
        return child(sys.argv[2], sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="fashion_mnist")
    p.add_argument("--data-root", required=True)
    p.add_argument("--trainer", default="cpu")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    p.add_argument("--bn", default="true,false")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=100, help="timed training steps per measurement")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before the window")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads for every variant (perf.num_threads); default: torch's own",
    )
    p.add_argument("--e2e-model", default="lenet5")
    p.add_argument("--e2e-batch-size", type=int, default=64)
    p.add_argument("--no-e2e", action="store_true")
    p.add_argument("--e2e-only", action="store_true", help="only the end-to-end run")
    p.add_argument("--override", nargs="*", default=[], help="extra config overrides for all")
    p.add_argument(
        "--fast-override",
        nargs="*",
        default=[],
        help="extra overrides for the fast variant, e.g. perf.compile=true",
    )
    p.add_argument("--out", help="write the Markdown report here")
    p.add_argument("--json", help="write the raw measurements here")
    args = p.parse_args()
    # The end-to-end run starts in a temporary directory: make the data path absolute.
    args.data_root = str(Path(args.data_root).resolve())

    register_resolvers()
    if args.threads:
        torch.set_num_threads(args.threads)
        args.override.append(f"perf.num_threads={args.threads}")
    models = args.models.split(",")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    bns = [b == "true" for b in args.bn.split(",")]
    variants = args.variants.split(",")
    cells = [(m, bn, bs) for m in models for bn in bns for bs in sizes]
    samples: dict[tuple, list[float]] = {}
    started = time.time()
    rng = random.Random(args.seed)
    if args.e2e_only:
        print(json.dumps(e2e(args), indent=1))
        return
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for repeat in range(args.repeats):
            for cell in cells:
                # Interleaved: the variants of a cell run back to back, in a shuffled order.
                for variant in rng.sample(variants, len(variants)):
                    ips = measure(variant, *cell, args)
                    samples.setdefault((*cell, variant), []).append(ips)
                    print(
                        f"[{repeat}] {cell} {variant}: {ips[0]:,.0f} img/s "
                        f"({ips[1]:,.0f} by CPU time)",
                        flush=True,
                    )
    sweep_s = time.time() - started
    e2e_result = None if args.no_e2e else e2e(args)
    report = render(samples, cells, variants, args, sweep_s, e2e_result)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    if args.json:
        rows = [
            {"model": m, "bn": bn, "batch_size": bs, "variant": v, "images_per_s": s}
            # s: one [by wall clock, by CPU time] pair per repeat
            for (m, bn, bs, v), s in samples.items()
        ]
        Path(args.json).write_text(json.dumps({"rows": rows, "e2e": e2e_result}, indent=1))


def render(samples, cells, variants, args, sweep_s, e2e_result) -> str:
    med = {k: statistics.median(s[0] for s in v) for k, v in samples.items()}
    med_cpu = {k: statistics.median(s[1] for s in v) for k, v in samples.items()}
    lines = [
        "| model | bn | batch | raw img/s | default img/s | fast img/s | default/raw | fast/raw "
        "| default/raw (CPU time) | default epoch s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst = {}
    for m, bn, bs in cells:
        raw = med.get((m, bn, bs, "raw"))
        d = med.get((m, bn, bs, "default"))
        f = med.get((m, bn, bs, "fast"))

        def fmt(v):
            return f"{v:,.0f}" if v else "-"

        def ratio(v, raw=raw):
            return f"{v / raw:.2f}" if v and raw else "-"

        epoch = f"{EPOCH_IMAGES / d:.1f}" if d else "-"
        raw_cpu, d_cpu = med_cpu.get((m, bn, bs, "raw")), med_cpu.get((m, bn, bs, "default"))
        cpu_ratio = f"{d_cpu / raw_cpu:.2f}" if d_cpu and raw_cpu else "-"
        lines.append(
            f"| {m} | {'on' if bn else 'off'} | {bs} | {fmt(raw)} | {fmt(d)} | {fmt(f)} "
            f"| {ratio(d)} | {ratio(f)} | {cpu_ratio} | {epoch} |"
        )
        if d and raw:
            worst.setdefault(bs, []).append((d / raw, m, bn))
    summary = []
    for bs in sorted(worst):
        r, m, bn = min(worst[bs])
        summary.append(f"batch {bs}: lowest default/raw {r:.2f} ({m}, bn {'on' if bn else 'off'})")
    out = [
        f"Machine: {machine()}",
        "",
        f"Measured: {args.steps} timed steps after {args.warmup} warm-up steps per "
        f"measurement, {args.repeats} repeats, median; sweep took {sweep_s / 60:.1f} min.",
        "",
        *lines,
        "",
        "; ".join(summary),
    ]
    if e2e_result:
        out += ["", "```json", json.dumps(e2e_result, indent=1), "```"]
    return "\n".join(out) + "\n"


# The training images of one epoch with the default split (60,000 - 5,000 validation).
EPOCH_IMAGES = 55_000

if __name__ == "__main__":
    main()
