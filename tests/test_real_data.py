"""A short run on the real Fashion-MNIST learns: well above the 10% of chance."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_DATA, TINY

FASHION = SHARED_DATA / "FashionMNIST" / "raw"


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"real Fashion-MNIST not found at {FASHION}")
def test_short_run_on_fashion_mnist_learns(train, tmp_path):
    result = train(
        [
            "model=mlp",
            "data=fashion_mnist",
            f"data.root={SHARED_DATA}",
            *TINY,
            "data.val_size=2000",
            "data.limit_train=4000",
            "batch_size=64",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "outputs").glob("*/*")
    metrics = json.loads((run / "result.json").read_text())["metrics"]
    assert metrics["test/acc"] > 0.6, metrics
    assert metrics["val/acc_best"] > 0.6, metrics
