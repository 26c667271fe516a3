"""Binarized MNIST as likelihood papers use it: one fixed binarization for evaluation, and Larochelle's static file.

Evaluation images must be the same bits on every machine and with every torch version, or NLLs are not
comparable. So `fixed_bernoulli` does not use torch's Bernoulli sampler (its stream is an implementation detail):
it draws 53-bit integers from numpy's PCG64 bit generator (`random_raw`, a fixed, documented algorithm) and
compares them with the pixel's exact probability v/255 in integer arithmetic:

    pixel = 1  iff  r * 255 < v * 2^53,   r uniform in [0, 2^53),  v = the uint8 grey level

so P(pixel = 1) = v / 255 to within 2^-53. `tests/test_data.py` pins the sha256 of the binarized MNIST test
split (seed TEST_SEED): any change of algorithm shows up there.

Larochelle & Murray's static binarized MNIST (binarized_mnist_{train,valid,test}.amat, 50k/10k/10k images, one
image a line, 784 space-separated 0/1) cannot be fetched offline; `read_static` reads it from a local folder.
"""

from pathlib import Path

import numpy as np
import torch

from sarnet.data.sources import DataError

TEST_SEED = 0  # the evaluation binarization of a test split: fixed, so every run scores the same bits
VAL_SEED = 1  # validation images carved out of the training split (data.val_size > 0)
STATIC_FILES = {"train": "binarized_mnist_train.amat", "valid": "binarized_mnist_valid.amat",
                "test": "binarized_mnist_test.amat"}
PIXELS = 784
_CHUNK = 1 << 22  # draws per PCG64 call: bounds memory for the 47M pixels of the MNIST training split


def fixed_bernoulli(x: torch.Tensor, seed: int) -> torch.Tensor:
    """One Bernoulli(x) draw of every pixel, identical on every machine. x: float in [0, 1] holding uint8/255 grey
    levels (as `load_split` gives them), any shape; pixels are drawn in x's flattened (row-major) order."""
    v = torch.round(x.detach().cpu().double() * 255).to(torch.int64).flatten().numpy()
    if v.size and (v.min() < 0 or v.max() > 255):
        raise DataError("fixed_bernoulli needs grey levels in [0, 1] (uint8 / 255)")
    bits = np.empty(v.size, dtype=np.uint8)
    gen = np.random.PCG64(seed)
    for i in range(0, v.size, _CHUNK):
        r = (gen.random_raw(min(_CHUNK, v.size - i)) >> np.uint64(11)).astype(np.int64)  # 53 bits
        bits[i:i + len(r)] = r * 255 < v[i:i + len(r)] << 53
    return torch.from_numpy(bits).view(x.shape).to(x.dtype)


def binarized_test_split(x_all: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The evaluation binarization of a whole test split (TEST_SEED), then the rows in `keep`. Binarizing before
    the class filter makes the binary test fives of MNIST-5 exactly the fives of the all-digit binary test set."""
    keep = None if keep is None else torch.as_tensor(keep)  # a list, range or numpy mask too
    if keep is not None and keep.dtype == torch.bool and keep.shape != x_all.shape[:1]:
        raise ValueError(f"keep: a bool mask needs one entry per image, shape ({len(x_all)},), got {tuple(keep.shape)}")
    binary = fixed_bernoulli(x_all, TEST_SEED)
    return binary if keep is None else binary[keep]


def split_sha256(binary: torch.Tensor) -> str:
    """sha256 of a binary image tensor's bits (np.packbits of the row-major uint8 0/1 array)."""
    import hashlib
    return hashlib.sha256(np.packbits(binary.to(torch.uint8).flatten().numpy()).tobytes()).hexdigest()


def read_amat(path) -> torch.Tensor:
    """One .amat file -> float (N, 1, 28, 28) of 0/1. Every line must hold exactly 784 values, each 0 or 1."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; data.static_dir must hold {', '.join(STATIC_FILES.values())}")
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    allowed = np.isin(raw, np.frombuffer(b"01 \t\r\n", dtype=np.uint8))
    if not allowed.all():
        at = int(np.argmin(allowed))
        raise DataError(f"{path}: byte {at} is {bytes(raw[at:at + 1])!r}, expected only 0/1 values separated by "
                        f"spaces (Larochelle's binarized_mnist .amat format)")
    digits = (raw == ord("0")) | (raw == ord("1"))
    newlines = np.flatnonzero(raw == ord("\n"))
    per_line = np.diff(np.concatenate([[0], np.cumsum(digits)[newlines]]))
    tail = int(digits[newlines[-1] + 1:].sum()) if len(newlines) else int(digits.sum())
    counts = np.concatenate([per_line, [tail] if tail else []]).astype(np.int64)
    counts = counts[counts > 0]  # blank lines are harmless
    bad = np.flatnonzero(counts != PIXELS)
    if len(counts) == 0 or len(bad):
        first = f"line {int(bad[0]) + 1} has {int(counts[bad[0]])} values" if len(bad) else "no images"
        raise DataError(f"{path}: {first}; every line must hold {PIXELS} values (a 28x28 image)")
    return torch.from_numpy((raw[digits] - ord("0")).astype(np.float32)).view(-1, 1, 28, 28)


def read_static(folder) -> dict:
    """{"train", "valid", "test"} -> float (N, 1, 28, 28) binary images from Larochelle's .amat files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data.static_dir={str(folder)!r} is not a folder: give the folder holding "
                        f"{', '.join(STATIC_FILES.values())} (or data.static_dir=null)")
    return {split: read_amat(folder / name) for split, name in STATIC_FILES.items()}
