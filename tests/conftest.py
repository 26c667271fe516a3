"""What the tests share: the repo root, the environment of a subprocess run, train.py as a subprocess, the real
Hydra composition, and tiny fake datasets in torchvision's raw layout."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
# offline W&B, never a prompt; one thread each, so that tests running side by side do not oversubscribe the CPU
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
needs_data = pytest.mark.skipif(not (ROOT / "data" / "MNIST" / "raw" / ".sarnet-ok.json").exists(),
                                reason="run `make data` first")


def run_train(*overrides, check=True, timeout=600) -> subprocess.CompletedProcess:
    """The real `python train.py ...` in the repo root. check: fail the test, showing the output, unless rc 0.
    The timeout only guards against a hang; no test depends on how long a run takes."""
    proc = subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(overrides)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def compose_config(*overrides):
    """conf/config.yaml composed in-process with these overrides, as train.py would see it."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def fake_idx(root, folder="MNIST", n_train=200, n_test=50, seed=0):
    """A tiny dataset in torchvision's raw layout under root/folder/raw: random pixels, labels cycling 0..9."""
    from sarnet.data.sources import write_idx

    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(Path(root) / folder / "raw" / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(Path(root) / folder / "raw" / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return Path(root)
