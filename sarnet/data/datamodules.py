"""MNIST / Fashion-MNIST DataModules that keep each whole split in memory as one tensor.

The datasets are tiny (60k x 784 bytes), so setup() reads the raw IDX files once and batches are served by
tensor indexing: per-item PIL transforms would cost more than the model's own step on CPU.
"""

import operator
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler

from sarnet.data import sources
from sarnet.data.binarized import VAL_SEED, binarized_test_split, fixed_bernoulli, read_static
from sarnet.data.sources import FOLDERS, LABELS, DataError, check_raw, read_idx

BINARIZE = ("none", "static", "dynamic")
QUANTIZE = (None, 2, 4)  # classes per pixel of the classification SarNET (docs/reference.md §3.1); None = grey


def raw_split(root, dataset, split):
    """-> (x uint8 (N,28,28), y int64 (N,)): one split exactly as stored (checked against its IDX header)."""
    if dataset not in FOLDERS or split not in ("train", "test"):
        raise DataError(f"unknown dataset {dataset!r} or split {split!r}: expected {sorted(FOLDERS)}, "
                        f"'train' or 'test'")
    raw = Path(root) / FOLDERS[dataset] / "raw"
    check_raw(raw)
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(raw / f"{prefix}-images-idx3-ubyte")
    y = read_idx(raw / f"{prefix}-labels-idx1-ubyte")
    if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{raw}: images {x.shape} and labels {y.shape} do not match; re-run `make data`")
    return torch.from_numpy(x), torch.from_numpy(y).long()


def load_split(root, dataset, split, classes=None):
    """-> (x float32 (N,1,28,28) in [0,1] = uint8/255, y int64 (N,)), keeping only `classes` (None = all)."""
    if classes is not None:
        try:  # any sequence of ints (a list, a ListConfig, numpy ints); never a bool, a string or one bare label
            labels = [operator.index(c) for c in classes if not isinstance(c, bool)]
        except TypeError:
            labels = []
        if not labels or len(labels) != len(classes) or not all(c in LABELS for c in labels):
            raise ValueError(f"classes={classes!r} must be None (all) or a list of labels {LABELS[0]}.."
                             f"{LABELS[-1]}, e.g. [5]")
    x, y = raw_split(root, dataset, split)
    if classes is not None:
        keep = torch.isin(y, torch.tensor(labels, dtype=torch.long))
        x, y = x[keep], y[keep]
    return x.unsqueeze(1).float().div_(255), y


def quantize(x: torch.Tensor, classes: int) -> torch.Tensor:
    """Grey images (N, 1, H, W) = uint8 / 255 -> one-hot float (N, classes, H, W) of the class
    floor(uint8 / (256 / classes)) (the reference's quantisation: equal bins of the 256 byte values)."""
    level = x.mul(255).round().long() * classes // 256  # exact integer floor of uint8 * classes / 256
    return (level == torch.arange(classes).view(1, -1, 1, 1)).float()


def real_images(root, dataset="mnist", classes=None, split="test"):
    """The real images of a split as float (N,1,28,28) in [0,1], e.g. the FID reference set."""
    return load_split(root, dataset, split, classes)[0]


class BatchTensors(Dataset):
    """A split held as tensors, read a whole batch at a time (__getitems__: one indexing per batch, no per-image
    collation). Evaluation batches carry the images' indices in the split (with_index): the VAEs' evaluation noise
    is drawn per image from them (sarnet.module.image_noise)."""

    def __init__(self, x, y, bernoulli=False, with_index=False):
        self.x, self.y, self.bernoulli, self.with_index = x, y, bernoulli, with_index

    def __len__(self):
        return len(self.x)

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.x[idx]
        batch = (torch.bernoulli(x) if self.bernoulli else x), self.y[idx]
        return (*batch, idx) if self.with_index else batch

    def __getitem__(self, i):
        return self.__getitems__([i])


def as_batch(batch):
    """The DataLoader's collate_fn: __getitems__ already made the batch."""
    return batch


class Shard(Sampler):
    """Rank `rank` of `world`'s part of an evaluation split, in order: contiguous, unpadded, so that every image is
    evaluated exactly once over the ranks (Lightning's DistributedSampler would repeat some to even them out)."""

    def __init__(self, n, rank, world):
        self.indices = range(rank * n // world, (rank + 1) * n // world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class IdxDataModule(L.LightningDataModule):
    """MNIST-like data in torchvision's raw layout under `root`. Batches: x float (B,1,28,28), y long (B,);
    x (B,C,28,28) with quantize=C.

    classes:    labels to keep (MNIST-5 = [5]); None = all.
    val_size:   validation images carved out of the filtered train set: an int count or a float fraction.
                0 = no carve-out, validate on the test split (the reference protocol). Default 0.1.
    split_seed: seeds the carve-out, so every run and process gets the same split.
    binarize:   none = grey levels uint8/255; static = threshold at 0.5 once, every split;
                dynamic = a fresh Bernoulli(x) sample for every training batch (so every epoch), while val/test
                are sampled once with `sarnet.data.binarized.fixed_bernoulli` (the same bits on every machine:
                the whole test split with seed TEST_SEED = 0, then the class filter; val images seed VAL_SEED = 1).
    quantize:   None = grey levels; 2 or 4 = every split as one-hot classes (B, C, 28, 28), C = quantize, for the
                classification SarNET (`quantize`). Needs binarize=none. FID still compares with the grey images.
    static_dir: a folder with Larochelle's binarized_mnist_{train,valid,test}.amat (MNIST only, needs
                binarize=static and classes=null: the files carry no labels). Train on train (50k), validate on
                valid (10k; or on test if val_size=0), test on test (10k). null = not used.
    download:   if the raw files are missing, fetch them with sarnet.data.sources, as `make data` does.
    """

    dataset = None  # a key of FOLDERS, set by subclasses

    def __init__(self, root="data", classes=None, val_size=0.1, split_seed=0, batch_size=64, num_workers=0,
                 pin_memory=False, binarize="none", download=False, static_dir=None, quantize=None):
        super().__init__()
        if binarize not in BINARIZE:
            raise DataError(f"binarize={binarize!r}: expected one of {BINARIZE}")
        if isinstance(quantize, bool) or quantize not in QUANTIZE:
            raise DataError(f"data.quantize={quantize!r}: expected null (grey levels), 2 or 4 (classes per pixel)")
        if quantize is not None and (binarize != "none" or static_dir is not None):
            raise DataError(f"data.quantize={quantize} quantises grey levels itself: use data.binarize=none and "
                            f"data.static_dir=null")
        self.quantize = quantize
        if static_dir is not None:
            if self.dataset != "mnist" or binarize != "static" or classes is not None:
                raise DataError(f"data.static_dir={static_dir!r} is Larochelle's binarized MNIST (all digits, no "
                                f"labels): use data=mnist with data.binarize=static and data.classes=null")
            if not Path(static_dir).is_dir():
                raise DataError(f"data.static_dir={static_dir!r} does not exist: give the folder holding "
                                f"binarized_mnist_{{train,valid,test}}.amat, or data.static_dir=null")
        self.static_dir = static_dir
        count_ok = isinstance(val_size, int) and not isinstance(val_size, bool) and val_size >= 0
        if not (count_ok or isinstance(val_size, float) and 0 <= val_size < 1):
            raise DataError(f"val_size={val_size!r}: expected an int count >= 0 or a float in [0, 1)")
        self.root, self.classes = str(root), None if classes is None else sorted({int(c) for c in classes})
        self.image_shape = (quantize or 1, 28, 28)  # what a batch's images are: the net must read the same
        self.val_size, self.split_seed, self.binarize = val_size, split_seed, binarize
        self.download = download
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.train_x = None
        # The training order's own generator, saved in checkpoints (state_dict): a resumed run draws the same
        # batches as an uninterrupted one, whatever else consumed the global RNG. Seeded in setup(), from the
        # global RNG that seed_everything set.
        self.order = torch.Generator()
        self._order_seeded = False

    def prepare_data(self):
        raw = Path(self.root) / FOLDERS[self.dataset] / "raw"
        if self.download and not all((raw / name).is_file() for name in sources.RAW_FILES):
            getattr(sources, f"prepare_{self.dataset}")(self.root)

    def state_dict(self):
        return {"order": self.order.get_state()}

    def load_state_dict(self, state_dict):
        if "order" in state_dict:  # checkpoints from before the order was stored: keep the seeded one
            self.order.set_state(state_dict["order"])
            self._order_seeded = True

    def setup(self, stage=None):
        if not self._order_seeded:
            self.order.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
            self._order_seeded = True
        if self.train_x is not None:  # Lightning calls setup for fit, validate and test: load once
            return
        if self.static_dir is not None:
            self._setup_static()
            return
        x, y = load_split(self.root, self.dataset, "train", self.classes)
        self.test_x, self.test_y = load_split(self.root, self.dataset, "test", self.classes)
        n_val = self.val_size
        if isinstance(n_val, float):  # a fraction; any positive fraction carves out at least one image
            n_val = max(round(n_val * len(x)), 1) if n_val > 0 else 0
        if n_val >= len(x):
            raise DataError(f"val_size={self.val_size} leaves no training images out of {len(x)}")
        if n_val == 0:
            self.train_x, self.train_y, self.val_x, self.val_y = x, y, self.test_x, self.test_y
        else:
            perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
            val, train = perm[:n_val].sort().values, perm[n_val:].sort().values  # sorted: keep file order
            self.train_x, self.train_y, self.val_x, self.val_y = x[train], y[train], x[val], y[val]
        if self.binarize == "static":
            xs = (self.train_x, self.val_x, self.test_x)
            self.train_x, self.val_x, self.test_x = (t.ge(0.5).float() for t in xs)
        elif self.binarize == "dynamic":
            x_all, y_all = load_split(self.root, self.dataset, "test")
            keep = None if self.classes is None else torch.isin(y_all, torch.tensor(self.classes))
            self.test_x = binarized_test_split(x_all, keep)
            self.val_x = self.test_x if n_val == 0 else fixed_bernoulli(self.val_x, VAL_SEED)
        if self.quantize:
            same = self.val_x is self.test_x  # val_size=0: one tensor, converted once
            self.train_x, self.test_x = quantize(self.train_x, self.quantize), quantize(self.test_x, self.quantize)
            self.val_x = self.test_x if same else quantize(self.val_x, self.quantize)

    def _setup_static(self):
        splits = read_static(self.static_dir)
        unlabelled = {k: torch.full((len(v),), -1, dtype=torch.long) for k, v in splits.items()}
        self.train_x, self.train_y = splits["train"], unlabelled["train"]
        self.test_x, self.test_y = splits["test"], unlabelled["test"]
        val = "test" if self.val_size == 0 else "valid"
        self.val_x, self.val_y = splits[val], unlabelled[val]

    def _loader(self, x, y, shuffle):
        ds = BatchTensors(x, y, bernoulli=shuffle and self.binarize == "dynamic", with_index=not shuffle)
        trainer = getattr(self, "trainer", None)
        world = trainer.world_size if trainer is not None else 1
        if trainer is not None and trainer.overfit_batches:  # debug=overfit: the same first batches every epoch
            shuffle = False
        order = RandomSampler(ds, generator=self.order) if shuffle else SequentialSampler(ds)
        if world > 1:  # DDP: each rank its share (the trainer's use_distributed_sampler is off, conf/trainer/)
            rank = trainer.global_rank
            # training: DistributedSampler's equal, padded shares (ranks must take as many steps), shuffled per
            # epoch from the order generator's seed (the same on every rank, and after a resume); evaluation:
            # every image exactly once
            order = DistributedSampler(ds, world, rank, shuffle=True, seed=self.order.initial_seed() % 2**63) \
                if shuffle else Shard(len(ds), rank, world)
        # A DataLoader without a generator draws its workers' base seed from the global RNG at every iter(): the
        # training loader draws from the saved order generator instead, the others from a fixed one.
        generator = self.order if shuffle else torch.Generator().manual_seed(self.split_seed)
        return DataLoader(ds, batch_size=self.batch_size, sampler=order, collate_fn=as_batch,
                          num_workers=self.num_workers, pin_memory=self.pin_memory, generator=generator,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        return self._loader(self.train_x, self.train_y, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_x, self.val_y, shuffle=False)

    def test_dataloader(self):
        return self._loader(self.test_x, self.test_y, shuffle=False)


class MNISTDataModule(IdxDataModule):
    dataset = "mnist"


class FashionMNISTDataModule(IdxDataModule):
    dataset = "fashion_mnist"
