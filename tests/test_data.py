"""The datamodule on test-written IDX files read by torchvision's real MNIST class."""

from __future__ import annotations

import pytest
import torch

from bn_compare.data import DataError, MNISTDataModule, load_split


def make_dm(root, **kwargs) -> MNISTDataModule:
    options = {"root": str(root), "val_size": 100, "batch_size": 32, "download": False}
    options.update(kwargs)
    dm = MNISTDataModule(**options)
    dm.setup("fit")
    return dm


def batches(loader, epoch: int = 0) -> list[torch.Tensor]:
    loader.sampler.set_epoch(epoch)
    return [y for _, y in loader]


def test_sizes_and_shapes(mnist_root):
    dm = make_dm(mnist_root, input_shape=(1, 32, 32))
    assert dm.split_size("train") == 500
    assert dm.split_size("val") == 100
    assert dm.split_size("test") == 200  # the official test split stays the test split
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 32, 32) and x.dtype == torch.float32 and y.shape == (32,)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert len(dm.train_dataloader()) == 16  # 500 / 32, last batch partial


def test_normalize_and_channels(mnist_root):
    dm = make_dm(mnist_root, input_shape=(3, 28, 28), normalize={"mean": 0.5, "std": 0.5})
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape[1:] == (3, 28, 28)
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < 0
    assert torch.equal(x[:, 0], x[:, 2])


def test_split_is_shared_by_both_arms_and_follows_the_seed(mnist_root):
    a, b = make_dm(mnist_root, seed=1), make_dm(mnist_root, seed=1, batch_size=64)
    assert torch.equal(a.tensors["val"][1], b.tensors["val"][1])
    assert torch.equal(a.tensors["val"][0], b.tensors["val"][0])
    c = make_dm(mnist_root, seed=2)
    assert not torch.equal(a.tensors["val"][0], c.tensors["val"][0])


def test_batch_order_depends_on_seed_and_epoch_only(mnist_root):
    first = batches(make_dm(mnist_root, seed=1).train_dataloader())
    again = batches(make_dm(mnist_root, seed=1).train_dataloader())
    assert all(torch.equal(p, q) for p, q in zip(first, again, strict=True))
    other_seed = batches(make_dm(mnist_root, seed=2).train_dataloader())
    assert not torch.equal(torch.cat(first), torch.cat(other_seed))
    next_epoch = batches(make_dm(mnist_root, seed=1).train_dataloader(), epoch=1)
    assert not torch.equal(torch.cat(first), torch.cat(next_epoch))
    # Every training image is seen exactly once per epoch.
    assert sorted(torch.cat(first).tolist()) == sorted(
        make_dm(mnist_root, seed=1).tensors["train"][1].tolist()
    )


def test_missing_data_names_the_path_and_files(tmp_path):
    with pytest.raises(DataError) as info:
        load_split("MNIST", tmp_path, train=True, download=False)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message


def test_fashion_mnist_through_config_only(tmp_path):
    from idx import write_mnist

    root = write_mnist(tmp_path, dataset="FashionMNIST", n_train=300, n_test=50)
    dm = make_dm(root, dataset="FashionMNIST")
    assert dm.split_size("train") == 200 and dm.split_size("test") == 50
