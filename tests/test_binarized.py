"""Binarized MNIST: one fixed evaluation binarization (pinned by sha256), dynamic training draws, static .amat files."""


import numpy as np
import pytest
import torch

from sarnet.data import DataError, MNISTDataModule
from sarnet.data.binarized import STATIC_FILES, TEST_SEED, fixed_bernoulli, read_amat, read_static, split_sha256
from tests.conftest import ROOT, fake_idx, needs_data

# sha256 of np.packbits of the binarized MNIST test split (10,000 x 784, original order, seed TEST_SEED = 0), and
# of its 892 fives. If this changes, every NLL measured before is on other images: do not update it lightly.
MNIST_TEST_SHA256 = "dc5c95f3b45ba721b3a5f0843c2f8c673891c7f52883e1391b0f206455311a0b"
MNIST5_TEST_SHA256 = "d84a053658b6f9ca7bdf2f81888e94de9020750d98b22db767e2cf1d72278ad8"


def test_fixed_bernoulli_is_exact_at_the_ends_and_unbiased():
    x = torch.tensor([0.0, 1.0]).repeat(1000)
    assert torch.equal(fixed_bernoulli(x, 0), x)  # v = 0 never fires, v = 255 always does
    grey = torch.full((200_000,), 77 / 255)
    mean = fixed_bernoulli(grey, 5).mean().item()
    assert abs(mean - 77 / 255) < 4 * (0.3 * 0.7 / 200_000) ** 0.5
    assert not torch.equal(fixed_bernoulli(grey, 5), fixed_bernoulli(grey, 6))
    torch.manual_seed(1)
    a = fixed_bernoulli(grey, TEST_SEED)
    torch.manual_seed(2)
    assert torch.equal(a, fixed_bernoulli(grey, TEST_SEED))  # the seed alone decides, not torch's random state


def test_dynamic_datamodule_evaluates_on_fixed_bits_and_trains_on_fresh_draws(tmp_path):
    root = fake_idx(tmp_path)
    dm = MNISTDataModule(root, binarize="dynamic", val_size=0, batch_size=1000)
    dm.setup()
    fives, grey = MNISTDataModule(root, classes=[5], binarize="dynamic"), MNISTDataModule(root)
    fives.setup(), grey.setup()
    assert set(dm.test_x.unique().tolist()) <= {0.0, 1.0} and dm.val_x is dm.test_x
    assert set(fives.val_x.unique().tolist()) <= {0.0, 1.0}  # a validation split carved from train, too
    assert torch.equal(fives.test_x, dm.test_x[dm.test_y == 5])  # binarized before the class filter
    assert abs(dm.test_x.mean() - grey.test_x.mean()) < 0.02
    torch.manual_seed(0)
    (a, _), (b, _) = next(iter(dm.train_dataloader())), next(iter(dm.train_dataloader()))
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)  # a fresh draw every epoch


@needs_data
def test_binarized_mnist_test_split_is_the_same_bits_on_every_machine():
    dm = MNISTDataModule(ROOT / "data", binarize="dynamic", val_size=0)
    dm.setup()
    assert dm.test_x.shape == (10000, 1, 28, 28)
    assert split_sha256(dm.test_x) == MNIST_TEST_SHA256
    assert split_sha256(dm.test_x[dm.test_y == 5]) == MNIST5_TEST_SHA256


def write_amat(folder, n=(5, 3, 4), corrupt=None):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for (split, name), count in zip(STATIC_FILES.items(), n):
        images[split] = rng.integers(0, 2, (count, 784))
        text = "\n".join(" ".join(map(str, row)) for row in images[split]) + "\n"
        if corrupt == split:
            text = text.replace("1", "2", 1)
        (folder / name).write_text(text)
    return images


def test_static_amat_files_are_read_exactly(tmp_path):
    images = write_amat(tmp_path / "bin")
    splits = read_static(tmp_path / "bin")
    for split, arr in images.items():
        assert torch.equal(splits[split].view(len(arr), -1), torch.from_numpy(arr).float())
    dm = MNISTDataModule(tmp_path, classes=None, binarize="static", static_dir=str(tmp_path / "bin"))
    dm.setup()
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (5, 3, 4) and (dm.test_y == -1).all()
    on_test = MNISTDataModule(tmp_path, binarize="static", val_size=0, static_dir=str(tmp_path / "bin"))
    on_test.setup()
    assert on_test.val_x is on_test.test_x


def test_static_dir_refusals_are_one_clear_line(tmp_path):
    with pytest.raises(DataError, match=r"data.static_dir='/nope' does not exist"):
        MNISTDataModule(tmp_path, binarize="static", static_dir="/nope")
    with pytest.raises(DataError, match=r"data.binarize=static and data.classes=null"):
        MNISTDataModule(tmp_path, binarize="dynamic", static_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"data.classes=null"):
        MNISTDataModule(tmp_path, classes=[5], binarize="static", static_dir=str(tmp_path))
    write_amat(tmp_path / "bad", corrupt="valid")
    with pytest.raises(DataError, match=r"binarized_mnist_valid.amat: byte \d+ is b'2'"):
        MNISTDataModule(tmp_path, binarize="static", static_dir=str(tmp_path / "bad")).setup()
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "x.amat").write_text("0 1 0\n")
    with pytest.raises(DataError, match=r"line 1 has 3 values; every line must hold 784"):
        read_amat(tmp_path / "short" / "x.amat")
    write_amat(tmp_path / "missing")
    (tmp_path / "missing" / STATIC_FILES["test"]).unlink()
    with pytest.raises(DataError, match=r"binarized_mnist_test.amat: missing"):
        read_static(tmp_path / "missing")
