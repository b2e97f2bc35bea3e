"""MNIST-format datasets served as preprocessed tensors, with a seeded split and batch order.

The images are read through torchvision's own dataset classes, then resized and
normalised once for the whole split. Batches are cut from those tensors by a
sampler whose order depends only on (seed, epoch), so every arm of a comparison
sees the same validation split and, for the same seed, the same batches.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF


class DataError(RuntimeError):
    """The dataset is missing or unreadable; the message says where and what to do."""


def dataset_class(name: str) -> type:
    """A torchvision dataset class by name (``MNIST``) or a dotted path to one."""
    if "." in name:
        import importlib

        module, _, attr = name.rpartition(".")
        return getattr(importlib.import_module(module), attr)
    cls = getattr(torchvision.datasets, name, None)
    if cls is None:
        raise DataError(f"torchvision.datasets has no dataset called '{name}'")
    return cls


def required_files(cls: type, root: str | Path) -> tuple[Path, list[str]]:
    """The raw folder a torchvision MNIST-format class reads and the files it needs there."""
    folder = Path(root) / cls.__name__ / "raw"
    names = [Path(url).name.removesuffix(".gz") for url, _ in getattr(cls, "resources", [])]
    return folder, names


def load_split(
    name: str, root: str | Path, train: bool, download: bool, extra: dict[str, Any] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8, N x H x W) and labels of one official split."""
    cls = dataset_class(name)
    folder, names = required_files(cls, root)
    # A failed download must not leave empty folders behind.
    created = [p for p in (folder, folder.parent, Path(root)) if not p.exists()]
    try:
        ds = cls(str(root), train=train, download=download, **(extra or {}))
    except (RuntimeError, OSError, ValueError) as err:
        _remove_empty(created)
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            hint = "; download failed (no network?)" if download else ""
            raise DataError(
                f"{name} not found in {folder} "
                f"(needs {', '.join(names) or 'its raw files'}){hint}. "
                f"Put the files there, or point data.root (or BN_COMPARE_DATA) at a folder "
                f"holding {cls.__name__}/raw/"
            ) from None
        problem = next(filter(None, (idx_problem(folder / n) for n in names)), None)
        raise DataError(
            f"{problem or f'{name} files in {folder} could not be read ({err})'}: delete it and "
            "download or copy the dataset again"
        ) from None
    data, targets = ds.data, ds.targets
    if not isinstance(data, torch.Tensor):
        data = torch.as_tensor(data)
    return data, torch.as_tensor(targets, dtype=torch.long)


def idx_problem(path: Path) -> str | None:
    """What is wrong with an IDX file (truncated, not IDX), or None if its header and size agree."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        return f"{path} cannot be read ({err.strerror})"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or not 1 <= raw[3] <= 4:
        return f"{path} is not an IDX file"
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        return f"{path} is truncated (its header is incomplete)"
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    item = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(raw[2])
    if item is None:
        return f"{path} is not an IDX file (unknown type code {raw[2]:#x})"
    expected = 4 + 4 * ndim + item * math.prod(dims)
    if len(raw) != expected:
        return f"{path} is truncated or corrupt ({len(raw):,} bytes, its header says {expected:,})"
    return None


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # innermost first
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def preprocess(
    images: torch.Tensor,
    shape: Sequence[int],
    normalize: dict[str, float] | None = None,
) -> torch.Tensor:
    """uint8 N x H x W images to float N x C x S x S in [0, 1], then normalised.

    Resizing happens on the uint8 tensor with antialiasing, which is what
    ``Resize`` followed by ``ToTensor`` does to each image in the tutorials,
    done once for the whole split instead of once per image per epoch.
    """
    channels, height, width = shape
    x = images.unsqueeze(1) if images.dim() == 3 else images
    if tuple(x.shape[-2:]) != (height, width):
        x = TF.resize(x, [height, width], antialias=True)
    x = x.float().div_(255)
    if normalize:
        x = x.sub_(float(normalize["mean"])).div_(float(normalize["std"]))
    if x.shape[1] != channels:
        if x.shape[1] != 1:
            raise DataError(f"the data has {x.shape[1]} channels but the model needs {channels}")
        # A view, not a copy: grayscale fed to a 3-channel model costs no memory.
        x = x.expand(-1, channels, -1, -1)
    return x


class EpochBatchSampler:
    """Yields index batches; the order depends only on (seed, epoch) when shuffling.

    Lightning calls ``set_epoch`` before every epoch, and a resumed run gets the
    same order as an uninterrupted one. ``rank``/``world_size`` shard each
    batch order for data-parallel runs.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_source: Callable[[], int] | None = None,
    ):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        # Where the epoch comes from when iteration starts: the trainer's own epoch
        # counter is right after a resume, where the epoch given to set_epoch is not.
        self.epoch_source = epoch_source
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        if not self.shuffle:
            idx = torch.arange(self.n)
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = torch.randperm(self.n, generator=g)
        return idx[self.rank :: self.world_size]

    def epoch_order(self) -> torch.Tensor:
        """The order of the epoch that is starting (all of it, before splitting into batches)."""
        if self.epoch_source is not None:
            self.epoch = self.epoch_source()
        return self.order()

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.epoch_order().split(self.batch_size))

    def __len__(self) -> int:
        return math.ceil(len(range(self.rank, self.n, self.world_size)) / self.batch_size)


class TensorBatches(torch.utils.data.Dataset):
    """Index a whole batch at once: one gather per batch instead of one item at a time."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(self.x.device, non_blocking=True)
        return self.x[idx], self.y[idx]

    def __len__(self) -> int:
        return len(self.y)


class DeviceBatches:
    """Batches cut from tensors already on the training device, without a DataLoader.

    The epoch's order comes from the same ``EpochBatchSampler`` as the DataLoader
    path (so the batches are identical for the same seed), computed on the CPU and
    sent to the device once per epoch; each batch is then one gather on the device,
    with no per-batch host work or transfer. ``sampler`` is where Lightning finds
    ``set_epoch``.
    """

    batch_sampler = None  # what Lightning inspects on a DataLoader

    def __init__(self, x: torch.Tensor, y: torch.Tensor, sampler: EpochBatchSampler):
        self.x, self.y, self.sampler = x, y, sampler

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.sampler.epoch_order().to(self.x.device)
        for idx in order.split(self.sampler.batch_size):
            yield self.x[idx], self.y[idx]

    def __len__(self) -> int:
        return len(self.sampler)


class MNISTDataModule(L.LightningDataModule):
    """Train/val/test loaders for any MNIST-format torchvision dataset."""

    def __init__(
        self,
        dataset: str = "MNIST",
        root: str = "data",
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        input_shape: Sequence[int] = (1, 28, 28),
        normalize: dict[str, float] | None = None,
        seed: int = 0,
        shuffle: bool = True,
        download: bool = True,
        on_device: bool = False,
        num_workers: int = 0,
        dataset_args: dict[str, Any] | None = None,
        limit_train: int | None = None,
    ):
        super().__init__()
        self.dataset, self.root = dataset, root
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.input_shape, self.normalize = val_size, tuple(input_shape), normalize
        self.seed, self.shuffle, self.download = seed, shuffle, download
        self.on_device, self.num_workers = on_device, num_workers
        self.dataset_args = dict(dataset_args or {})
        self.limit_train = limit_train
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.rank, self.world_size = 0, 1

    def prepare_data(self) -> None:
        if not self.download:
            return  # nothing to fetch; setup() reads the files and says what is missing
        for train in (True, False):
            load_split(self.dataset, self.root, train, self.download, self.dataset_args)

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        images, labels = load_split(self.dataset, self.root, True, False, self.dataset_args)
        if not 0 < self.val_size < len(labels):
            raise DataError(
                f"data.val_size must be between 1 and {len(labels) - 1} for {self.dataset}, "
                f"got {self.val_size}"
            )
        # The split depends on the seed alone, so every arm of a comparison shares it.
        split = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = split[: self.val_size], split[self.val_size :]
        if self.limit_train:
            train_idx = train_idx[: self.limit_train]
        # Split the uint8 images first, then preprocess each part (per-image operations,
        # so the result is the same): the float copy of the whole split never exists,
        # which keeps peak memory a few hundred MB lower.
        self.tensors = {
            "train": (self._prepare(images[train_idx]), labels[train_idx]),
            "val": (self._prepare(images[val_idx]), labels[val_idx]),
        }
        del images
        test_images, test_labels = load_split(
            self.dataset, self.root, False, False, self.dataset_args
        )
        self.tensors["test"] = (self._prepare(test_images), test_labels)
        if self.trainer is not None:
            self.rank = self.trainer.global_rank
            self.world_size = self.trainer.world_size
            if self.on_device:
                device = self.trainer.strategy.root_device
                self.tensors = {
                    k: (x.to(device), y.to(device)) for k, (x, y) in self.tensors.items()
                }

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return preprocess(images, self.input_shape, self.normalize)

    def split_size(self, split: str) -> int:
        return len(self.tensors[split][1])

    def loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader | DeviceBatches:
        x, y = self.tensors[split]
        sampler = EpochBatchSampler(
            len(y),
            batch_size,
            shuffle,
            self.seed,
            self.rank,
            self.world_size,
            epoch_source=self._current_epoch if self.trainer is not None else None,
        )
        if self.on_device:
            return DeviceBatches(x, y, sampler)
        return DataLoader(
            TensorBatches(x, y),
            batch_size=None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _current_epoch(self) -> int:
        # Epochs fully trained so far: unlike current_epoch, already right when a run resumed
        # from an end-of-epoch checkpoint starts its next epoch.
        return self.trainer.fit_loop.epoch_progress.current.processed

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        return self.loader("train", self.batch_size, self.shuffle)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self.loader("val", self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self.loader("test", self.eval_batch_size, False)
