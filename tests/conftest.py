"""Shared fixtures: test-written MNIST files and a runner for the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from idx import write_mnist  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Small, fast runs: a handful of batches, no progress bar, CPU.
TINY = [
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "epochs=1",
    "data.val_size=100",
    "data.eval_batch_size=100",
]


def sweep_dir(cwd: Path) -> Path:
    """The one sweep directory a test's multirun created under ``cwd/outputs/multirun``."""
    (sweep,) = (Path(cwd) / "outputs" / "multirun").glob("*/*")
    return sweep


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A data root holding a small MNIST written by the tests (MNIST/raw/*-ubyte)."""
    return write_mnist(tmp_path_factory.mktemp("data"))


def run_train(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300):
    """Run ``train.py`` as a user would, in ``cwd`` (where outputs/ is created)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("BN_COMPARE_DATA", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def train(tmp_path):
    """Call ``train(args)`` to run the entry point with outputs under ``tmp_path``."""

    def _train(args: list[str], **kwargs):
        return run_train(args, tmp_path, **kwargs)

    return _train
