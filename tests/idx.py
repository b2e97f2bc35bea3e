"""Write small MNIST-format IDX files that torchvision's real dataset classes read."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x0803, n, h, w) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 0x0801, len(labels)) + labels.astype(np.uint8).tobytes())


def make_images(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """Noisy images whose class is learnable: class k lights up a bar at a k-dependent place."""
    images = rng.integers(0, 60, size=(len(labels), size, size))
    for i, k in enumerate(labels):
        row = 2 + int(k) * 2
        images[i, row : row + 3, 4:24] = 255
    return images


def write_mnist(
    root: Path, dataset: str = "MNIST", n_train: int = 600, n_test: int = 200, seed: int = 0
) -> Path:
    """Create ``root/<dataset>/raw/`` with train and test IDX files; returns ``root``."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / dataset / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for train, n in ((True, n_train), (False, n_test)):
        labels = rng.integers(0, 10, size=n)
        images_name, labels_name = FILES[train]
        write_idx_images(raw / images_name, make_images(labels, rng))
        write_idx_labels(raw / labels_name, labels)
    return Path(root)
