"""MNIST-classifier FID (proxy) — a stand-in for tfgan's `mnist_frechet_distance` (SPEC §6).

The reference used a pretrained TF-Hub MNIST classifier's 10-d logits as FID features. That network can't be
fetched offline, so we train our own small CNN per dataset, cache it under data/classifiers/, and plug it into
torchmetrics' FrechetInceptionDistance. Values are comparable across our runs, not with the thesis' numbers.
"""

import hashlib
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from sarnet.checkpoint import zip_crc_error
from sarnet.data.datamodules import raw_split

DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
EPOCHS = {"mnist": 6, "fashion_mnist": 10}  # ~99.3% / ~92% test accuracy (targets 99.0 / 90) in 1-2 min


class ClassifierCacheError(RuntimeError):
    pass


# -----------------------------------------------------------------------------
# data (torchvision raw layout under `root`, prepared by `make data`)

def load_split(dataset, root="data", train=True):
    """uint8 images [N,28,28] and int64 labels [N] of one split (a DataError says to run `make data` if absent)."""
    return raw_split(root, dataset, "train" if train else "test")


def dataset_checksum(dataset, root="data"):
    """sha256 of the uint8 train+test images and labels: what the cached classifier was trained/tested on."""
    h = hashlib.sha256()
    for train in (True, False):
        x, y = load_split(dataset, root, train)
        h.update(x.contiguous().numpy().tobytes())
        h.update(y.to(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def to_float(x):
    """uint8 [N,28,28] / [N,1,28,28] or float in [0,1] -> float32 [N,1,28,28] in [0,1]."""
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    return x.unsqueeze(1) if x.dim() == 3 else x


# -----------------------------------------------------------------------------
# feature classifier

class Classifier(nn.Module):
    """Small LeNet-style CNN; its 10 logits are the FID features (like the TF-GAN MNIST classifier)."""
    num_features = 10  # torchmetrics reads this instead of probing with a (3,299,299) uint8 dummy image
    arch = "cnn16-32-fc128-v1"  # bump when the layers change, so stale caches are refused

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):  # x: float [N,1,28,28] in [0,1]
        x = (x - 0.5) * 2  # the reference fed the classifier [-1, 1] images
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))

    def train(self, mode=True):
        # no BatchNorm/Dropout, but pin eval mode anyway: torchmetrics makes this a child module, so a
        # LightningModule's .train() would otherwise flip it
        return super().train(False)


@torch.no_grad()
def accuracy(net, x, y, batch_size=1000):
    correct = sum((net(to_float(x[i:i + batch_size])).argmax(1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def cache_path(dataset, root="data"):
    return Path(root) / "classifiers" / f"{dataset}.pt"


def train_classifier(dataset, root="data", seed=0, epochs=None, batch_size=128, lr=2e-3, verbose=True):
    """Train on the full 60k train split, test on the 10k test split, cache atomically; returns the path."""
    assert dataset in DATASETS, f"unknown dataset {dataset!r}, expected one of {list(DATASETS)}"
    epochs = epochs or EPOCHS[dataset]
    t0 = time.time()
    xtr, ytr = load_split(dataset, root, True)
    xte, yte = load_split(dataset, root, False)
    xtr = to_float(xtr)
    with torch.random.fork_rng():  # seeded init without disturbing the caller's global RNG (auto-train case)
        torch.manual_seed(seed)
        net = Classifier()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, fused=True)  # the for-loop Adam is slow on CPU
    steps, step = epochs * math.ceil(len(xtr) / batch_size), 0
    for epoch in range(epochs):
        for idx in torch.randperm(len(xtr), generator=g).split(batch_size):
            for group in opt.param_groups:  # cosine decay to 0: a few epochs then land on a good optimum
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            loss = F.cross_entropy(net(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if verbose:
            # progress on stderr: stdout belongs to the caller's results (scripts/fid.py prints JSON lines there)
            print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}, {time.time() - t0:.1f}s", file=sys.stderr)
    acc = accuracy(net, xte, yte)
    meta = {"dataset": dataset, "checksum": dataset_checksum(dataset, root), "test_acc": acc, "seed": seed,
            "epochs": epochs, "torch": str(torch.__version__), "arch": Classifier.arch,
            "train_seconds": time.time() - t0}
    path = cache_path(dataset, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save({"meta": meta, "state_dict": net.state_dict()}, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-write never leaves a half-written cache behind
    if verbose:
        print(f"{dataset}: test accuracy {acc:.4f} in {meta['train_seconds']:.1f}s -> {path}", file=sys.stderr)
    return path


def load_classifier(dataset, root="data", train_if_missing=True):
    """Frozen classifier (eval, no grad) from the cache, refusing caches built from other data or code."""
    path = cache_path(dataset, root)
    fix = f"delete it and run python scripts/train_classifier.py --dataset {dataset} --root {root}"
    if not path.exists():
        if not train_if_missing:
            raise FileNotFoundError(f"no FID classifier at {path}; run python scripts/train_classifier.py "
                                    f"--dataset {dataset} --root {root}")
        train_classifier(dataset, root)
    try:
        damage = zip_crc_error(path)  # a flipped bit would otherwise give a silently wrong FID
        if damage:
            raise ValueError(damage)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        meta = ckpt["meta"]
    except Exception as e:  # truncated zip, garbage bytes, wrong layout...
        raise ClassifierCacheError(f"FID classifier cache {path} is unreadable ({type(e).__name__}: "
                                   f"{str(e)[:100]}); {fix}") from e
    checksum = dataset_checksum(dataset, root)
    if meta.get("arch") != Classifier.arch or meta.get("checksum") != checksum:
        raise ClassifierCacheError(f"FID classifier cache {path} is stale (arch {meta.get('arch')} / dataset "
                                   f"checksum {str(meta.get('checksum'))[:12]} != {Classifier.arch} / "
                                   f"{checksum[:12]}); {fix}")
    net = Classifier()
    try:
        net.load_state_dict(ckpt["state_dict"])
    except Exception as e:
        raise ClassifierCacheError(f"FID classifier cache {path} has bad weights ({e}); {fix}") from e
    net.meta = meta
    return net.requires_grad_(False).eval()


# -----------------------------------------------------------------------------
# FID

class Float64Features(nn.Module):
    """torchmetrics accumulates in float64 but casts the result back to the features' dtype; emitting float64
    features keeps the returned FID in float64 too. The wrapped net itself stays float32."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.num_features = net.num_features

    def forward(self, x):
        return self.net(x).double()


def make_fid(net, reset_real_features=False):
    net.requires_grad_(False).eval()
    device = next(net.parameters(), torch.empty(0)).device
    return FrechetInceptionDistance(feature=Float64Features(net), reset_real_features=reset_real_features).to(device)


def _update(fid, images, real, batch_size=500):
    device = fid.real_features_sum.device
    for i in range(0, len(images), batch_size):
        fid.update(to_float(images[i:i + batch_size]).to(device), real=real)


def fid_between(net, real, fake, batch_size=500):
    """One FID between two image sets (uint8 or [0,1] float), as a Python float (>= 0)."""
    fid = make_fid(net)
    _update(fid, real, True, batch_size)
    _update(fid, fake, False, batch_size)
    return max(fid.compute().item(), 0.0)  # identical sets can give -1e-16


class FIDEvaluator:
    """The thesis protocol (SPEC §6.4): n_sets times, FID of n_gen generated images vs a real set.

    real_set='test_resampled': real_images is the class' test pool; each set draws n_gen images from it WITH
        replacement (892 test fives for 10k real images, as the reference did). The real set then changes every
        repetition, so its statistics are recomputed per set.
    real_set='train' / 'test': real_images is used as is; its statistics are computed once, here. Note that train
        and test fives differ measurably in classifier features (MNIST-5 train vs test-resampled ~1.1 at 10k vs
        10k, noise floor ~0.09), so FIDs against 'train' and against the test sets are not interchangeable.

    Deliberately NOT an nn.Module: held as a plain attribute of a LightningModule (or created in a callback), the
    frozen classifier inside never reaches the module's parameters(), optimizer, state_dict or checkpoints.
    """

    def __init__(self, classifier, real_images, real_set="test_resampled", n_gen=10000, n_sets=10, seed=2024,
                 batch_size=500, device=None):
        assert real_set in ("test_resampled", "train", "test"), real_set
        self.real_images, self.real_set = real_images, real_set
        self.n_gen, self.n_sets, self.seed, self.batch_size = n_gen, n_sets, seed, batch_size
        self.resample = real_set == "test_resampled"
        self.fid = make_fid(classifier.to(device) if device else classifier, reset_real_features=self.resample)
        self.device = self.fid.real_features_sum.device
        if not self.resample:
            _update(self.fid, real_images, True, batch_size)

    @classmethod
    def from_dataset(cls, dataset, classes=None, real_set="test_resampled", root="data", **kw):
        """Evaluator for images of `classes` (e.g. [5]; None = all), classifier loaded (or trained) from cache."""
        x, y = load_split(dataset, root, train=real_set == "train")
        if classes is not None:
            x = x[torch.isin(y, torch.as_tensor(list(classes)))]
        return cls(load_classifier(dataset, root), x, real_set, **kw)

    def evaluate(self, generate_fn):
        """generate_fn(n, generator) -> float [n,1,28,28] in [0,1], called with n <= batch_size.
        Returns dict(mean, std (population, ddof 0), values) of Python floats."""
        # two streams: the real draws don't depend on how much randomness a model consumes, so different models
        # are scored against the same real sets (common random numbers -> sharper comparisons)
        g_gen = torch.Generator().manual_seed(self.seed)
        g_real = torch.Generator().manual_seed(self.seed + 1)
        values = []
        for _ in range(self.n_sets):
            self.fid.reset()  # keeps the real statistics unless resampling
            if self.resample:
                idx = torch.randint(len(self.real_images), (self.n_gen,), generator=g_real)
                _update(self.fid, self.real_images[idx], True, self.batch_size)
            for i in range(0, self.n_gen, self.batch_size):
                n = min(self.batch_size, self.n_gen - i)
                with torch.no_grad():
                    x = generate_fn(n, g_gen)
                assert x.shape == (n, 1, 28, 28) and x.is_floating_point(), f"bad generated batch {x.shape} {x.dtype}"
                if not (x.min() >= 0 and x.max() <= 1):  # also catches NaN
                    raise ValueError(f"generated images must be in [0, 1], got [{x.min()}, {x.max()}]")
                self.fid.update(x.float().to(self.device), real=False)
            values.append(max(self.fid.compute().item(), 0.0))
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return {"mean": mean, "std": std, "values": values}
