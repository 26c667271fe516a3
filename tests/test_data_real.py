"""Checks on the real datasets that `make data` prepared under data/ (a few seconds in all)."""

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision

from sarnet.data import FashionMNISTDataModule, MNISTDataModule, load_split, sources

ROOT = Path(__file__).resolve().parents[1] / "data"


def need(folder, md5s):
    if not (ROOT / folder / "raw" / sources.MANIFEST).is_file():
        pytest.skip(f"{ROOT / folder} is not prepared: run `make data` first")
    assert sources.is_prepared(ROOT / folder / "raw", md5s), "files changed since `make data`: re-run it"


@pytest.fixture(scope="module")
def mnist():
    need("MNIST", sources.MNIST_MD5)
    return {split: load_split(ROOT, "mnist", split) for split in ("train", "test")}


@pytest.fixture(scope="module")
def fashion():
    need("FashionMNIST", sources.FASHION_MD5)
    return {split: load_split(ROOT, "fashion_mnist", split) for split in ("train", "test")}


def test_mnist_counts_order_and_stats(mnist):
    (x, y), (xt, yt) = mnist["train"], mnist["test"]
    assert (len(x), len(xt)) == (60000, 10000)
    assert ((y == 5).sum().item(), (yt == 5).sum().item()) == (5421, 892)
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert y[:5].tolist() == [5, 0, 4, 1, 9] and yt[:5].tolist() == [7, 2, 1, 0, 4]  # the original order
    assert (round(x.mean().item(), 4), round(x.std().item(), 4)) == (0.1307, 0.3081)
    pixels = sources.read_idx(ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte").tobytes()
    assert hashlib.sha256(pixels).hexdigest().startswith("741c988805d008ac")  # NOTES-environment.md §8


def test_fashion_counts_stats_and_datamodule(fashion):
    (x, y), (xt, yt) = fashion["train"], fashion["test"]
    assert (len(x), len(xt)) == (60000, 10000)
    assert torch.bincount(y).tolist() == [6000] * 10 and torch.bincount(yt).tolist() == [1000] * 10
    assert y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5] and yt[:5].tolist() == [9, 2, 1, 1, 6]
    assert (round(x.mean().item(), 4), round(x.std().item(), 4)) == (0.2860, 0.3530)
    dm = FashionMNISTDataModule(ROOT)
    dm.setup()
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (54000, 6000, 10000)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64


@pytest.mark.parametrize("cls", ["MNIST", "FashionMNIST"])
def test_torchvision_loads_the_layout(cls, mnist, fashion):
    train, test = (getattr(torchvision.datasets, cls)(str(ROOT), train=t, download=False) for t in (True, False))
    assert (len(train), len(test)) == (60000, 10000)
    ours = (mnist if cls == "MNIST" else fashion)["test"]
    assert torch.equal(test.data.float().div(255), ours[0][:, 0]) and torch.equal(test.targets, ours[1])


def test_mnist5_datamodule_reference_protocol(mnist):
    dm = MNISTDataModule(ROOT, classes=[5], val_size=0)  # the reference: all 5,421 for training, test = val
    dm.setup()
    assert (len(dm.train_x), len(dm.test_x)) == (5421, 892) and dm.val_x is dm.test_x
    sizes = [len(x) for x, _ in dm.train_dataloader()]
    assert len(sizes) == 85 and sizes[-1] == 45  # 85 steps per epoch, the last of 45 images
    carved = MNISTDataModule(ROOT, classes=[5])  # default val_size=0.1
    carved.setup()
    assert (len(carved.train_x), len(carved.val_x)) == (4879, 542)
