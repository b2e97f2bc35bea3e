"""Bad input: one readable line, a non-zero exit, and nothing trained or written."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import run_train

CASES = {
    # arguments: what the error must say
    "model=nope": "Could not find 'model/nope'",
    "optimizer=nope": "Could not find 'optimizer/nope'",
    "data=nope": "Could not find 'data/nope' (known: fashion_mnist, mnist)",
    "optimizer.lrr=3": "Could not override 'optimizer.lrr'. There is no such key; to append",
    "bn=maybe": "bn must be true or false, got 'maybe'",
    "batch_size=0": "batch_size must be a positive whole number, got 0",
    "batch_size=-3": "batch_size must be a positive whole number, got -3",
    "batch_size=2.5": "batch_size must be a positive whole number, got 2.5",
    "batch_size=abc": "batch_size must be a positive whole number, got 'abc'",
    "optimizer.lr=-0.1": "optimizer.lr must be a number > 0, got -0.1",
    "epochs=0": "epochs must be a positive whole number, got 0",
    "-m bn=true,maybe": "bn must be true or false, got 'maybe'",
    "-m model=lenet5,nope": "Could not find 'model/nope' (known: cnn, cnn_rgb, lenet5",
    "-m batch_size=32,0": "batch_size must be a positive whole number, got 0",
    "batch_size=100000 data.val_size=100": "batch_size 100000 is larger than the 500 training",
    "data.val_size=600": "data.val_size must be below the 600-image training split",
    "perf.compile_mode=fastest": "perf.compile_mode must be one of default, reduce-overhead",
    "data.root=missing": "MNIST not found in missing/MNIST/raw (needs train-images-idx3-ubyte",
}


def _run(args: str, cwd, data_root) -> subprocess.CompletedProcess:
    argv = args.split()
    if not any(a.startswith("data.root=") for a in argv):
        argv.append(f"data.root={data_root}")
    return run_train(argv, cwd, timeout=120)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, mnist_root):
    """Run every bad command once, two at a time (each is mostly interpreter start-up)."""
    dirs = {args: tmp_path_factory.mktemp("bad") for args in CASES}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {a: pool.submit(_run, a, dirs[a], mnist_root) for a in CASES}
        return {a: (f.result(), dirs[a]) for a, f in futures.items()}


@pytest.mark.parametrize("args", list(CASES))
def test_bad_input_is_one_clear_line_before_anything_is_written(outcomes, args):
    result, cwd = outcomes[args]
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, result.stdout
    assert any(CASES[args] in line for line in lines[:1]), result.stderr
    assert "Traceback" not in result.stderr
    assert list(cwd.iterdir()) == [], "nothing may be written"
