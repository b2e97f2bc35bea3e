"""Diverging runs, crashing jobs, interruptions, reruns and bad files never cost results."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, TINY, sweep_dir

from bn_compare.launch import unique_dir

# A plain CNN that can crash, or press Ctrl-C on itself, at a chosen training step:
# faults that users meet, injected without touching the project's code.
FAULTY_MODEL = textwrap.dedent(
    """
    import os, signal
    from torch import nn

    CALLS = {"n": 0}

    class Net(nn.Module):
        def __init__(self, bn, input_shape, num_classes):
            super().__init__()
            self.bn = bn
            layers = [nn.Conv2d(1, 4, 3, bias=not bn)]
            layers += [nn.BatchNorm2d(4)] if bn else []
            layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, num_classes)]
            self.net = nn.Sequential(*layers)

        def forward(self, x):
            if self.training:
                CALLS["n"] += 1
                if os.environ.get("CRASH_WHEN_BN") and self.bn:
                    raise RuntimeError("boom: injected failure")
                if CALLS["n"] == int(os.environ.get("INTERRUPT_AT", "0")):
                    os.kill(os.getpid(), signal.SIGINT)
            return self.net(x)
    """
)

FAST = [*TINY, "trainer.limit_train_batches=3", "trainer.log_every_n_steps=1"]


@pytest.fixture
def faulty(tmp_path, mnist_root):
    """Overrides selecting the faulty model, and the environment that makes it importable."""
    pkg = tmp_path / "userpkg"
    (pkg / "model").mkdir(parents=True)
    (pkg / "faulty.py").write_text(FAULTY_MODEL)
    (pkg / "model" / "faulty.yaml").write_text(
        "_target_: faulty.Net\ninput: {channels: 1, size: 28}\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(pkg), os.environ.get("PYTHONPATH", "")])}
    args = ["model=faulty", f"hydra.searchpath=[file://{pkg}]", f"data.root={mnist_root}"]
    return args, env


def results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"))}


def curves(run: Path) -> list[dict]:
    """metrics.csv without its wall-clock column."""
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "time/epoch"} for row in csv.DictReader(f)]


def test_diverging_run_is_recorded_and_the_sweep_goes_on(train, tmp_path, mnist_root):
    result = train(
        [
            "-m",
            "model=mlp",
            "bn=false",
            "optimizer=sgd",
            "optimizer.lr=1e30,0.01",
            f"data.root={mnist_root}",
            *FAST,
        ]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = sweep_dir(tmp_path)
    records = results(sweep)
    diverged = records["model=mlp,optimizer.lr=1e+30"]
    assert diverged["status"] == "diverged"
    assert isinstance(diverged["diverged_step"], int)
    assert records["model=mlp,optimizer.lr=0.01"]["status"] == "ok"
    kept = curves(sweep / "model=mlp,optimizer.lr=1e+30")
    assert any(row["train/loss_step"] for row in kept)


def test_a_crashing_job_does_not_stop_the_sweep(train, tmp_path, faulty):
    args, env = faulty
    result = train(["-m", *args, "bn=true,false", *FAST], env={**env, "CRASH_WHEN_BN": "1"})
    assert result.returncode != 0
    sweep = sweep_dir(tmp_path)
    records = results(sweep)
    assert records["model=faulty,bn=true"]["status"] == "failed"
    assert "boom: injected failure" in records["model=faulty,bn=true"]["error"]
    assert records["model=faulty,bn=false"]["status"] == "ok"
    assert "failed: model=faulty,bn=true: RuntimeError: boom: injected failure" in result.stderr


def test_interrupted_sweep_resumes_to_the_uninterrupted_result(train, tmp_path, faulty):
    args, env = faulty
    run_args = [*args, *(a for a in FAST if not a.startswith("epochs=")), "epochs=3"]
    # Job 1 (bn=true) finishes in 9 training steps; Ctrl-C lands in epoch 2 of job 2.
    first = train(["-m", *run_args, "bn=true,false"], env={**env, "INTERRUPT_AT": "14"})
    assert first.returncode != 0
    sweep = sweep_dir(tmp_path)
    before = results(sweep)
    assert before["model=faulty,bn=true"]["status"] == "ok"
    assert before["model=faulty,bn=false"]["status"] == "interrupted"
    finished_at = (sweep / "model=faulty,bn=true" / "result.json").stat().st_mtime_ns

    resumed = train([f"resume={sweep}"], env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = results(sweep)
    assert {r["status"] for r in after.values()} == {"ok"}
    assert (sweep / "model=faulty,bn=true" / "result.json").stat().st_mtime_ns == finished_at
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [
        "model=faulty,bn=false",
        "model=faulty,bn=true",
    ]

    # The same job, never interrupted, twice: bit-for-bit the same, and equal to the resumed one.
    for i in range(2):
        ref = subprocess.run(
            [
                sys.executable,
                str(ROOT / "train.py"),
                *run_args,
                "bn=false",
                f"hydra.run.dir={tmp_path}/reference{i}",
            ],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert ref.returncode == 0, ref.stderr[-2000:]
    reference = json.loads((tmp_path / "reference0" / "result.json").read_text())["metrics"]
    again = json.loads((tmp_path / "reference1" / "result.json").read_text())["metrics"]
    resumed_metrics = after["model=faulty,bn=false"]["metrics"]
    for key in ("val/acc", "val/acc_best", "val/loss", "test/acc", "test/loss", "train/loss_epoch"):
        assert again[key] == reference[key], key
        assert resumed_metrics[key] == reference[key], key
    assert curves(tmp_path / "reference1") == curves(tmp_path / "reference0")
    # The resumed run's metrics file holds the whole run, as if it had never stopped.
    resumed_curve = curves(sweep / "model=faulty,bn=false")
    assert [r["train/loss_step"] for r in resumed_curve if r["train/loss_step"]] == [
        r["train/loss_step"] for r in curves(tmp_path / "reference0") if r["train/loss_step"]
    ]


def test_two_commands_in_the_same_second_get_different_directories(tmp_path, mnist_root):
    argv = [sys.executable, str(ROOT / "train.py"), "model=mlp", f"data.root={mnist_root}", *FAST]
    procs = [
        subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    runs = list((tmp_path / "outputs").glob("*/*/result.json"))
    assert len(runs) == 2


def test_unique_dir_never_reuses_a_directory(tmp_path):
    first = unique_dir(str(tmp_path / "12-00-00"))
    second = unique_dir(str(tmp_path / "12-00-00"))
    assert first != second and Path(first).is_dir() and Path(second).is_dir()
    assert second == str(tmp_path / "12-00-00_2")


def test_truncated_dataset_file_is_named(train, tmp_path, mnist_root):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(mnist_root, root)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    result = train([f"data.root={root}"])
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[0]
    assert f"error: {images} is truncated or corrupt" in line
    assert "delete it and download or copy the dataset again" in line


def test_unwritable_output_dir_and_missing_resume_dir(train, tmp_path, mnist_root):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = train([f"data.root={mnist_root}", "data.val_size=100", f"hydra.run.dir={blocker}/run"])
    assert result.returncode != 0
    assert result.stderr.startswith("error: cannot write the output directory (hydra.run.dir)")
    missing = train([f"resume={tmp_path}/nowhere"])
    assert missing.returncode != 0
    assert missing.stderr.startswith(f"error: resume={tmp_path}/nowhere: not a run or sweep")
