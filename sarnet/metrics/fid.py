"""FID on the 10 logits of TF-slim's LeNet, the architecture of the thesis' feature network.

The thesis scored images with tfgan's `mnist_frechet_distance`: the 10 logits of TF-GAN's pretrained MNIST eval
classifier, images mapped to [-1, 1]. That network cannot be downloaded here. Its frozen graph names its tensors
conv1, pool1, conv2, pool2, fc3, dropout3, fc4: TF-slim's LeNet, rebuilt below and trained with slim's public
MNIST recipe (train_lenet_on_mnist.sh). The MNIST and FashionMNIST weights ship with the package
(sarnet/metrics/weights/, sha256 pinned below; `sarnet train-classifier --dataset <name> --threads 1` re-trains
them); a dataset without shipped weights would train the same network on first use and cache it under
<root>/classifiers/. The anchors: docs/results/fid.md (MNIST), docs/results/fashion_mnist.md (FashionMNIST).
"""

import hashlib
import io
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from sarnet.data.datamodules import load_split, raw_split
from sarnet.data.sources import FOLDERS, DataError
from sarnet.fields import REAL_SETS
from sarnet.io import atomic_write, zip_crc_error
from sarnet.progress import Progress, say
from sarnet.settings import DTYPES

# slim's train_lenet_on_mnist.sh: plain SGD, constant lr 0.01, 20,000 steps of batch 50, no weight decay; dropout
# (keep 0.5) before fc4 in training. The shipped weights are the 10,000-step, init-seed-1 variant: of the variants
# tried, the thesis' two blur anchors picked it (docs/results/fid.md has them all).
RECIPE = {"steps": 10000, "batch_size": 50, "lr": 0.01, "dropout": True, "seed": 1}
WEIGHTS_DIR = Path(__file__).parent / "weights"
# dataset -> sha256 of WEIGHTS_DIR / f"lenet_{dataset}.pt" (`sarnet train-classifier --dataset <dataset>
# --threads 1` re-makes it; another thread count or CPU changes float rounding, so the bits, not the FIDs).
# FashionMNIST's: the same recipe, test accuracy 0.8907 (MNIST's 0.9873).
SHIPPED_SHA256 = {"mnist": "a8f4106c7f9bf060daed2b61ba10534df196796e8eca726e35ff4fc56bd2260a",
                  "fashion_mnist": "eac572c678b2582b1e2a86555f01fc40746e79b2257c593b12c5d9e436fb26b6"}
# Resampled real images per step of a set (their indices and features: ~90 MB). One draw stream either way: the
# CPU generator's randint gives the same indices in chunks as at once, so an n_gen below this sums as before.
REAL_CHUNK = 2**20


class ClassifierCacheError(DataError):
    """A feature network file that is missing, damaged or made from other data: one line, like the data's."""


# -----------------------------------------------------------------------------
# data (torchvision raw layout under `root`, prepared by `make data`)

def dataset_checksum(dataset, root="data"):
    """sha256 of the uint8 train+test images and labels: what the cached classifier was trained/tested on."""
    h = hashlib.sha256()
    for split in ("train", "test"):
        x, y = raw_split(root, dataset, split)
        h.update(x.contiguous().numpy().tobytes())
        h.update(y.to(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def to_float(x):
    """uint8 [N,28,28] / [N,1,28,28] or float in [0,1] -> float32 [N,1,28,28] in [0,1]."""
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    return x.unsqueeze(1) if x.dim() == 3 else x


# -----------------------------------------------------------------------------
# feature network

class LeNet(nn.Module):
    """TF-slim's LeNet: conv1 32x5x5 SAME + ReLU, pool1 2x2, conv2 64x5x5 SAME + ReLU, pool2 2x2, fc3 1024 + ReLU,
    dropout3 (training only), fc4 10 logits. Input [N,1,28,28] on the network's own scale, [-1, 1]."""
    num_features = 10
    arch = "slim-lenet-v1"  # bump when the layers change, so stale caches are refused

    def __init__(self, dropout=0.5):
        super().__init__()
        self.dropout = dropout
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc3 = nn.Linear(64 * 7 * 7, 1024)
        self.fc4 = nn.Linear(1024, 10)
        for m in self.children():  # slim's lenet_arg_scope: truncated normal (2 sigma), sigma 0.1; zero biases
            nn.init.trunc_normal_(m.weight, std=0.1, a=-0.2, b=0.2)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        # pool, then ReLU: the same values as slim's ReLU-then-pool (both are monotone), on 4x fewer elements
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc3(x.flatten(1)))
        return self.fc4(F.dropout(x, self.dropout, self.training))


@torch.no_grad()
def accuracy(net, x, y, batch_size=1000):
    """Test accuracy of `net` (eval mode) on uint8 images x and labels y."""
    net.eval()
    correct = sum((net(to_float(x[i:i + batch_size]) * 2 - 1).argmax(1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def train_lenet(dataset, root="data", steps=RECIPE["steps"], batch_size=RECIPE["batch_size"], lr=RECIPE["lr"],
                dropout=RECIPE["dropout"], seed=RECIPE["seed"], snapshots=(), progress=True):
    """slim's recipe on the full 60k train split; yields (step, net in eval mode, meta) after `steps` and at every
    step in `snapshots` (with a constant learning rate, the 10k-step snapshot of a 40k-step run IS the 10k run)."""
    t0 = time.time()
    xtr, ytr = raw_split(root, dataset, "train")
    xte, yte = raw_split(root, dataset, "test")
    xtr = (xtr.float() - 128) / 128  # slim's lenet preprocessing
    with torch.random.fork_rng():  # seeded init without disturbing the caller's global RNG (auto-train case)
        torch.manual_seed(seed)
        net = LeNet(0.5 if dropout else 0.0)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    checksum, stops = dataset_checksum(dataset, root), sorted({*snapshots, steps})
    order, step, loss_avg = torch.empty(0, dtype=torch.long), 0, None
    bar = Progress(steps, f"LeNet {dataset}", unit="steps", every=15, enabled=progress)
    while step < steps:
        if len(order) < batch_size:  # a fresh shuffle per epoch; the remainder starts the next epoch
            order = torch.cat([order, torch.randperm(len(xtr), generator=g)])
        idx, order = order[:batch_size], order[batch_size:]
        net.train()
        with torch.random.fork_rng():
            torch.manual_seed(seed * 1_000_003 + step)  # dropout masks: a function of (seed, step) alone
            loss = F.cross_entropy(net(xtr[idx].unsqueeze(1)), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_avg = loss.item() if loss_avg is None else 0.99 * loss_avg + 0.01 * loss.item()
        bar.update(1)
        if step in stops:
            meta = {"dataset": dataset, "checksum": checksum, "test_acc": accuracy(net, xte, yte), "arch": LeNet.arch,
                    "steps": step, "batch_size": batch_size, "lr": lr, "dropout": dropout, "seed": seed,
                    "torch": str(torch.__version__), "train_seconds": round(time.time() - t0, 1)}
            bar.note(f"LeNet {dataset}: step {step}/{steps}, loss {loss_avg:.4f}, test accuracy "
                     f"{meta['test_acc']:.4f}")
            yield step, net, meta
    bar.close()


def save_classifier(net, meta, path, dtype=torch.float16):
    """Weights (fp16 by default: half the bytes; the calibration checks the anchors do not move) + meta, written
    atomically; returns the file's sha256."""
    state = {k: v.to(dtype) for k, v in net.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"meta": meta, "state_dict": state}, buf)
    atomic_write(path, buf.getvalue())  # a crash mid-write never leaves a half-written file behind
    return hashlib.sha256(buf.getvalue()).hexdigest()


def train_classifier(dataset, root="data", path=None, progress=True, **recipe):
    """Train with RECIPE (overridable) and save to `path` (default: the cache); returns (path, meta)."""
    assert dataset in FOLDERS, f"unknown dataset {dataset!r}, expected one of {list(FOLDERS)}"
    path = Path(path or cache_path(dataset, root))
    if progress:
        say(f"Training the FID feature network (LeNet) for {dataset} -> {path} (once; a few minutes)")
    *_, (_, net, meta) = train_lenet(dataset, root, progress=progress, **recipe)
    meta["sha256"] = save_classifier(net, meta, path)
    return path, meta


def cache_path(dataset, root="data"):
    return Path(root) / "classifiers" / f"lenet_{dataset}.pt"


def classifier_path(dataset, root="data"):
    """The shipped weights where the package has them, else the per-data-root cache."""
    return WEIGHTS_DIR / f"lenet_{dataset}.pt" if dataset in SHIPPED_SHA256 else cache_path(dataset, root)


def read_lenet(path, sha256=None, fix="re-train it: sarnet train-classifier"):
    """A saved LeNet (eval, no grad, float32) with its meta; refused in one line if damaged or not `sha256`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if sha256 and digest != sha256:
            raise ValueError(f"sha256 {digest[:12]}... is not the pinned {sha256[:12]}...")
        damage = zip_crc_error(path)  # a flipped bit would otherwise give a silently wrong FID
        if damage:
            raise ValueError(damage)
        ckpt = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        if "meta" not in ckpt:  # a sarnet checkpoint, say
            raise ValueError("not a feature network file: it has no 'meta' (sarnet train-classifier writes one)")
        meta = ckpt["meta"]
        if meta.get("arch") != LeNet.arch:
            raise ValueError(f"stale: arch {meta.get('arch')} != {LeNet.arch}")
        net = LeNet()
        net.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    except Exception as e:  # missing, tampered, truncated zip, garbage bytes, wrong layout...
        detail = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        raise ClassifierCacheError(f"FID feature network {path} is refused ({type(e).__name__}: {detail}); "
                                   f"{fix}") from None
    net.meta = {**meta, "sha256": digest}
    return net.requires_grad_(False).eval()


def load_classifier(dataset, root="data", train_if_missing=True):
    """The dataset's frozen LeNet: shipped weights checked against their pinned sha256, or a cache checked against
    the data it was trained on (trained here on first use, announced on stderr)."""
    path, shipped = classifier_path(dataset, root), dataset in SHIPPED_SHA256
    fix = (f"restore it (git checkout {path}) or re-train it: sarnet train-classifier --dataset {dataset}"
           if shipped else f"delete it and run sarnet train-classifier --dataset {dataset} --root {root}")
    if not path.exists() and not shipped and train_if_missing:
        train_classifier(dataset, root)
    net = read_lenet(path, SHIPPED_SHA256.get(dataset), fix)
    if not shipped and net.meta.get("checksum") != dataset_checksum(dataset, root):
        raise ClassifierCacheError(f"FID feature network {path} was trained on other data (dataset checksum "
                                   f"{str(net.meta.get('checksum'))[:12]}); {fix}")
    return net


# -----------------------------------------------------------------------------
# FID

class FIDFeatures(nn.Module):
    """What torchmetrics sees: [0,1] images mapped to [-1, 1] as the thesis fed its classifier, logits in float64.
    torchmetrics accumulates in float64 but casts its result back to the features' dtype; float64 features keep
    the FID in float64. Pinned to eval mode: torchmetrics makes this a child module, so a LightningModule's
    .train() would otherwise switch the LeNet's dropout on."""

    def __init__(self, net, dtype=None):
        super().__init__()
        self.net, self.dtype = net, dtype  # dtype: None (float32) or torch.bfloat16 (fid.dtype): autocast's
        self.num_features = net.num_features

    def forward(self, x):
        x = (x - 0.5) * 2
        if x.dim() == 4:  # images (tests feed vectors to stand-in nets): channels-last, as make_fid's convs
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return self.net(x).double()

    def train(self, mode=True):
        return super().train(False)


def make_fid(net, reset_real_features=False, dtype=None):
    """sync_on_compute=False: one process scores every image of the protocol (rank 0 of a DDP run, whose other
    ranks have nothing to add); torchmetrics would otherwise wait in compute() for ranks that never come.
    Channels-last convolutions and pooling: 2.2x faster features on CPU in float32, 2.7x in bf16 (measured on 500
    images; NCHW pooling alone was two thirds of a bf16 pass); the same values up to float rounding (~1e-5 of a
    logit)."""
    net.requires_grad_(False).eval().to(memory_format=torch.channels_last)
    device = next(net.parameters(), torch.empty(0)).device
    return FrechetInceptionDistance(feature=FIDFeatures(net, dtype), reset_real_features=reset_real_features,
                                    sync_on_compute=False).to(device)


def _update(fid, images, real, batch_size=500):
    device = fid.real_features_sum.device
    for i in range(0, len(images), batch_size):
        fid.update(to_float(images[i:i + batch_size]).to(device), real=real)


@torch.no_grad()
def add_real_features(fid, features):
    """What FrechetInceptionDistance.update(images, real=True) does once it has the images' features (float64)."""
    fid.real_features_sum += features.sum(dim=0)
    fid.real_features_cov_sum += features.t().mm(features)
    fid.real_features_num_samples += features.shape[0]


def fid_between(net, real, fake, batch_size=500):
    """One FID between two image sets (uint8 or [0,1] float), as a Python float (>= 0)."""
    fid = make_fid(net)
    _update(fid, real, True, batch_size)
    _update(fid, fake, False, batch_size)
    return max(fid.compute().item(), 0.0)  # identical sets can give -1e-16


class FIDEvaluator:
    """The thesis protocol (docs/reference.md §6.2; its values: conf/fid/default.yaml): n_sets times, FID of
    n_gen generated images vs a real set.

    real_set='test_resampled': real_images is the class' test pool; each set draws n_gen images from it WITH
        replacement (892 test fives for 10k real images, as the reference did). The real set then changes every
        repetition, so its statistics are recomputed per set.
    real_set='train' / 'test': real_images is used as is; its statistics are computed once, here. Note that train
        and test fives differ measurably in classifier features (MNIST-5 train vs test-resampled ~1.1 at 10k vs
        10k, noise floor ~0.09), so FIDs against 'train' and against the test sets are not interchangeable.

    Deliberately NOT an nn.Module: held as a plain attribute of a LightningModule (or created in a callback), the
    frozen classifier inside never reaches the module's parameters(), optimizer, state_dict or checkpoints.
    """

    def __init__(self, classifier, real_images, real_set, n_gen, n_sets, seed, batch_size=500, device=None,
                 dtype="float32"):
        if real_set not in REAL_SETS:
            raise ValueError(f"real_set={real_set!r} must be one of {REAL_SETS}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} must be one of {DTYPES} (the features' compute dtype)")
        for name, value, low in (("n_gen", n_gen, 2), ("n_sets", n_sets, 1), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not hasattr(value, "__index__") or value < low:  # n_gen: two images a side
                raise ValueError(f"{name}={value!r} must be an int >= {low}")
        if not isinstance(classifier, nn.Module) or not hasattr(classifier, "num_features"):
            raise TypeError(f"classifier: expected the feature network (an nn.Module with num_features: "
                            f"load_classifier(dataset, root)), got {type(classifier).__name__}")
        if not isinstance(real_images, torch.Tensor) or real_images.shape[1:] not in ((28, 28), (1, 28, 28)) or \
                len(real_images) < 2:  # uint8 (N, 28, 28) as the IDX files hold them, or float (N, 1, 28, 28)
            got = tuple(real_images.shape) if isinstance(real_images, torch.Tensor) else type(real_images).__name__
            raise ValueError(f"real_images: expected a tensor of N >= 2 images, (N, 1, 28, 28) or (N, 28, 28), got "
                             f"{got}")
        self.real_images, self.real_set = real_images, real_set
        self.n_gen, self.n_sets, self.seed, self.batch_size = n_gen, n_sets, seed, batch_size
        self.features = getattr(classifier, "meta", {})  # which feature network scored: recorded with every FID
        self.resample, self.dtype = real_set == "test_resampled", dtype
        self.fid = make_fid(classifier.to(device) if device else classifier, reset_real_features=self.resample,
                            dtype=torch.bfloat16 if dtype == "bfloat16" else None)  # real and generated alike
        self.device = self.fid.real_features_sum.device
        if self.resample:  # each set draws from the same few real images: their features once, then indexed
            self.real_features = torch.cat([self.fid.inception(to_float(real_images[i:i + batch_size]).to(self.device))
                                            for i in range(0, len(real_images), batch_size)]).double()
        else:
            _update(self.fid, real_images, True, batch_size)

    @classmethod
    def from_dataset(cls, dataset, classes, real_set, n_gen, n_sets, seed, root="data", **kw):
        """Evaluator for images of `classes` (e.g. [5]; None = all), classifier loaded (or trained) from cache."""
        x, _ = load_split(root, dataset, "train" if real_set == "train" else "test", classes)
        return cls(load_classifier(dataset, root), x, real_set, n_gen, n_sets, seed, **kw)

    def protocol(self) -> dict:
        """Everything an FID value depends on besides the generator: results.json records it, tables group by it."""
        return {"features": self.features.get("arch"), "features_sha256": self.features.get("sha256"),
                "features_dataset": self.features.get("dataset"), "n_gen": self.n_gen, "n_sets": self.n_sets,
                "real_set": self.real_set, "seed": self.seed, "dtype": self.dtype}

    def evaluate(self, generate_fn, progress=None):
        """generate_fn(n, generator) -> float [n,1,28,28] in [0,1], called with n <= batch_size; progress(line), if
        given, hears of every set as it is scored.
        Returns dict(mean, std (population, ddof 0), values) of Python floats."""
        if not callable(generate_fn):
            raise TypeError(f"generate_fn: expected a function (n, generator) -> images, got "
                            f"{type(generate_fn).__name__}")
        # two streams: the real draws don't depend on how much randomness a model consumes, so different models
        # are scored against the same real sets (common random numbers -> sharper comparisons)
        g_gen = torch.Generator().manual_seed(self.seed)
        g_real = torch.Generator().manual_seed(self.seed + 1)
        values, bar = [], Progress(self.n_sets * self.n_gen, "FID", enabled=progress is not None)
        for k in range(self.n_sets):
            self.fid.reset()  # keeps the real statistics unless resampling
            for i in range(0, self.n_gen if self.resample else 0, REAL_CHUNK):  # memory bounded for any n_gen
                idx = torch.randint(len(self.real_images), (min(REAL_CHUNK, self.n_gen - i),), generator=g_real)
                add_real_features(self.fid, self.real_features[idx.to(self.device)])
            for i in range(0, self.n_gen, self.batch_size):
                n = min(self.batch_size, self.n_gen - i)
                with torch.no_grad():
                    x = generate_fn(n, g_gen)
                if not isinstance(x, torch.Tensor) or x.shape != (n, 1, 28, 28) or not x.is_floating_point():
                    got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
                    raise ValueError(f"generate_fn({n}, generator) returned {got}: expected a float tensor of shape "
                                     f"({n}, 1, 28, 28) in [0, 1]")
                if not (x.min() >= 0 and x.max() <= 1):  # also catches NaN
                    raise ValueError(f"generated images must be in [0, 1], got [{x.min()}, {x.max()}]")
                self.fid.update(x.float().to(self.device), real=False)
                bar.update(n)
            values.append(max(self.fid.compute().item(), 0.0))
            if progress:
                bar.note(f"FID set {k + 1}/{self.n_sets}: {values[-1]:.4f}", progress)
        bar.close()
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return {"mean": mean, "std": std, "values": values}
